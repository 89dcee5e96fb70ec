"""Every run-scoped route of the served app, read or write, answers another project's token
exactly as it answers a run that does not exist: 404 "run N not found", nothing changed.

The routes come from the app's own OpenAPI (alerts and dashboard extensions installed, as
served), so a route added later is covered without editing this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servertest import ADMIN, AUTH, new_run, post, random_walk, snapshot, unique

from sedmon_server.analyses import ANALYSES
from sedmon_server.app import create_app
from sedmon_server.settings import Settings

pytestmark = pytest.mark.postgres

SKETCH = {"all": [float(i) for i in range(16)]}
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/api/v1/runs/{run_id}/finish"): {"state": "finished"},
    ("post", "/api/v1/runs/{run_id}/checkpoints"): {"step": 5, "sketch": SKETCH},
    ("post", "/api/v1/runs/{run_id}/checkpoints:batch"): {
        "checkpoints": [{"step": 5, "sketch": SKETCH}]
    },
    ("post", "/api/v1/runs/{run_id}/metrics"): {"step": 5, "values": {"loss": 1.0}},
    ("post", "/api/v1/runs/{run_id}/metrics:batch"): {
        "points": [{"step": 5, "values": {"loss": 1.0}}]
    },
}


@pytest.fixture()
def served(postgres_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=postgres_url, home=tmp_path, admin_token=ADMIN))
    yield app
    app.state.engine.dispose()


def _calls(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every operation on one run, `{name}` filled with each analysis."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if "{run_id}" not in path:
            continue
        for method in ops:
            if "{name}" in path:
                out += [(method, path.replace("{name}", n)) for n in ANALYSES]
            else:
                out.append((method, path))
    return out


def test_another_projects_run_answers_like_a_missing_one_on_every_run_route(
    served: FastAPI,
) -> None:
    admin = TestClient(served, headers=AUTH)
    theirs = new_run(admin, project=unique("theirs"), windows=[3])
    for i, cp in enumerate(random_walk(6, 16)):
        assert post(admin, theirs, i, cp, {"loss": 1.0 / (i + 1)}).status_code == 201
    mine = unique("mine")
    r = admin.post("/api/v1/tokens", json={"project": mine, "scope": "admin"})
    assert r.status_code == 201, r.text
    outsider = TestClient(served, headers={"Authorization": f"Bearer {r.json()['token']}"})
    missing = 2**62

    calls = _calls(served)
    assert len(calls) >= 10 + len(ANALYSES) - 1  # the routes the contract names, at least
    before = snapshot(served.state.engine, theirs)
    for method, template in calls:
        body = BODIES.get((method, template))
        if method == "post":
            assert body is not None, f"no body for {template}: add one to BODIES"
        for run_id in (theirs, missing):
            path = template.replace("{run_id}", str(run_id))
            got = outsider.request(method.upper(), path, json=body)
            assert (got.status_code, got.json()) == (
                404,
                {"detail": f"run {run_id} not found"},
            ), f"{method.upper()} {path}"
    assert snapshot(served.state.engine, theirs) == before
