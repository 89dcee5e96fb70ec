"""Ingest: stored spectra equal the batch computation; every bad input is refused unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servertest import new_run, post, post_json, random_walk, snapshot
from sqlalchemy import Engine, select

from sedmon_core.schemas import MAX_IDENTITY_DIM
from sedmon_core.spectrum import spectrum_series
from sedmon_server import tables

pytestmark = pytest.mark.postgres


def batch_spectra(
    checkpoints: list[dict[str, list[float]]],
    window: int,
    rule: str = "half",
    noise_dim: int | None = None,
) -> list[Any]:
    """sedmon_core's batch answer: gram of all deltas (groups summed) -> spectrum_series."""
    groups = list(checkpoints[0])
    pos = np.array([np.concatenate([cp[g] for g in groups]) for cp in checkpoints])
    deltas = np.diff(pos, axis=0)
    return spectrum_series(deltas @ deltas.T, window, rule, noise_dim)


def assert_matches(points: list[dict[str, Any]], expected: list[Any]) -> None:
    assert len(points) == len(expected)
    for p, e in zip(points, expected, strict=True):
        np.testing.assert_allclose(p["sigma"], e.sigma, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p["ratios"], e.ratios, rtol=1e-9, atol=1e-9)
        assert p["signal_rank"] == e.signal_rank
        assert p["k95"] == e.k95
        for f in (
            "gap_ratio",
            "additive_gap",
            "edge_strength",
            "total_variance",
            "effective_rank",
            "pc1_share",
            "drift_speed",
        ):
            assert p[f] == pytest.approx(getattr(e, f), rel=1e-9, abs=1e-9), f


def test_first_checkpoint_is_acknowledged_without_an_edge(client: TestClient) -> None:
    rid = new_run(client)
    r = post(client, rid, 0, random_walk(1, 16)[0])
    assert r.status_code == 201
    assert r.json() == {"run_id": rid, "step": 0, "created": True, "edge": None}


def test_ack_carries_the_edge_of_the_smallest_window_once_it_fills(client: TestClient) -> None:
    rid = new_run(client, windows=[3, 5])
    cps = random_walk(5, 16)
    acks = [post(client, rid, 10 * i, cp).json() for i, cp in enumerate(cps)]
    assert [a["edge"] is None for a in acks] == [True, True, True, False, False]
    edge = acks[3]["edge"]
    assert edge["window"] == 3 and edge["group"] == "all" and edge["step"] == 30
    expected = batch_spectra(cps[:4], 3)[-1]
    assert edge["gap_ratio"] == pytest.approx(expected.gap_ratio, rel=1e-12)
    assert edge["signal_rank"] == expected.signal_rank
    assert edge["phase"] == "warmup"


@pytest.mark.parametrize("rule", ["half", "noise_edge", "weighted", "all"])
def test_stored_spectra_equal_the_batch_computation(client: TestClient, rule: str) -> None:
    windows = [3, 5, 8]
    rid = new_run(client, windows=windows, rank_rule=rule)
    cps = random_walk(30, 16, seed=3)
    for i, cp in enumerate(cps):
        assert post(client, rid, 100 + 7 * i, cp).status_code == 201
    for w in windows:
        body = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": w}).json()
        assert body["rank_rule"] == rule
        assert_matches(body["points"], batch_spectra(cps, w, rule, noise_dim=16))
        assert [p["step"] for p in body["points"]] == [100 + 7 * i for i in range(w, 30)]


def test_group_all_is_the_sum_of_named_groups_and_each_group_has_its_own(
    client: TestClient,
) -> None:
    rid = new_run(client, groups=["attn", "mlp"], windows=[4])
    cps = random_walk(12, 16, seed=5, groups=("attn", "mlp"))
    for i, cp in enumerate(cps):
        assert post(client, rid, i, cp).status_code == 201
    body = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 4}).json()
    assert_matches(body["points"], batch_spectra(cps, 4, noise_dim=32))
    for g in ("attn", "mlp"):
        per = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 4, "group": g}).json()
        assert_matches(per["points"], batch_spectra([{g: cp[g]} for cp in cps], 4, noise_dim=16))


