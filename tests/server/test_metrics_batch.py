"""The metrics batch endpoint: many steps in one request, all or nothing, single-post rules."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servertest import new_run, post_json, snapshot, unique
from sqlalchemy import Engine

pytestmark = pytest.mark.postgres


def _url(rid: int) -> str:
    return f"/api/v1/runs/{rid}/metrics:batch"


def _series(client: TestClient, rid: int) -> list[dict[str, Any]]:
    body = client.get(f"/api/v1/runs/{rid}/metrics").json()
    series: list[dict[str, Any]] = body["series"]
    return series


def _as(app: FastAPI, client: TestClient, project: str | None, scope: str) -> TestClient:
    """A client holding a new token of `scope` for `project`."""
    r = client.post("/api/v1/tokens", json={"project": project, "scope": scope})
    assert r.status_code == 201, r.text
    return TestClient(app, headers={"Authorization": f"Bearer {r.json()['token']}"})


def test_a_batch_stores_every_point_and_reads_back_as_series(client: TestClient) -> None:
    rid = new_run(client)
    points = [{"step": s, "values": {"loss": 1.0 / (s + 1), "lr": 0.1}} for s in range(250)]
    r = client.post(_url(rid), json={"points": points})
    assert r.status_code == 201, r.text
    assert r.json() == {"run_id": rid, "points": 250, "stored": 500}
    loss, lr = sorted(_series(client, rid), key=lambda s: s["name"])
    assert loss["steps"] == list(range(250)) and lr["steps"] == list(range(250))
    assert loss["values"] == [1.0 / (s + 1) for s in range(250)]
    assert lr["values"] == [0.1] * 250


def test_a_name_and_step_twice_in_a_batch_keeps_the_later_value(client: TestClient) -> None:
    rid = new_run(client)
    points = [
        {"step": 5, "values": {"loss": 2.0}},
        {"step": 5, "values": {"loss": 1.5, "acc": 0.25}},
    ]
    r = client.post(_url(rid), json={"points": points})
    assert r.status_code == 201 and r.json()["stored"] == 2
    assert sorted((s["name"], s["steps"], s["values"]) for s in _series(client, rid)) == [
        ("acc", [5], [0.25]),
        ("loss", [5], [1.5]),
    ]


def test_a_batch_sent_again_changes_nothing(client: TestClient, engine: Engine) -> None:
    rid = new_run(client)
    body = {"points": [{"step": s, "values": {"loss": float(s)}} for s in range(40)]}
    assert client.post(_url(rid), json=body).status_code == 201
    before, series = snapshot(engine, rid), _series(client, rid)
    again = client.post(_url(rid), json=body)
    assert again.status_code == 201 and again.json()["stored"] == 40
    assert snapshot(engine, rid) == before and _series(client, rid) == series


def test_a_batch_replaces_values_like_single_posts(client: TestClient) -> None:
    rid = new_run(client)
    client.post(f"/api/v1/runs/{rid}/metrics", json={"step": 3, "values": {"loss": 9.0}})
    client.post(_url(rid), json={"points": [{"step": 3, "values": {"loss": 1.0}}]})
    assert _series(client, rid) == [{"name": "loss", "steps": [3], "values": [1.0]}]


def test_the_slash_alias_stores_the_same(client: TestClient) -> None:
    rid = new_run(client)
    r = client.post(
        f"/api/v1/runs/{rid}/metrics/batch", json={"points": [{"step": 1, "values": {"a": 2.0}}]}
    )
    assert r.status_code == 201
    assert _series(client, rid) == [{"name": "a", "steps": [1], "values": [2.0]}]


GOOD = {"step": 1, "values": {"loss": 1.0}}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"points": [GOOD, {"step": 2, "values": {"loss": float("nan")}}]}, 422, "point 1"),
        ({"points": [GOOD, GOOD, {"step": 3, "values": {"x": float("-inf")}}]}, 422, "point 2"),
        ({"points": [GOOD, {"step": 2, "values": {"y" * 201: 1.0}}]}, 422, "point 1"),
        ({"points": [GOOD, {"step": 2, "values": {"": 1.0}}]}, 422, "1-200 characters"),
        ({"points": [GOOD, {"step": 2, "values": {}}]}, 422, "points"),
        ({"points": [GOOD, {"step": -1, "values": {"loss": 1.0}}]}, 422, "step"),
        ({"points": [GOOD, {"step": 2, "values": {"loss": "high"}}]}, 422, "values"),
        ({"points": [GOOD, {"step": 2, "values": {"loss": 1.0}, "extra": 1}]}, 422, "extra"),
        ({"points": []}, 422, "points"),
        ({"points": [GOOD] * 10_001}, 422, "points"),
        ({}, 422, "points"),
        ({"step": 1, "values": {"loss": 1.0}}, 422, "points"),
    ],
)
def test_bad_batches_are_refused_whole_and_change_nothing(
    client: TestClient, engine: Engine, body: dict[str, Any], status: int, says: str
) -> None:
    rid = new_run(client)
    client.post(_url(rid), json={"points": [{"step": 0, "values": {"loss": 5.0}}]})
    before, series = snapshot(engine, rid), _series(client, rid)
    r = post_json(client, _url(rid), body)
    assert r.status_code == status, r.text
    assert says in str(r.json()["detail"])
    assert snapshot(engine, rid) == before and _series(client, rid) == series


def test_malformed_json_is_400_and_changes_nothing(client: TestClient, engine: Engine) -> None:
    rid = new_run(client)
    before = snapshot(engine, rid)
    r = client.post(
        _url(rid), content=b'{"points": [{"step": 1,', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json() == {"detail": "malformed JSON body"}
    assert snapshot(engine, rid) == before


def test_a_body_over_the_limit_is_413(client: TestClient, engine: Engine) -> None:
    rid = new_run(client)  # the test app's limit is 1,000,000 bytes
    before = snapshot(engine, rid)
    points = [{"step": s, "values": {f"m{j:04d}": 0.5 for j in range(1000)}} for s in range(100)]
    r = client.post(_url(rid), json={"points": points})
    assert r.status_code == 413
    assert snapshot(engine, rid) == before


def test_an_unknown_run_is_404(client: TestClient) -> None:
    r = client.post(_url(99_999_999), json={"points": [GOOD]})
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_tokens_are_checked_like_the_single_post(client: TestClient, pg_app: FastAPI) -> None:
    project = unique("p")
    rid = new_run(client, project=project)
    body = {"points": [GOOD]}
    assert TestClient(pg_app).post(_url(rid), json=body).status_code == 401
    assert _as(pg_app, client, project, "read").post(_url(rid), json=body).status_code == 403
    stranger = _as(pg_app, client, unique("other"), "ingest")
    assert stranger.post(_url(rid), json=body).status_code == 404
    assert _series(client, rid) == []
    assert _as(pg_app, client, project, "ingest").post(_url(rid), json=body).status_code == 201
    assert _series(client, rid) == [{"name": "loss", "steps": [1], "values": [1.0]}]


def test_the_batch_is_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/runs/{run_id}/metrics:batch"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/MetricsBatchIn")
    ack = post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert ack.endswith("/MetricsBatchAck")
    assert set(doc["components"]["schemas"]["MetricsBatchAck"]["properties"]) == {
        "run_id",
        "points",
        "stored",
    }
