"""The dashboard in headless Chromium against a real server: pages, charts, login, isolation."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from browsertest import ADMIN, LiveServer, Tab, Trajectory, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

N = 30  # checkpoints, so N - 1 deltas: W=5 gives 25 windows, W=10 gives 20


@pytest.fixture()
def tab(browser: Any, live_server: LiveServer) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Tab(context.new_page(), live_server.base_url)
    context.close()


@pytest.fixture(scope="module")
def project(live_server: LiveServer) -> dict[str, Any]:
    """One project with two seeds of a recipe, fully posted, and a read token for it."""
    name = f"lab-{secrets.token_hex(3)}"
    runs = {}
    for seed in (1, 2):
        run_id = live_server.create_run(name, f"recipe-seed{seed}")
        live_server.post_checkpoints(run_id, Trajectory(N, seed=seed), range(N))
        runs[seed] = run_id
    return {"name": name, "runs": runs, "token": live_server.token(name)}


def test_runs_page_lists_each_run_with_its_latest_edge_and_sparkline(
    tab: Tab, project: dict[str, Any], artifacts: Path
) -> None:
    tab.login(project["token"])
    names = tab.page.locator("#runs-body th a").all_inner_texts()
    assert {"recipe-seed1", "recipe-seed2"} <= set(names)
    assert set(tab.page.locator("#runs-body td:nth-child(3)").all_inner_texts()) == {
        project["name"]
    }
    row = tab.page.locator(f"tr[data-run-id='{project['runs'][1]}']")
    cells = row.locator("td")
    assert row.locator("th a").inner_text() == "recipe-seed1"
    assert cells.nth(3).inner_text() == f"{N * 100:,}"  # last step
    assert cells.nth(4).inner_text() in ("rise", "plateau", "collapse", "warmup")
    assert float(cells.nth(5).inner_text()) > 1.0  # gap ratio
    assert row.locator("svg.sparkline polyline").count() == 1
    tab.shoot(artifacts, "runs")
    assert tab.problems == []


def test_run_page_charts_every_window_of_the_run(
    tab: Tab, project: dict[str, Any], artifacts: Path
) -> None:
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{project['runs'][1]}?window=5")
    tab.page.wait_for_selector("#lag-sweep table")
    # x, R*, R1..R4, val_loss: every window of W=5 and every logged loss
    assert tab.series_lengths("ratios-chart") == [N] + [N - 5] * 5 + [N]
    assert tab.series_lengths("sigma-chart") == [N] + [N - 5] * 5
    tab.shoot(artifacts, "run")
    tab.page.emulate_media(color_scheme="dark")
    tab.open(f"/dashboard/runs/{project['runs'][1]}?window=5")
    tab.shoot(artifacts, "run-dark")
    tab.page.select_option("#window", "10")
    tab.wait_for_lengths("sigma-chart", 10, N - 10, timeout_s=10)
    assert "window=10" in tab.page.url
    assert tab.problems == []
    # No outside network: the chart library and everything else come from this server.
    assert tab.urls and all(u.startswith((tab.base_url + "/", "data:")) for u in tab.urls)


def test_run_page_shows_new_checkpoints_while_the_run_trains(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    run_id = live_server.create_run(project["name"], "live")
    trajectory = Trajectory(20, seed=3)
    live_server.post_checkpoints(run_id, trajectory, range(12))
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{run_id}?window=5")
    assert tab.series_lengths("ratios-chart")[1] == 12 - 5
    live_server.post_checkpoints(run_id, trajectory, range(12, 20))
    tab.wait_for_lengths("ratios-chart", 1, 20 - 5, timeout_s=15)
    assert tab.problems == []


def test_compare_page_overlays_runs_aligned_by_step(
    tab: Tab, project: dict[str, Any], artifacts: Path
) -> None:
    ids = project["runs"]
    tab.login(project["token"])
    tab.open(f"/dashboard/compare?runs={ids[1]},{ids[2]}")
    assert tab.series_lengths("compare-chart") == [N - 5] * 3
    assert tab.page.locator("#compare-body tr").count() == 2
    tab.shoot(artifacts, "compare")
    assert tab.problems == []


def test_read_token_of_one_project_never_shows_another_projects_runs(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    other = f"other-{secrets.token_hex(3)}"
    other_run = live_server.create_run(other, "theirs")
    live_server.post_checkpoints(other_run, Trajectory(8, seed=9), range(8))
    tab.login(project["token"])
    tab.open("/dashboard")
    page_text = tab.page.inner_text("main")
    assert "theirs" not in page_text
    assert other not in page_text
    tab.open(f"/dashboard/compare?runs={other_run}")
    assert "theirs" not in tab.page.inner_text("main")
    tab.page.goto(f"{live_server.base_url}/dashboard/runs/{other_run}")
    tab.page.wait_for_selector("#run-name:text('Run not found')")
    assert tab.page.inner_text("#run-name") == "Run not found"
    assert "theirs" not in tab.page.inner_text("main")


def test_pages_without_a_session_lead_to_login_and_the_cookie_is_http_only(
    tab: Tab, project: dict[str, Any]
) -> None:
    tab.page.goto(f"{tab.base_url}/dashboard/runs/{project['runs'][1]}")
    assert tab.page.url.startswith(f"{tab.base_url}/dashboard/login?next=")
    tab.page.fill("#token", project["token"])
    with tab.page.expect_navigation():
        tab.page.click("button[type=submit]")
    assert urlsplit(tab.page.url).path == f"/dashboard/runs/{project['runs'][1]}"
    (cookie,) = tab.page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "sedmon_token",
        True,
        "Strict",
    )
    assert tab.page.evaluate("document.cookie") == ""
    tab.wait_ready()
    assert not [u for u in tab.urls if project["token"] in u]
    assert tab.problems == []


def test_an_unknown_token_is_refused_and_sets_no_cookie(tab: Tab) -> None:
    tab.login("sedmon_not-a-real-token")
    assert "error=invalid" in tab.page.url
    assert tab.page.locator("#login-error").is_visible()
    assert tab.page.context.cookies() == []
    assert tab.problems == []


def test_run_page_lists_a_firing_alert_and_the_runs_page_counts_it(
    tab: Tab, live_server: LiveServer, project: dict[str, Any], artifacts: Path
) -> None:
    run_id = live_server.create_run(project["name"], "diverged")
    trajectory = Trajectory(13, seed=4)
    live_server.post_checkpoints(run_id, trajectory, range(12))
    assert live_server.post_non_finite(run_id, trajectory, 12) == 422
    tab.login(project["token"])
    cell = tab.page.locator(f"tr[data-run-id='{run_id}'] td.alerts-count")
    assert cell.inner_text() == "1"
    tab.open(f"/dashboard/runs/{run_id}")
    row = tab.page.locator("#alerts tbody tr")
    assert row.count() == 1
    assert row.locator("td").nth(0).inner_text() == "firing"
    assert row.locator("td").nth(1).inner_text() == "non_finite"
    assert row.locator("td").nth(2).inner_text() == "1,300"
    assert tab.series_lengths("ratios-chart")[0] == 13  # steps 100..1,200 and the alert's 1,300
    markers = _overlays(tab, "ratios-chart")["markers"]
    alert_markers = [(m["step"], m["label"]) for m in markers if not m["label"].startswith("shift")]
    assert alert_markers == [(1300, "non_finite")]
    tab.shoot(artifacts, "run-with-alert")
    assert tab.problems == []


def test_without_the_alerts_api_the_run_page_says_so_and_logs_no_error(
    browser: Any, bare_server: LiveServer, project: dict[str, Any]
) -> None:
    context = browser.new_context()
    tab = Tab(context.new_page(), bare_server.base_url)
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{project['runs'][1]}")
    assert "not available" in tab.page.inner_text("#alerts")
    assert not [u for u in tab.urls if u.endswith("/alerts")]
    assert tab.problems == []
    context.close()


def test_empty_project_run_and_comparison_show_empty_states_without_errors(
    tab: Tab, live_server: LiveServer
) -> None:
    empty = f"empty-{secrets.token_hex(3)}"
    tab.login(live_server.token(empty))
    assert "No runs yet" in tab.page.inner_text("#empty")
    run_id = live_server.create_run(empty, "just-started")
    live_server.post_checkpoints(run_id, Trajectory(3, seed=5), range(3))
    tab.open(f"/dashboard/runs/{run_id}")
    assert tab.page.locator("#ratios-empty").is_visible()
    assert "Needs at least" in tab.page.inner_text("#lag-sweep")
    tab.open("/dashboard/compare")
    assert "Pick one or more runs" in tab.page.inner_text("#compare-empty")
    assert tab.problems == []


def _analysis(live: LiveServer, run_id: int, kind: str, **params: Any) -> dict[str, Any]:
    r = live.api.get(f"/api/v1/runs/{run_id}/analysis/{kind}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _spectrum(live: LiveServer, run_id: int, window: int, group: str) -> list[dict[str, Any]]:
    r = live.api.get(f"/api/v1/runs/{run_id}/spectrum", params={"window": window, "group": group})
    assert r.status_code == 200, r.text
    points: list[dict[str, Any]] = r.json()["points"]
    return points


def _overlays(tab: Tab, chart_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = tab.page.evaluate(
        "id => document.getElementById(id).overlays()", chart_id
    )
    return found


def _chart_series(tab: Tab, chart_id: str, index: int) -> list[float]:
    values: list[float] = tab.page.evaluate(
        "([id, i]) => document.getElementById(id).uplot.data[i].filter(v => v !== null)",
        [chart_id, index],
    )
    return values


@pytest.fixture(scope="module")
def shifted(live_server: LiveServer, project: dict[str, Any]) -> int:
    """A run of the project whose deltas drift 5x faster from checkpoint 20 on."""
    run_id = live_server.create_run(project["name"], "shifted")
    live_server.post_checkpoints(run_id, Trajectory(N, seed=6, shift_at=20), range(N))
    return run_id


def _label_runs(labels: list[str]) -> list[str]:
    return [lab for i, lab in enumerate(labels) if i == 0 or labels[i - 1] != lab]


def test_run_page_draws_the_phase_bands_of_the_chosen_method(
    tab: Tab, live_server: LiveServer, project: dict[str, Any], artifacts: Path
) -> None:
    run_id = project["runs"][1]
    peak = _analysis(live_server, run_id, "phases", window=5, method="peak")["result"]
    threshold = _analysis(live_server, run_id, "phases", window=5, method="threshold")["result"]
    assert _label_runs(peak["labels"]) == ["rise", "plateau", "collapse"]
    assert _label_runs(threshold["labels"]) != _label_runs(peak["labels"])
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{run_id}?window=5&phases=peak")
    bands = _overlays(tab, "ratios-chart")["bands"]
    assert [b["phase"] for b in bands] == ["rise", "plateau", "collapse"]
    assert (bands[0]["from"], bands[-1]["to"]) == (peak["steps"][0], peak["steps"][-1])
    collapse_step = peak["collapse_step"]
    previous = peak["steps"][peak["steps"].index(collapse_step) - 1]
    assert bands[-1]["from"] == (previous + collapse_step) / 2
    assert _overlays(tab, "sigma-chart")["bands"] == bands
    tab.shoot(artifacts, "run-phases-peak")
    tab.page.select_option("#phase-method", "threshold")
    wait_until(
        tab,
        lambda: (
            [b["phase"] for b in _overlays(tab, "ratios-chart")["bands"]]
            == _label_runs(threshold["labels"])
        ),
    )
    assert "phases=" not in tab.page.url  # threshold is the default
    assert tab.problems == []


def test_run_page_marks_the_change_points_of_a_planted_shift(
    tab: Tab, live_server: LiveServer, project: dict[str, Any], shifted: int, artifacts: Path
) -> None:
    shifts = _analysis(live_server, shifted, "shifts", window=5, method="all")["result"]
    change_steps = sorted(
        c["change_step"] for c in shifts["change_points"] if c["change_step"] is not None
    )
    assert len(change_steps) == 3  # every detector sees the planted shift ...
    shift = Trajectory(N).step(20)
    assert all(shift <= s <= shift + 2 * 5 * 100 for s in change_steps)  # within 2 W
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{shifted}?window=5")
    tab.page.wait_for_selector("#shifts table")
    markers = _overlays(tab, "ratios-chart")["markers"]
    shown = sorted((m["step"], m["label"]) for m in markers if m["label"].startswith("shift"))
    expected = sorted(
        (c["change_step"], f"shift ({c['method']})")
        for c in shifts["change_points"]
        if c["change_step"] is not None
    )
    assert shown == expected
    assert "3 of 3 detectors see a change" in tab.page.inner_text("#shifts")
    tab.shoot(artifacts, "run-with-shift")
    assert tab.problems == []


def test_run_page_puts_val_loss_on_the_right_axis_with_the_values_logged(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    run_id = project["runs"][1]
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{run_id}?window=5")
    chart = tab.page.evaluate(
        """id => { const u = document.getElementById(id).uplot;
                   return {series: u.series.map(s => [s.label, s.scale]),
                           axes: u.axes.map(a => [a.scale, a.label, a.side])}; }""",
        "ratios-chart",
    )
    assert chart["series"][-1] == ["val_loss", "y2"]
    assert ["y2", "val_loss", 1] in chart["axes"]
    assert all(scale == "y" for _, scale in chart["series"][1:-1])
    trajectory = Trajectory(N, seed=1)
    logged = [trajectory.val_loss(i) for i in range(N)]
    assert _chart_series(tab, "ratios-chart", 6) == pytest.approx(logged, rel=1e-12)
    points = _spectrum(live_server, run_id, 5, "all")
    assert _chart_series(tab, "ratios-chart", 1) == pytest.approx(
        [p["gap_ratio"] for p in points], rel=1e-12
    )
    assert tab.problems == []


def test_run_page_group_selector_shows_that_groups_spectrum(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    run_id = project["runs"][1]
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{run_id}?window=5")
    options = tab.page.locator("#group option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["all", "attn", "mlp"]
    tab.page.select_option("#group", "attn")
    tab.page.wait_for_selector("#ratios-chart[aria-label$='group attn']")
    attn = _spectrum(live_server, run_id, 5, "attn")
    whole = _spectrum(live_server, run_id, 5, "all")
    assert [p["gap_ratio"] for p in attn] != [p["gap_ratio"] for p in whole]
    assert _chart_series(tab, "ratios-chart", 1) == pytest.approx(
        [p["gap_ratio"] for p in attn], rel=1e-12
    )
    sigma = [p["sigma"][0] for p in attn]
    assert _chart_series(tab, "sigma-chart", 1) == pytest.approx(sigma, rel=1e-12)
    assert "group=attn" in tab.page.url
    assert tab.problems == []


def test_run_page_lag_sweep_and_granger_tables_match_the_analyses(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    run_id = project["runs"][2]
    sweep = _analysis(live_server, run_id, "lag-sweep", metric="val_loss")["result"]
    coupling = _analysis(live_server, run_id, "coupling", metric="val_loss", window=5)
    tab.login(project["token"])
    tab.open(f"/dashboard/runs/{run_id}?window=5")
    tab.page.wait_for_selector("#lag-sweep table")
    tab.page.wait_for_selector("#granger table")
    lag_rows = [
        row.locator("td").all_inner_texts() for row in tab.page.locator("#lag-sweep tbody tr").all()
    ]
    expected = [
        [str(w), "–" if lag is None else f"{'+' if lag > 0 else ''}{lag}"]
        for w, lag in zip(sweep["windows"], sweep["peak_lags"], strict=True)
    ]
    assert [cells[:2] for cells in lag_rows] == expected
    granger_rows = [
        row.locator("td").all_inner_texts() for row in tab.page.locator("#granger tbody tr").all()
    ]
    tests = coupling["result"]["granger"]
    assert [cells[0] for cells in granger_rows] == ["gap ratio → val_loss", "val_loss → gap ratio"]
    for cells, test in zip(granger_rows, (tests["x_to_y"], tests["y_to_x"]), strict=True):
        assert cells[1] == str(test["lag"])
        assert cells[5] == f"{test['n']} / {test['df_num']}, {test['df_den']}"
        assert float(cells[2]) == pytest.approx(test["f"], abs=0.005)
    assert tab.problems == []


def test_runs_page_filters_by_project_and_state(
    tab: Tab, live_server: LiveServer, artifacts: Path
) -> None:
    tag = secrets.token_hex(3)
    alpha, beta = f"alpha-{tag}", f"beta-{tag}"
    ids = {}
    for proj, name in ((alpha, "a-running"), (alpha, "a-finished"), (beta, "b-running")):
        ids[name] = live_server.create_run(proj, name)
        live_server.post_checkpoints(ids[name], Trajectory(8, seed=7), range(8))
    r = live_server.api.post(f"/api/v1/runs/{ids['a-finished']}/finish")
    assert r.status_code in (200, 204), r.text
    tab.login(ADMIN)  # sees every project, so the project filter has something to do

    def names() -> set[str]:
        return set(tab.page.locator("#runs-body th a").all_inner_texts())

    assert {"a-running", "a-finished", "b-running"} <= names()
    tab.page.select_option("#project", alpha)
    wait_until(tab, lambda: names() == {"a-running", "a-finished"})
    assert f"project={alpha}" in tab.page.url
    tab.page.select_option("#state", "finished")
    wait_until(tab, lambda: names() == {"a-finished"})
    row = tab.page.locator(f"tr[data-run-id='{ids['a-finished']}']")
    assert row.locator("td").nth(2).inner_text() == "finished"
    tab.shoot(artifacts, "runs-filtered")
    tab.open(f"/dashboard?project={beta}&state=running")
    assert names() == {"b-running"}
    assert tab.page.locator("#project").input_value() == beta
    tab.open(f"/dashboard?project={beta}&state=finished")
    assert names() == set()
    assert "No run matches these filters" in tab.page.inner_text("#empty")
    assert tab.problems == []


def test_compare_page_aligns_runs_of_different_lengths_by_step(
    tab: Tab, live_server: LiveServer, project: dict[str, Any]
) -> None:
    short = live_server.create_run(project["name"], "short")
    live_server.post_checkpoints(short, Trajectory(12, seed=8), range(12))
    long_id = project["runs"][1]
    tab.login(project["token"])
    tab.open(f"/dashboard/compare?runs={long_id},{short}&window=5")
    chart = tab.page.evaluate(
        """() => { const u = document.getElementById('compare-chart').uplot;
                   return {labels: u.series.map(s => s.label), data: u.data}; }"""
    )
    by_label = dict(zip(chart["labels"][1:], chart["data"][1:], strict=True))
    steps = chart["data"][0]
    long_values = by_label[f"recipe-seed1 (#{long_id})"]
    short_values = by_label[f"short (#{short})"]
    assert steps == [p["step"] for p in _spectrum(live_server, long_id, 5, "all")]
    short_points = _spectrum(live_server, short, 5, "all")
    by_step = dict(zip(steps, short_values, strict=True))
    assert [by_step[p["step"]] for p in short_points] == pytest.approx(
        [p["gap_ratio"] for p in short_points], rel=1e-12
    )
    assert all(v is None for s, v in by_step.items() if s > short_points[-1]["step"])
    assert None not in long_values
    assert tab.problems == []
