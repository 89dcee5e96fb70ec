"""Health, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servertest import new_run, post, random_walk

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
