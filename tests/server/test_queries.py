"""Queries: spectrum (JSON, CSV, since_step), metrics, their alignment, and the analyses."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servertest import new_run, post, post_json, random_walk

from sedmon_core.spectrum import spectrum_series
from sedmon_server.series import align_metric

pytestmark = pytest.mark.postgres

N = 60


@pytest.fixture(scope="module")
def analysed_run(pg_app: Any) -> tuple[int, list[dict[str, list[float]]], np.ndarray]:
    """A run of N checkpoints (steps 10 * i) with val_loss logged between checkpoints."""
    from servertest import AUTH

    client = TestClient(pg_app, headers=AUTH)
    rid = new_run(client, windows=[5, 8, 12], sketch={"method": "countsketch", "dim": 24})
    cps = random_walk(N, 24, seed=31)
    loss = 3.0 * np.exp(-np.arange(N) / 25) + 0.05 * np.sin(np.arange(N))
    for i, cp in enumerate(cps):
        assert post(client, rid, 10 * i, cp).status_code == 201
        r = client.post(
            f"/api/v1/runs/{rid}/metrics",
            json={"step": 10 * i - 3 if i else 0, "values": {"val_loss": loss[i]}},
        )
        assert r.status_code == 201
    return rid, cps, loss


def batch(cps: list[dict[str, list[float]]], window: int) -> list[Any]:
    pos = np.array([cp["all"] for cp in cps])
    d = np.diff(pos, axis=0)
    return spectrum_series(d @ d.T, window, "half", 24)


def test_spectrum_since_step_returns_only_later_points(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, _, _ = analysed_run
    pts = client.get(
        f"/api/v1/runs/{rid}/spectrum", params={"window": 5, "since_step": 500}
    ).json()["points"]
    assert [p["step"] for p in pts] == [10 * i for i in range(51, N)]


def test_spectrum_defaults_to_the_smallest_window_and_group_all(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, _, _ = analysed_run
    body = client.get(f"/api/v1/runs/{rid}/spectrum").json()
    assert (body["window"], body["group"], body["rank_rule"]) == (5, "all", "half")
    assert len(body["points"]) == N - 5


def test_spectrum_csv_has_a_row_per_point_with_sigma_and_ratios(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, cps, _ = analysed_run
    r = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 8, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    expected = batch(cps, 8)
    assert len(rows) == len(expected)
    assert float(rows[-1]["sigma_8"]) == pytest.approx(expected[-1].sigma[7], rel=1e-12)
    assert float(rows[0]["ratio_7"]) == pytest.approx(expected[0].ratios[6], rel=1e-12)
    assert int(rows[0]["step"]) == 80 and int(rows[0]["signal_rank"]) == expected[0].signal_rank


@pytest.mark.parametrize("params", [{"window": 7}, {"group": "attn"}, {"format": "xml"}], ids=str)
def test_spectrum_refuses_unknown_window_group_or_format(
    client: TestClient, analysed_run: tuple[int, Any, Any], params: dict[str, Any]
) -> None:
    rid, _, _ = analysed_run
    assert client.get(f"/api/v1/runs/{rid}/spectrum", params=params).status_code == 422


def test_metrics_at_any_step_read_back_by_name_and_as_csv(client: TestClient) -> None:
    rid = new_run(client)
    for step, v in ((5, 1.5), (7, 1.25), (12, 1.0)):
        r = client.post(
            f"/api/v1/runs/{rid}/metrics", json={"step": step, "values": {"loss": v, "lr": 0.1}}
        )
        assert r.json() == {"run_id": rid, "step": step, "stored": 2}
    body = client.get(f"/api/v1/runs/{rid}/metrics", params={"name": "loss"}).json()
    assert body["series"] == [{"name": "loss", "steps": [5, 7, 12], "values": [1.5, 1.25, 1.0]}]
    text = client.get(f"/api/v1/runs/{rid}/metrics", params={"format": "csv"}).text
    assert text.splitlines() == [
        "name,step,value",
        "loss,5,1.5",
        "loss,7,1.25",
        "loss,12,1.0",
        "lr,5,0.1",
        "lr,7,0.1",
        "lr,12,0.1",
    ]


def test_a_resent_metric_value_replaces_the_stored_one(client: TestClient) -> None:
    rid = new_run(client)
    client.post(f"/api/v1/runs/{rid}/metrics", json={"step": 3, "values": {"loss": 2.0}})
    client.post(f"/api/v1/runs/{rid}/metrics", json={"step": 3, "values": {"loss": 1.0}})
    body = client.get(f"/api/v1/runs/{rid}/metrics").json()
    assert body["series"] == [{"name": "loss", "steps": [3], "values": [1.0]}]


def test_non_finite_or_empty_metrics_are_422_and_store_nothing(client: TestClient) -> None:
    rid = new_run(client)
    url = f"/api/v1/runs/{rid}/metrics"
    assert post_json(client, url, {"step": 1, "values": {"loss": float("inf")}}).status_code == 422
    assert post_json(client, url, {"step": 1, "values": {}}).status_code == 422
    assert client.get(url).json()["series"] == []
    assert (
        client.post(
            "/api/v1/runs/99999999/metrics", json={"step": 1, "values": {"a": 1.0}}
        ).status_code
        == 404
    )


def test_alignment_takes_the_latest_value_after_the_previous_checkpoint() -> None:
    metric_steps = np.array([0, 3, 8, 9, 25])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    checkpoints = np.array([0, 10, 20, 30])
    out = align_metric(metric_steps, values, checkpoints)
    assert out[:2].tolist() == [1.0, 4.0]
    assert np.isnan(out[2]) and out[3] == 5.0


def test_coupling_equals_sedmon_core_on_the_same_series(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    from sedmon_core.coupling import lagged_correlation

    rid, cps, loss = analysed_run
    r = client.get(
        f"/api/v1/runs/{rid}/analysis/coupling", params={"window": 8, "metric": "val_loss"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    gap = np.array([s.gap_ratio for s in batch(cps, 8)])
    expected = lagged_correlation(gap, loss[8:])
    assert body["n"] == N - 8 and body["result"]["correlation"]["peak_lag"] == expected.peak_lag
    np.testing.assert_allclose(body["result"]["correlation"]["r"], expected.r, rtol=1e-9)
    granger = body["result"]["granger"]
    assert granger["x_to_y"]["direction"] == "x->y" and granger["y_to_x"]["direction"] == "y->x"
    assert 0.0 <= granger["x_to_y"]["p"] <= 1.0
    assert body["result"]["key_edge"]["plateau_signal_rank"] == 1  # every window's k* is 1


def test_the_key_edge_plateau_rank_counts_plateau_points_only() -> None:
    """A long rise at k* = 2 then a plateau at k* = 1: the run's established edge is 1,
    though 2 is the more frequent rank over all points."""
    from sedmon_core.phases import segment_phases
    from sedmon_server.analyses import run_key_edge
    from sedmon_server.series import SCALAR_FIELDS, SpectrumSeries

    n, w = 60, 6
    gap = np.concatenate([np.linspace(1.0, 3.0, 40), np.full(20, 3.0)])
    ranks = np.where(np.arange(n) < 40, 2, 1)
    labels = segment_phases(gap).labels
    assert "plateau" in labels and labels.count("plateau") < n / 2
    rng = np.random.default_rng(0)
    scalars = {f: rng.normal(size=n) for f in SCALAR_FIELDS}
    scalars.update(gap_ratio=gap, signal_rank=ranks)
    spec = SpectrumSeries(
        w, np.arange(n) * 10, rng.random((n, w)), 1 + rng.random((n, w - 1)), scalars, [None] * n
    )
    metric = rng.normal(size=n)
    edge = run_key_edge(spec, metric, np.ones(n, dtype=bool), list(range(-3, 4)))
    assert edge.plateau_signal_rank == int(
        np.bincount(ranks[np.array(labels) == "plateau"]).argmax()
    )
    assert edge.plateau_signal_rank == 1
    assert int(np.bincount(ranks).argmax()) == 2  # what counting every point would say


def test_lag_sweep_reports_a_peak_lag_per_window(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, _, _ = analysed_run
    body = client.get(
        f"/api/v1/runs/{rid}/analysis/lag-sweep", params={"metric": "val_loss"}
    ).json()
    assert body["result"]["windows"] == [5, 8, 12] and len(body["result"]["peak_lags"]) == 3
    assert isinstance(body["result"]["lag_flip"], bool)


@pytest.mark.parametrize("method", ["peak", "derivative", "threshold"])
def test_phases_label_every_point_by_method(
    client: TestClient, analysed_run: tuple[int, Any, Any], method: str
) -> None:
    from sedmon_core.phases import segment_phases

    rid, cps, _ = analysed_run
    body = client.get(
        f"/api/v1/runs/{rid}/analysis/phases",
        params={"window": 5, "method": method, "metric": "val_loss"},
    ).json()
    gap = np.array([s.gap_ratio for s in batch(cps, 5)])
    assert body["result"]["labels"] == list(segment_phases(gap, method).labels)
    assert body["method"] == method and "phase_correlation" in body["result"]


def test_shifts_report_change_points_with_steps(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    from sedmon_core.changepoints import ttest_change

    rid, cps, _ = analysed_run
    body = client.get(
        f"/api/v1/runs/{rid}/analysis/shifts", params={"window": 5, "series": "total_variance"}
    ).json()
    methods = [c["method"] for c in body["result"]["change_points"]]
    assert len(methods) == 3
    tv = np.array([s.total_variance for s in batch(cps, 5)])
    expected = ttest_change(tv)
    got = body["result"]["change_points"][2]
    steps = body["result"]["steps"]
    assert got["change_step"] == (None if expected.index is None else steps[expected.index])


def test_reliability_equals_split_half_on_the_full_dot_matrix(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    from sedmon_core.reliability import split_half_reliability

    rid, cps, _ = analysed_run
    body = client.get(f"/api/v1/runs/{rid}/analysis/reliability", params={"window": 5}).json()
    pos = np.array([cp["all"] for cp in cps])
    d = np.diff(pos, axis=0)
    expected = split_half_reliability(d @ d.T, 5, "half", 24)
    assert body["result"]["even_ranks"] == expected.even_ranks.tolist()
    assert body["result"]["agreement"] == pytest.approx(expected.agreement)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("granger", {}),
        ("coupling", {}),
        ("coupling", {"metric": "nope"}),
        ("coupling", {"metric": "val_loss", "series": "ratio_99"}),
        ("phases", {"method": "vibes"}),
        ("shifts", {"method": "vibes"}),
        ("shifts", {"window": 6}),
        ("reliability", {"window": 12}),
    ],
    ids=str,
)
def test_analysis_refuses_bad_parameters_with_422(
    client: TestClient, analysed_run: tuple[int, Any, Any], name: str, params: dict[str, Any]
) -> None:
    rid, _, _ = analysed_run
    r = client.get(f"/api/v1/runs/{rid}/analysis/{name}", params=params)
    assert r.status_code == 422 and isinstance(r.json()["detail"], str | list)


def test_analysis_of_a_run_without_spectra_is_422(client: TestClient) -> None:
    rid = new_run(client)
    r = client.get(f"/api/v1/runs/{rid}/analysis/phases")
    assert r.status_code == 422 and "no spectra" in r.json()["detail"]


ANALYSIS_CASES = [
    ("coupling", {"window": 8, "metric": "val_loss"}),
    ("lag-sweep", {"metric": "val_loss"}),
    ("phases", {"window": 5, "metric": "val_loss"}),
    ("shifts", {"window": 5, "series": "total_variance"}),
    ("reliability", {"window": 5}),
]


def _undocumented(value: Any, where: str = "result") -> list[str]:
    """Keys of a validated result model (nested too) that its model does not name."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        out = [f"{where}.{k}" for k in value.model_extra or {}]
        for k in type(value).model_fields:
            out += _undocumented(getattr(value, k), f"{where}.{k}")
        return out
    if isinstance(value, list):
        return [e for v in value for e in _undocumented(v, f"{where}[]")]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _undocumented(v, f"{where}.{k}")]
    return []