def test_identity_learns_each_groups_length_and_enforces_it(client: TestClient) -> None:
    rid = new_run(client, groups=["a", "b"], sketch={"method": "identity", "dim": 1}, windows=[3])
    cps = [{"a": list(np.arange(5.0) * i**2), "b": list(np.ones(2) * i)} for i in range(6)]
    for i, cp in enumerate(cps):
        assert post(client, rid, i, cp).status_code == 201
    body = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 3}).json()
    assert_matches(body["points"], batch_spectra(cps, 3))
    r = post(client, rid, 10, {"a": [1.0] * 6, "b": [1.0, 2.0]})
    assert r.status_code == 422 and "differ" in r.json()["detail"]


def test_same_step_same_payload_is_200_and_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    rid = new_run(client)
    cps = random_walk(6, 16)
    acks = [post(client, rid, i, cp, {"loss": 1.0 / (i + 1)}) for i, cp in enumerate(cps)]
    before = snapshot(engine, rid)
    again = post(client, rid, 4, cps[4], {"loss": 1.0 / 5})
    assert again.status_code == 200
    assert again.json() == {**acks[4].json(), "created": False}
    assert snapshot(engine, rid) == before


def _bad_inputs() -> list[tuple[str, int, dict[str, Any], str]]:
    good = random_walk(4, 16, seed=9)
    nan = list(good[3]["all"])
    nan[2] = float("nan")
    inf = list(good[3]["all"])
    inf[0] = float("inf")
    return [
        ("same step, different payload", 2, {"step": 20, "sketch": {"all": good[3]["all"]}}, "409"),
        ("step not after the last", 2, {"step": 15, "sketch": good[3]}, "409"),
        ("wrong group", 2, {"step": 5, "sketch": {"attn": good[3]["all"]}}, "422"),
        ("extra group", 2, {"step": 5, "sketch": {"all": good[3]["all"], "x": [1.0]}}, "422"),
        ("wrong dim", 2, {"step": 5, "sketch": {"all": good[3]["all"][:-1]}}, "422"),
        ("NaN in sketch", 2, {"step": 5, "sketch": {"all": nan}}, "422"),
        ("inf in sketch", 2, {"step": 5, "sketch": {"all": inf}}, "422"),
        ("NaN metric", 2, {"step": 5, "sketch": good[3], "metrics": {"loss": float("nan")}}, "422"),
        ("negative step", 2, {"step": -1, "sketch": good[3]}, "422"),
        ("missing sketch", 2, {"step": 5}, "422"),
        ("unknown field", 2, {"step": 5, "sketch": good[3], "extra": 1}, "422"),
    ]


@pytest.mark.parametrize(("case", "n", "body", "status"), _bad_inputs(), ids=lambda v: str(v))
def test_bad_checkpoint_is_refused_and_changes_nothing(
    client: TestClient, engine: Engine, case: str, n: int, body: dict[str, Any], status: str
) -> None:
    rid = new_run(client)
    good = random_walk(4, 16, seed=9)
    for i in range(n + 1):
        assert post(client, rid, 10 * i, good[i]).status_code == 201
    before = snapshot(engine, rid)
    r = post_json(client, f"/api/v1/runs/{rid}/checkpoints", body)
    assert r.status_code == int(status), (case, r.text)
    assert "detail" in r.json()
    assert snapshot(engine, rid) == before


def test_non_finite_checkpoint_records_a_non_finite_event(
    client: TestClient, engine: Engine
) -> None:
    rid = new_run(client)
    sketch = random_walk(1, 16)[0]["all"]
    sketch[3] = float("-inf")
    r = post(client, rid, 7, {"all": sketch}, {"loss": float("nan")})
    assert r.status_code == 422
    e = tables.run_events
    with engine.connect() as conn:
        rows = conn.execute(select(e).where(e.c.run_id == rid)).mappings().all()
    assert [(x["kind"], x["step"]) for x in rows] == [("non_finite", 7)]
    assert rows[0]["details"] == {"groups": ["all"], "metrics": ["loss"], "count": 2}


