"""Health, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from servertest import ADMIN, AUTH, new_run, post, post_json, random_walk

from sedmon_server import observability
from sedmon_server.observability import MULTIPROC_ENV, Observability

pytestmark = pytest.mark.postgres


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": None}
    assert client.get("/readyz").json() == {"status": "ok", "database": "postgresql"}


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: object) -> None:
    from sedmon_server.app import create_app
    from sedmon_server.settings import Settings

    app = create_app(
        Settings(
            database_url="postgresql+psycopg://postgres@127.0.0.1:1/none", migrate_on_start=False
        ),
        extensions=(),
    )
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_metrics_report_ingest_counts_latency_and_the_runs_edge(client: TestClient) -> None:
    rid = new_run(client, windows=[3])
    for i, cp in enumerate(random_walk(5, 16)):
        post(client, rid, i, cp)
    post(client, rid, 2, random_walk(3, 16, seed=99)[2])
    text = client.get("/metrics").text
    assert 'sedmon_ingest_checkpoints_total{outcome="created"}' in text
    assert 'sedmon_ingest_checkpoints_total{outcome="409"}' in text
    assert 'sedmon_ingest_seconds_bucket{endpoint="checkpoint",le="0.1"}' in text
    assert re.search(rf'sedmon_run_gap_ratio{{[^}}]*run_id="{rid}"[^}}]*}} \d', text)
    assert re.search(rf'sedmon_run_signal_rank{{[^}}]*run_id="{rid}"[^}}]*}} \d', text)
    assert "sedmon_alerts_total" in text


def test_per_run_gauges_drop_finished_and_stale_runs(pg_app: FastAPI, client: TestClient) -> None:
    obs = pg_app.state.observability
    rid = new_run(client, windows=[3])
    for i, cp in enumerate(random_walk(5, 16)):
        post(client, rid, i, cp)
    assert rid in dict(obs.active_runs())
    client.post(f"/api/v1/runs/{rid}/finish")
    assert rid not in dict(obs.active_runs())
    saved = obs.active_run_seconds
    obs.record_edge(-1, "p", "stale", 1.0, 1)
    obs.active_run_seconds = 0.0
    try:
        assert -1 not in dict(obs.active_runs())
    finally:
        obs.active_run_seconds = saved


def test_an_alert_transition_is_counted_by_rule_and_state(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    from sedmon_server.app import create_app
    from sedmon_server.settings import Settings

    app = create_app(
        Settings(database_url=fresh_postgres_url, home=tmp_path, admin_token=ADMIN),
        extensions=("sedmon_server.alerts",),
    )
    try:
        with TestClient(app, headers=AUTH) as c:
            rid = new_run(c, windows=[3])
            cps = random_walk(3, 16)
            for i, cp in enumerate(cps[:2]):
                post(c, rid, i, cp)
            bad = {"all": [float("nan"), *cps[2]["all"][1:]]}
            r = post_json(c, f"/api/v1/runs/{rid}/checkpoints", {"step": 2, "sketch": bad})
            assert r.status_code == 422
            text = c.get("/metrics").text
    finally:
        app.state.engine.dispose()
    found = re.search(
        r'^sedmon_alerts_total\{rule="non_finite",state="firing"\} (\S+)$', text, re.M
    )
    assert found, text
    assert float(found.group(1)) >= 1


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text page (0.0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_refused_ingests_are_timed_in_the_latency_histogram(client: TestClient) -> None:
    rid = new_run(client, windows=[3])
    cps = random_walk(3, 16)
    post(client, rid, 5, cps[0])

    def count(endpoint: str) -> float:
        return sample(client.get("/metrics").text, "sedmon_ingest_seconds_count", endpoint=endpoint)

    one, many = count("checkpoint"), count("batch")
    assert post(client, rid, 4, cps[1]).status_code == 409  # not after the last step
    assert post(client, 10**9, 0, cps[1]).status_code == 404  # no such run
    r = client.post(
        f"/api/v1/runs/{rid}/checkpoints:batch",
        json={"checkpoints": [{"step": 3, "sketch": cps[1]}, {"step": 4, "sketch": cps[2]}]},
    )
    assert r.status_code == 409
    assert count("checkpoint") == one + 2
    assert count("batch") == many + 1


def test_per_run_gauges_shared_by_workers_take_the_latest_step_and_forget_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(observability, "FLUSH_SECONDS", 3600.0)  # flushed by hand below
    obs = Observability(active_run_seconds=3600, max_runs=2)
    obs.record_edge(7, "p", "seven", 0.5, 2, step=10)
    other = tmp_path / "runs" / f"7_{os.getpid() + 1}.json"  # another worker, a later step
    edge = {"project": "p", "name": "seven", "gap_ratio": 0.25, "signal_rank": 3, "step": 11}
    other.write_text(json.dumps({**edge, "seen": time.time()}))
    assert [(rid, e.gap_ratio, e.signal_rank) for rid, e in obs.reported_runs()] == [(7, 0.25, 3)]
    obs.record_edge(8, "p", "eight", 0.1, 1, step=1)
    obs.record_edge(9, "p", "nine", 0.2, 1, step=1)
    assert [rid for rid, _ in obs.reported_runs()] == [9, 8]  # at most max_runs, the latest
    obs.forget_run(7)  # finished on this worker: gone from every worker's files
    assert not list((tmp_path / "runs").glob("7_*.json"))
    # Another worker's flush of an edge it recorded before the finish comes too late.
    late = {**edge, "seen": time.time() - 0.001}
    other.write_text(json.dumps(late))
    assert 7 not in dict(obs.reported_runs()) and not other.exists()
    # This worker's own edges reach the others through its flush, not at each checkpoint.
    mine = tmp_path / "runs" / f"9_{os.getpid()}.json"
    assert not mine.exists()
    obs.flush()
    assert json.loads(mine.read_text())["name"] == "nine"
    stale = tmp_path / "runs" / f"5_{os.getpid() + 1}.json"
    stale.write_text(json.dumps({**edge, "seen": 1.0}))
    assert 5 not in dict(obs.reported_runs()) and not stale.exists()
    text = obs.render().decode()
    assert sample(text, "sedmon_active_runs") == 2
    assert sample(text, "sedmon_run_signal_rank", run_id="9", project="p", run="nine") == 1


def test_openapi_documents_every_contract_route_with_its_error_codes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    expected = {
        ("/api/v1/runs", "post"): {"200", "201", "401", "403", "409", "422"},
        ("/api/v1/runs", "get"): {"200", "401"},
        ("/api/v1/runs/{run_id}", "get"): {"200", "404"},
        ("/api/v1/runs/{run_id}/finish", "post"): {"200", "404"},
        ("/api/v1/runs/{run_id}/checkpoints", "post"): {"200", "201", "404", "409", "413", "422"},
        ("/api/v1/runs/{run_id}/checkpoints:batch", "post"): {"201", "409", "422"},
        ("/api/v1/runs/{run_id}/spectrum", "get"): {"200", "404", "422"},
        ("/api/v1/runs/{run_id}/metrics", "post"): {"201", "404", "422"},
        ("/api/v1/runs/{run_id}/metrics", "get"): {"200", "404"},
        ("/api/v1/tokens", "post"): {"201", "401", "403"},
        ("/api/v1/tokens", "get"): {"200"},
        ("/api/v1/tokens/{token_id}", "delete"): {"204", "404"},
        ("/api/v1/runs/{run_id}/analysis/{name}", "get"): {"200", "404", "422"},
        ("/healthz", "get"): {"200"},
        ("/readyz", "get"): {"200", "503"},
        ("/metrics", "get"): {"200"},
    }
    for (path, method), codes in expected.items():
        assert path in paths, path
        assert codes <= set(paths[path][method]["responses"]), (path, method)