@pytest.mark.parametrize(("name", "params"), ANALYSIS_CASES, ids=[c[0] for c in ANALYSIS_CASES])
def test_analysis_results_have_the_documented_shape(
    client: TestClient, analysed_run: tuple[int, Any, Any], name: str, params: dict[str, Any]
) -> None:
    from sedmon_server.api.schemas import ANALYSIS_RESULTS, AnalysisOut

    rid, _, _ = analysed_run
    r = client.get(f"/api/v1/runs/{rid}/analysis/{name}", params=params)
    assert r.status_code == 200, r.text
    AnalysisOut.model_validate(r.json())
    result = ANALYSIS_RESULTS[name].model_validate(r.json()["result"])
    assert _undocumented(result) == []


def _csv_rows(client: TestClient, url: str, params: dict[str, Any]) -> list[dict[str, str]]:
    r = client.get(url, params={**params, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize(
    ("name", "params", "key", "columns"),
    [
        ("phases", {"window": 5}, "steps", ["step", "value", "phase"]),
        ("shifts", {"window": 5}, "steps", ["step", "value", "max_derivative", "cusum", "ttest"]),
        ("coupling", {"window": 8, "metric": "val_loss"}, "lags", ["lag", "r", "n"]),
        ("lag-sweep", {"metric": "val_loss"}, "windows", ["window", "peak_lag", "peak_r"]),
        (
            "reliability",
            {"window": 5},
            "last_step",
            ["last_step", "even_rank", "odd_rank", "agree"],
        ),
    ],
    ids=str,
)
def test_analysis_csv_has_a_row_per_point_of_the_json_series(
    client: TestClient,
    analysed_run: tuple[int, Any, Any],
    name: str,
    params: dict[str, Any],
    key: str,
    columns: list[str],
) -> None:
    rid, _, _ = analysed_run
    url = f"/api/v1/runs/{rid}/analysis/{name}"
    result = client.get(url, params=params).json()["result"]
    rows = _csv_rows(client, url, params)
    assert list(rows[0]) == columns
    index = result["correlation"][key] if name == "coupling" else result[key]
    assert [row[columns[0]] for row in rows] == [str(v) for v in index]


def test_phases_and_shifts_csv_carry_the_labels_and_the_change_steps(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, _, _ = analysed_run
    url = f"/api/v1/runs/{rid}/analysis/"
    params = {"window": 5, "series": "total_variance"}
    phases = client.get(url + "phases", params=params).json()["result"]
    rows = _csv_rows(client, url + "phases", params)
    assert [r["phase"] for r in rows] == phases["labels"]
    assert [r["value"] for r in rows] == [_cell(v) for v in phases["values"]]

    shifts = client.get(url + "shifts", params=params).json()["result"]
    rows = _csv_rows(client, url + "shifts", params)
    for cp in shifts["change_points"]:
        changed = [int(r["step"]) for r in rows if r[cp["method"]] == "change"]
        assert changed == ([] if cp["change_step"] is None else [cp["change_step"]])


def test_lag_sweep_and_coupling_csv_carry_the_peaks_and_correlations(
    client: TestClient, analysed_run: tuple[int, Any, Any]
) -> None:
    rid, _, _ = analysed_run
    url = f"/api/v1/runs/{rid}/analysis/"
    sweep = client.get(url + "lag-sweep", params={"metric": "val_loss"}).json()["result"]
    rows = _csv_rows(client, url + "lag-sweep", {"metric": "val_loss"})
    assert [r["peak_lag"] for r in rows] == [_cell(v) for v in sweep["peak_lags"]]
    params = {"window": 8, "metric": "val_loss"}
    xc = client.get(url + "coupling", params=params).json()["result"]["correlation"]
    rows = _csv_rows(client, url + "coupling", params)
    np.testing.assert_allclose(
        [float(r["r"]) if r["r"] else np.nan for r in rows],
        [np.nan if v is None else v for v in xc["r"]],
    )
    assert [int(r["n"]) for r in rows] == xc["n"]


def test_a_refused_analysis_is_422_json_in_csv_too(client: TestClient) -> None:
    rid = new_run(client)
    r = client.get(f"/api/v1/runs/{rid}/analysis/shifts", params={"format": "csv"})
    assert r.status_code == 422 and "no spectra" in r.json()["detail"]
