"""Tokens: 401 without or with a bad token, 403 for the wrong scope, 404 across projects."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servertest import ADMIN, make_app, new_run, post, random_walk, unique

from sedmon_server.auth import COOKIE_NAME, Principal, TokenCache, revoke_token

pytestmark = pytest.mark.postgres


def token(client: TestClient, project: str | None, scope: str) -> str:
    r = client.post("/api/v1/tokens", json={"project": project, "scope": scope})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def as_(app: FastAPI, tok: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {tok}"})


def test_no_token_is_401_with_www_authenticate(pg_app: FastAPI) -> None:
    r = TestClient(pg_app).get("/api/v1/runs")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer", "token"])
def test_bad_token_is_401(pg_app: FastAPI, header: str) -> None:
    r = TestClient(pg_app, headers={"Authorization": header}).get("/api/v1/runs")
    assert r.status_code == 401 and "detail" in r.json()


def test_the_documented_bearer_scheme_changes_no_answer(pg_app: FastAPI) -> None:
    """`require` depends on the OpenAPI bearer scheme (auth.BEARER) only to document it:
    the answers stay `require`'s own (401 + WWW-Authenticate, cookie on GET/HEAD only)."""
    security = pg_app.openapi()["paths"]["/api/v1/runs"]["get"]["security"]
    assert security == [{"bearer": []}]
    lower = TestClient(pg_app, headers={"Authorization": f"bearer {ADMIN}"})
    assert lower.get("/api/v1/runs").status_code == 200
    for header in ("Basic abc", "Bearer"):  # what HTTPBearer itself would pass or refuse
        r = TestClient(pg_app, headers={"Authorization": header}).get("/api/v1/runs")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    cookie = TestClient(pg_app, cookies={COOKIE_NAME: ADMIN})
    assert cookie.get("/api/v1/runs").status_code == 200
    assert cookie.head("/api/v1/runs").status_code in (200, 405)
    refused = cookie.post("/api/v1/runs", json={"project": "p", "name": "cookie"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")


def test_read_token_cannot_ingest_but_can_read(client: TestClient, pg_app: FastAPI) -> None:
    project = unique("p")
    rid = new_run(client, project=project)
    reader = as_(pg_app, token(client, project, "read"))
    assert post(reader, rid, 0, random_walk(1, 16)[0]).status_code == 403
    assert reader.get(f"/api/v1/runs/{rid}").status_code == 200
    assert reader.post("/api/v1/runs", json={"project": project, "name": "x"}).status_code == 403


def test_ingest_token_posts_to_its_project_only(client: TestClient, pg_app: FastAPI) -> None:
    mine, theirs = unique("mine"), unique("theirs")
    writer = as_(pg_app, token(client, mine, "ingest"))
    r = writer.post(
        "/api/v1/runs", json={"project": mine, "name": "a", "sketch": {"dim": 16}, "windows": [3]}
    )
    assert r.status_code == 201
    assert post(writer, r.json()["id"], 0, random_walk(1, 16)[0]).status_code == 201
    denied = writer.post("/api/v1/runs", json={"project": theirs, "name": "a"})
    assert denied.status_code == 403
    assert writer.post("/api/v1/tokens", json={"project": mine, "scope": "read"}).status_code == 403


def test_another_projects_run_is_404_like_a_missing_one(
    client: TestClient, pg_app: FastAPI
) -> None:
    other = new_run(client, project=unique("other"))
    post(client, other, 0, random_walk(1, 16)[0])
    outsider = as_(pg_app, token(client, unique("mine"), "ingest"))
    for path in ("", "/spectrum", "/metrics"):
        assert outsider.get(f"/api/v1/runs/{other}{path}").status_code == 404
    assert post(outsider, other, 1, random_walk(1, 16)[0]).status_code == 404
    assert outsider.post(f"/api/v1/runs/{other}/finish").status_code == 404
    missing = outsider.get("/api/v1/runs/99999999")
    assert missing.json() == {"detail": "run 99999999 not found"}
    assert outsider.get(f"/api/v1/runs/{other}").json() == {"detail": f"run {other} not found"}


def test_listing_shows_only_the_tokens_project(client: TestClient, pg_app: FastAPI) -> None:
    a, b = unique("a"), unique("b")
    ra = new_run(client, project=a)
    new_run(client, project=b)
    reader = as_(pg_app, token(client, a, "read"))
    assert [x["id"] for x in reader.get("/api/v1/runs").json()["runs"]] == [ra]
    assert reader.get("/api/v1/runs", params={"project": b}).status_code == 403


def test_revoked_token_is_401_at_once(client: TestClient, pg_app: FastAPI) -> None:
    project = unique("p")
    created = client.post("/api/v1/tokens", json={"project": project, "scope": "read"}).json()
    reader = as_(pg_app, created["token"])
    assert reader.get("/api/v1/runs").status_code == 200
    assert client.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert reader.get("/api/v1/runs").status_code == 401
    assert client.delete(f"/api/v1/tokens/{created['id']}").status_code == 404


def test_tokens_are_stored_hashed_and_listed_without_secret(
    client: TestClient, engine: object
) -> None:
    from sqlalchemy import Engine, select

    from sedmon_server import tables
    from sedmon_server.auth import hash_token

    assert isinstance(engine, Engine)
    created = client.post(
        "/api/v1/tokens", json={"project": "proj", "scope": "ingest", "label": "ci"}
    ).json()
    with engine.connect() as conn:
        stored = conn.execute(
            select(tables.tokens.c.token_hash).where(tables.tokens.c.id == created["id"])
        ).scalar_one()
    assert stored == hash_token(created["token"]) and created["token"] not in stored
    listed = client.get("/api/v1/tokens").json()["tokens"]
    mine = [t for t in listed if t["id"] == created["id"]]
    assert mine and "token" not in mine[0] and mine[0]["label"] == "ci"


def test_project_admin_manages_only_its_project(client: TestClient, pg_app: FastAPI) -> None:
    project = unique("adm")
    admin = as_(pg_app, token(client, project, "admin"))
    assert (
        admin.post("/api/v1/tokens", json={"project": project, "scope": "read"}).status_code == 201
    )
    assert (
        admin.post("/api/v1/tokens", json={"project": "elsewhere", "scope": "read"}).status_code
        == 403
    )
    assert admin.post("/api/v1/tokens", json={"scope": "admin"}).status_code == 403
    assert {t["project"] for t in admin.get("/api/v1/tokens").json()["tokens"]} == {project}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_revoked_by_another_process_works_until_the_cache_ttl_ends(
    client: TestClient, postgres_url: str, tmp_path: Any
) -> None:
    app = make_app(postgres_url, tmp_path, token_cache_seconds=5.0)
    clock = ManualClock()
    app.state.token_cache = TokenCache(ttl_s=5.0, clock=clock)
    created = client.post("/api/v1/tokens", json={"project": unique("p"), "scope": "read"}).json()
    reader = as_(app, created["token"])
    assert reader.get("/api/v1/runs").status_code == 200
    # Revoked elsewhere (another worker, replica or the CLI): this process asked 0 s ago.
    with app.state.engine.begin() as conn:
        assert revoke_token(conn, int(created["id"]))
    clock.now += 4.9
    assert reader.get("/api/v1/runs").status_code == 200
    clock.now += 0.2
    assert reader.get("/api/v1/runs").status_code == 401
    app.state.engine.dispose()


def test_without_a_token_cache_a_revocation_elsewhere_counts_at_the_next_request(
    client: TestClient, postgres_url: str, tmp_path: Any
) -> None:
    app = make_app(postgres_url, tmp_path, token_cache_seconds=0)
    created = client.post("/api/v1/tokens", json={"project": unique("p"), "scope": "read"}).json()
    reader = as_(app, created["token"])
    assert reader.get("/api/v1/runs").status_code == 200
    with app.state.engine.begin() as conn:
        assert revoke_token(conn, int(created["id"]))
    assert reader.get("/api/v1/runs").status_code == 401
    app.state.engine.dispose()


def test_a_lookup_that_raced_a_revocation_is_not_cached() -> None:
    cache = TokenCache(ttl_s=5.0)
    principal = Principal(project="p", scope="read", token_id=7)
    generation = cache.generation  # a request read the token from the database here ...
    cache.forget(7)  # ... the token was revoked in this process meanwhile ...
    cache.put("hash-7", principal, generation)  # ... and the request finishes its lookup
    assert cache.get("hash-7") is None
    cache.put("hash-7", principal, cache.generation)
    assert cache.get("hash-7") == principal


def test_the_token_cache_is_bounded() -> None:
    clock = ManualClock()
    cache = TokenCache(ttl_s=5.0, max_entries=3, clock=clock)
    for i in range(10):
        cache.put(f"hash-{i}", Principal(project="p", scope="read", token_id=i), 0)
        assert len(cache) <= 3
    assert cache.get("hash-9") is not None
