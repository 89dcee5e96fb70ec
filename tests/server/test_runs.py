"""Runs: idempotent creation, listing with filters and pages, one run, finishing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from servertest import new_run, post, random_walk, snapshot, unique
from sqlalchemy import Engine

pytestmark = pytest.mark.postgres


def spec(name: str, project: str = "proj", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "project": project,
        "name": name,
        "sketch": {"method": "gaussian", "dim": 32, "seed": 4},
        "windows": [10, 5],
        "config": {"lr": 0.001},
    }
    body.update(extra)
    return body


def test_create_answers_201_then_200_with_the_same_run(client: TestClient) -> None:
    name = unique()
    first = client.post("/api/v1/runs", json=spec(name))
    again = client.post("/api/v1/runs", json=spec(name))
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    body = first.json()
    assert body["windows"] == [5, 10] and body["groups"] == ["all"]
    assert body["sketch"] == {"method": "gaussian", "dim": 32, "seed": 4}
    assert body["state"] == "running" and body["num_checkpoints"] == 0 and body["latest"] == []


def test_create_with_a_different_spec_is_409(client: TestClient) -> None:
    name = unique()
    client.post("/api/v1/runs", json=spec(name))
    r = client.post("/api/v1/runs", json=spec(name, windows=[5, 10, 20]))
    assert r.status_code == 409 and "different spec" in r.json()["detail"]


@pytest.mark.parametrize(
    "bad",
    [
        {"project": "bad project"},
        {"windows": [1]},
        {"windows": [101]},
        {"windows": [5, 5]},
        {"groups": ["all", "attn"]},
        {"rank_rule": "biggest"},
        {"sketch": {"method": "fourier", "dim": 10}},
    ],
    ids=str,
)
def test_create_with_an_invalid_spec_is_422(client: TestClient, bad: dict[str, object]) -> None:
    r = client.post("/api/v1/runs", json=spec(unique(), **bad))
    assert r.status_code == 422 and "detail" in r.json()


def test_list_filters_by_project_state_and_name_prefix_with_pages(client: TestClient) -> None:
    project = unique("listing")
    ids = [new_run(client, project=project, name=f"exp-{i}") for i in range(5)]
    new_run(client, project=project, name="other-0")
    client.post(f"/api/v1/runs/{ids[0]}/finish")
    r = client.get("/api/v1/runs", params={"project": project, "name_prefix": "exp-"})
    assert [x["id"] for x in r.json()["runs"]] == ids[::-1]
    assert r.json()["total"] == 5
    page = client.get(
        "/api/v1/runs", params={"project": project, "name_prefix": "exp-", "limit": 2, "offset": 2}
    ).json()
    assert [x["id"] for x in page["runs"]] == [ids[2], ids[1]]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    done = client.get("/api/v1/runs", params={"project": project, "state": "finished"}).json()
    assert [x["id"] for x in done["runs"]] == [ids[0]]
    assert client.get("/api/v1/runs", params={"state": "paused"}).status_code == 422


def test_name_prefix_matches_literally(client: TestClient) -> None:
    project = unique("like")
    new_run(client, project=project, name="a_b")
    new_run(client, project=project, name="axb")
    r = client.get("/api/v1/runs", params={"project": project, "name_prefix": "a_"}).json()
    assert [x["name"] for x in r["runs"]] == ["a_b"]


def test_one_run_shows_counts_and_the_latest_edge_of_every_window(client: TestClient) -> None:
    rid = new_run(client, windows=[3, 5, 30])
    for i, cp in enumerate(random_walk(7, 16)):
        post(client, rid, 100 * i, cp)
    body = client.get(f"/api/v1/runs/{rid}").json()
    assert body["num_checkpoints"] == 7 and body["last_step"] == 600
    assert [(e["window"], e["step"]) for e in body["latest"]] == [(3, 600), (5, 600)]
    assert all(e["phase"] in ("warmup", "rise", "plateau", "collapse") for e in body["latest"])


def test_finish_marks_the_run_finished_and_is_idempotent(client: TestClient) -> None:
    rid = new_run(client)
    assert client.post(f"/api/v1/runs/{rid}/finish").json()["state"] == "finished"
    assert client.post(f"/api/v1/runs/{rid}/finish").status_code == 200
    assert client.get(f"/api/v1/runs/{rid}").json()["state"] == "finished"


def test_finish_with_state_failed_marks_the_run_failed(client: TestClient) -> None:
    rid = new_run(client)
    r = client.post(f"/api/v1/runs/{rid}/finish", json={"state": "failed"})
    assert r.status_code == 200 and r.json()["state"] == "failed"
    assert client.get(f"/api/v1/runs/{rid}").json()["state"] == "failed"
    listed = client.get("/api/v1/runs", params={"state": "failed", "limit": 1000}).json()
    assert rid in [run["id"] for run in listed["runs"]]


@pytest.mark.parametrize("body", [None, b"", b"{}", b'{"state": "finished"}'])
def test_finish_without_a_state_or_with_finished_marks_the_run_finished(
    client: TestClient, body: bytes | None
) -> None:
    rid = new_run(client)
    url = f"/api/v1/runs/{rid}/finish"
    headers = {"content-type": "application/json"}
    r = client.post(url) if body is None else client.post(url, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "finished"


def test_finish_the_same_state_again_keeps_the_first_end_time(
    client: TestClient, engine: Engine
) -> None:
    rid = new_run(client)
    client.post(f"/api/v1/runs/{rid}/finish", json={"state": "failed"})
    before = snapshot(engine, rid)
    assert client.post(f"/api/v1/runs/{rid}/finish", json={"state": "failed"}).status_code == 200
    assert snapshot(engine, rid) == before


def test_a_later_finish_with_the_other_state_replaces_it(client: TestClient) -> None:
    rid = new_run(client)
    client.post(f"/api/v1/runs/{rid}/finish", json={"state": "failed"})
    r = client.post(f"/api/v1/runs/{rid}/finish", json={"state": "finished"})
    assert r.json()["state"] == "finished"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"state": "crashed"}', 422),
        (b'{"state": null}', 422),
        (b'{"state": "failed", "reason": "oom"}', 422),
        (b'{"state": ', 400),
    ],
)
def test_finish_with_a_bad_body_is_refused_and_changes_nothing(
    client: TestClient, engine: Engine, body: bytes, status: int
) -> None:
    rid = new_run(client)
    before = snapshot(engine, rid)
    r = client.post(
        f"/api/v1/runs/{rid}/finish", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status and "detail" in r.json()
    assert snapshot(engine, rid) == before and before["run"]["state"] == "running"


def test_unknown_run_is_404(client: TestClient) -> None:
    assert client.get("/api/v1/runs/99999999").status_code == 404
    assert client.post("/api/v1/runs/99999999/finish").status_code == 404