def test_unknown_run_is_404(client: TestClient) -> None:
    r = post(client, 987654321, 0, {"all": [0.0] * 16})
    assert r.status_code == 404


def test_malformed_json_is_400(client: TestClient, engine: Engine) -> None:
    rid = new_run(client)
    before = snapshot(engine, rid)
    r = client.post(
        f"/api/v1/runs/{rid}/checkpoints",
        content=b'{"step": 1, "sketch": {',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json() == {"detail": "malformed JSON body"}
    assert snapshot(engine, rid) == before


def test_oversized_body_is_413(client: TestClient, engine: Engine) -> None:
    rid = new_run(client, sketch={"method": "identity", "dim": 1})
    before = snapshot(engine, rid)
    r = post(client, rid, 0, {"all": [0.123456789] * 100_000})  # ~1.2 MB > the 1 MB limit
    assert r.status_code == 413 and "detail" in r.json()
    assert snapshot(engine, rid) == before


def test_sketch_dim_beyond_the_cap_is_422(client: TestClient) -> None:
    r = client.post(
        "/api/v1/runs",
        json={
            "project": "proj",
            "name": "too-wide",
            "sketch": {"method": "countsketch", "dim": 65_537},
        },
    )
    assert r.status_code == 422
    r = client.post(
        "/api/v1/runs",
        json={
            "project": "proj",
            "name": "too-wide",
            "sketch": {"method": "identity", "dim": MAX_IDENTITY_DIM + 1},
        },
    )
    assert r.status_code == 422


def test_identity_sketch_beyond_the_total_cap_is_422(postgres_url: str, tmp_path: Any) -> None:
    from servertest import AUTH, make_app

    app = make_app(postgres_url, tmp_path)  # default 32 MiB body limit
    client = TestClient(app, headers=AUTH)
    rid = new_run(client, sketch={"method": "identity", "dim": 1}, groups=["a", "b"])
    half = MAX_IDENTITY_DIM // 2 + 1
    r = post(client, rid, 0, {"a": [0.0] * half, "b": [0.0] * half})
    assert r.status_code == 422 and "identity sketch length" in r.json()["detail"]
    app.state.engine.dispose()


def test_batch_is_all_or_nothing(client: TestClient, engine: Engine) -> None:
    rid = new_run(client, windows=[3])
    cps = random_walk(8, 16, seed=11)
    bad = [{"step": i, "sketch": cp} for i, cp in enumerate(cps)]
    bad[6]["sketch"] = {"all": cps[6]["all"][:3]}
    before = snapshot(engine, rid)
    r = client.post(f"/api/v1/runs/{rid}/checkpoints:batch", json={"checkpoints": bad})
    assert r.status_code == 422 and "checkpoint 6" in r.json()["detail"]
    assert snapshot(engine, rid) == before
    good = [{"step": i, "sketch": cp} for i, cp in enumerate(cps)]
    r = client.post(f"/api/v1/runs/{rid}/checkpoints:batch", json={"checkpoints": good})
    assert r.status_code == 201
    assert r.json()["created"] == 8 and r.json()["unchanged"] == 0
    assert r.json()["last"]["step"] == 7
    again = client.post(f"/api/v1/runs/{rid}/checkpoints/batch", json={"checkpoints": good[5:]})
    assert again.status_code == 200 and again.json()["unchanged"] == 3
    body = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 3}).json()
    assert_matches(body["points"], batch_spectra(cps, 3))


