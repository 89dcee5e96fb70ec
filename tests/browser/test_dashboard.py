"""The dashboard in headless Chromium against a real server: pages, charts, login, isolation."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from browsertest import LiveServer, Trajectory

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

N = 30  # checkpoints, so N - 1 deltas: W=5 gives 25 windows, W=10 gives 20


class Tab:
    """A page that records every console error, uncaught exception and failed request."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.urls: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", self._response)
        page.on("request", lambda r: self.urls.append(r.url))

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning"):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def login(self, token: str) -> None:
        """Signs in on the login page and waits for the runs page it leads to."""
        self.page.goto(f"{self.base_url}/dashboard/login")
        self.page.fill("#token", token)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        if "/dashboard/login" not in self.page.url:
            self.wait_ready()

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base_url}{path}")
        self.wait_ready()

    def wait_ready(self) -> None:
        """Waits for the page's script to finish its first load; its problems if it does not."""
        try:
            self.page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        except Exception as exc:
            status = self.page.locator("#status").all_inner_texts()
            raise AssertionError(f"page never ready: {self.problems} {status}") from exc

    def series_lengths(self, chart_id: str) -> list[int]:
        return list(
            self.page.evaluate(
                """id => document.getElementById(id).uplot.data.map(
                       s => s.filter(v => v !== null && v !== undefined).length)""",
                chart_id,
            )
        )

    def wait_for_lengths(self, chart_id: str, index: int, length: int, timeout_s: float) -> None:
        """Polls from Python: the pages' CSP (rightly) forbids wait_for_function's eval."""
        deadline = time.monotonic() + timeout_s
        while True:
            lengths = self.series_lengths(chart_id)
            if len(lengths) > index and lengths[index] == length:
                return
            assert time.monotonic() < deadline, f"{chart_id} series {index}: {lengths}"
            self.page.wait_for_timeout(200)

    def shoot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


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
