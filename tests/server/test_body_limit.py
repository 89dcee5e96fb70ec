"""The body limit on chunked uploads (no Content-Length): 413 before any route reads it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from servertest import new_run, random_walk, snapshot
from sqlalchemy import Engine

pytestmark = pytest.mark.postgres


def chunked(body: bytes, size: int = 65_536) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, without a Content-Length."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_a_chunked_body_over_the_limit_is_413_and_nothing_is_written(
    client: TestClient, engine: Engine
) -> None:
    rid = new_run(client, sketch={"method": "identity", "dim": 1})
    before = snapshot(engine, rid)
    body = json.dumps({"step": 0, "sketch": {"all": [0.123456789] * 100_000}}).encode()
    assert len(body) > 1_000_000  # the pg_app's limit
    r = client.post(
        f"/api/v1/runs/{rid}/checkpoints",
        content=chunked(body),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert "larger than 1000000 bytes" in r.json()["detail"]
    assert snapshot(engine, rid) == before


def test_a_chunked_body_under_the_limit_reaches_the_route_whole(
    client: TestClient, engine: Engine
) -> None:
    rid = new_run(client, windows=[3])
    for step, cp in enumerate(random_walk(4, 16)):
        body = json.dumps({"step": step, "sketch": cp}).encode()
        r = client.post(
            f"/api/v1/runs/{rid}/checkpoints",
            content=chunked(body, size=100),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 201, r.text
    assert snapshot(engine, rid)["checkpoints"] == 4
    assert client.get(f"/api/v1/runs/{rid}").json()["num_checkpoints"] == 4