def test_batch_equals_one_at_a_time(client: TestClient) -> None:
    cps = random_walk(20, 16, seed=13)
    one = new_run(client, windows=[4, 6])
    for i, cp in enumerate(cps):
        post(client, one, i, cp)
    many = new_run(client, windows=[4, 6])
    client.post(
        f"/api/v1/runs/{many}/checkpoints:batch",
        json={"checkpoints": [{"step": i, "sketch": cp} for i, cp in enumerate(cps)]},
    )
    for w in (4, 6):
        a = client.get(f"/api/v1/runs/{one}/spectrum", params={"window": w}).json()["points"]
        b = client.get(f"/api/v1/runs/{many}/spectrum", params={"window": w}).json()["points"]
        assert a == b


def test_a_restarted_server_continues_the_run(postgres_url: str, tmp_path: Any) -> None:
    from servertest import AUTH, make_app

    cps = random_walk(25, 16, seed=17)
    first = make_app(postgres_url, tmp_path)
    c1 = TestClient(first, headers=AUTH)
    rid = new_run(c1, windows=[4, 10])
    for i, cp in enumerate(cps[:12]):
        assert post(c1, rid, i, cp).status_code == 201
    first.state.engine.dispose()
    second = make_app(postgres_url, tmp_path)
    c2 = TestClient(second, headers=AUTH)
    assert post(c2, rid, 11, cps[11]).status_code == 200
    for i, cp in enumerate(cps[12:], start=12):
        assert post(c2, rid, i, cp).status_code == 201
    for w in (4, 10):
        body = c2.get(f"/api/v1/runs/{rid}/spectrum", params={"window": w}).json()
        assert_matches(body["points"], batch_spectra(cps, w))
    second.state.engine.dispose()


def test_metrics_sent_with_a_checkpoint_are_stored_at_its_step(client: TestClient) -> None:
    rid = new_run(client)
    cps = random_walk(2, 16)
    post(client, rid, 10, cps[0], {"loss": 2.5, "acc": 0.1})
    post(client, rid, 20, cps[1], {"loss": 2.0})
    body = client.get(f"/api/v1/runs/{rid}/metrics").json()
    assert body["series"] == [
        {"name": "acc", "steps": [10], "values": [0.1]},
        {"name": "loss", "steps": [10, 20], "values": [2.5, 2.0]},
    ]


def test_dot_rows_reassemble_the_band_of_the_dot_matrix(client: TestClient, engine: Engine) -> None:
    from sedmon_server.series import dot_band

    rid = new_run(client, windows=[3, 4], groups=["a", "b"])
    cps = random_walk(10, 16, seed=21, groups=("a", "b"))
    for i, cp in enumerate(cps):
        post(client, rid, i, cp)
    with engine.connect() as conn:
        steps, dots = dot_band(conn, rid, ["a", "b"])
    pos = np.array([np.concatenate([cp["a"], cp["b"]]) for cp in cps])
    d = np.diff(pos, axis=0)
    full = d @ d.T
    assert steps.tolist() == list(range(1, 10))
    band = np.abs(np.subtract.outer(np.arange(9), np.arange(9))) <= 3
    np.testing.assert_allclose(dots[band], full[band], rtol=1e-12)
    assert np.isnan(dots[~band]).all()


def test_a_step_twice_in_one_batch_is_one_checkpoint_or_a_conflict(client: TestClient) -> None:
    rid = new_run(client, windows=[3])
    cps = random_walk(4, 16, seed=23)
    same = [{"step": i, "sketch": cp} for i, cp in enumerate(cps)] + [{"step": 3, "sketch": cps[3]}]
    r = client.post(f"/api/v1/runs/{rid}/checkpoints:batch", json={"checkpoints": same})
    assert (r.status_code, r.json()["created"], r.json()["unchanged"]) == (201, 4, 1)
    rid2 = new_run(client, windows=[3])
    other = [{"step": i, "sketch": cp} for i, cp in enumerate(cps)] + [
        {"step": 3, "sketch": cps[0]}
    ]
    r = client.post(f"/api/v1/runs/{rid2}/checkpoints:batch", json={"checkpoints": other})
    assert r.status_code == 409
    assert client.get(f"/api/v1/runs/{rid2}").json()["num_checkpoints"] == 0
