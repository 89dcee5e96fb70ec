"""Bad input never answers 500 and never changes the database (docs/api.md, "Caps").

Each case an audit reproduced as a 500: integers beyond BIGINT, over-long or NUL metric
names, NUL in stored text, NaN in a run's config, sketch values so large that dot
products overflow, and the safety net for values the database itself refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servertest import AUTH, make_app, new_run, post, post_json, random_walk, snapshot, unique
from sqlalchemy import Engine, func, select

from sedmon_core.schemas import MAX_INT64, MAX_SKETCH_VALUE
from sedmon_server import ingest, tables

HUGE_ID = 10**20
DIM = 16


def counts(engine: Engine) -> dict[str, int]:
    """Rows per table of the whole database: any write shows up here."""
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in tables.metadata.sorted_tables
        }


def state(engine: Engine, run_id: int) -> tuple[dict[str, int], dict[str, Any]]:
    return counts(engine), snapshot(engine, run_id)


def messages(r: Any) -> str:
    """The detail as one string (a validation error's detail is a list of errors)."""
    detail = r.json()["detail"]
    if isinstance(detail, list):
        return "; ".join(str(e["msg"]) for e in detail)
    return str(detail)


def started_run(client: TestClient, **spec: Any) -> tuple[int, list[dict[str, list[float]]]]:
    """A run with two accepted checkpoints (steps 0 and 1) and a metric."""
    rid = new_run(client, **spec)
    cps = random_walk(4, DIM, seed=3)
    for step in (0, 1):
        assert post(client, rid, step, cps[step], {"loss": 1.0}).status_code == 201
    return rid, cps


@pytest.fixture()
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    app = make_app(f"sqlite:///{tmp_path / 'sedmon.db'}", tmp_path)
    yield TestClient(app, headers=AUTH)
    app.state.engine.dispose()


def _huge_integers(client: TestClient, engine: Engine) -> None:
    rid, cps = started_run(client)
    before = state(engine, rid)
    cap = str(MAX_INT64)
    r = post(client, rid, 2**63, cps[2])
    assert r.status_code == 422 and cap in messages(r)
    r = post_json(client, f"/api/v1/runs/{rid}/metrics", {"step": 2**63, "values": {"a": 1.0}})
    assert r.status_code == 422 and cap in messages(r)
    r = post_json(
        client,
        f"/api/v1/runs/{rid}/metrics:batch",
        {"points": [{"step": 5, "values": {"a": 1.0}}, {"step": 2**64, "values": {"a": 2.0}}]},
    )
    assert r.status_code == 422 and cap in messages(r)
    r = client.get("/api/v1/runs", params={"offset": HUGE_ID})
    assert r.status_code == 422 and cap in messages(r)
    r = client.get(f"/api/v1/runs/{rid}/spectrum", params={"since_step": HUGE_ID})
    assert r.status_code == 422 and cap in messages(r)
    for big in (HUGE_ID, -HUGE_ID, MAX_INT64 + 1):
        not_found = f"run {big} not found"
        for r in (
            client.get(f"/api/v1/runs/{big}"),
            client.get(f"/api/v1/runs/{big}/spectrum"),
            client.get(f"/api/v1/runs/{big}/metrics"),
            client.post(f"/api/v1/runs/{big}/finish"),
            post(client, big, 7, cps[2]),
            post_json(client, f"/api/v1/runs/{big}/metrics", {"step": 1, "values": {"a": 1.0}}),
            post_json(
                client,
                f"/api/v1/runs/{big}/checkpoints:batch",
                {"checkpoints": [{"step": 7, "sketch": cps[2]}]},
            ),
        ):
            assert r.status_code == 404, (big, r.text)
            assert r.json()["detail"] == not_found
    # The largest step is fine.
    assert state(engine, rid) == before
    r = post_json(client, f"/api/v1/runs/{rid}/metrics", {"step": MAX_INT64, "values": {"a": 1.0}})
    assert r.status_code == 201, r.text


@pytest.mark.postgres
def test_integers_beyond_bigint_are_422_or_404_and_store_nothing(
    client: TestClient, engine: Engine
) -> None:
    _huge_integers(client, engine)


def test_integers_beyond_bigint_are_422_or_404_on_sqlite(sqlite_client: TestClient) -> None:
    app: Any = sqlite_client.app
    _huge_integers(sqlite_client, app.state.engine)


@pytest.mark.postgres
def test_metric_names_over_200_characters_are_422_on_every_route(
    client: TestClient, engine: Engine
) -> None:
    rid, cps = started_run(client)
    before = state(engine, rid)
    long = "m" * 201
    for r in (
        post(client, rid, 2, cps[2], {long: 1.0}),
        post_json(
            client,
            f"/api/v1/runs/{rid}/checkpoints:batch",
            {"checkpoints": [{"step": 2, "sketch": cps[2], "metrics": {long: 1.0}}]},
        ),
        post_json(client, f"/api/v1/runs/{rid}/metrics", {"step": 2, "values": {long: 1.0}}),
        post_json(
            client,
            f"/api/v1/runs/{rid}/metrics:batch",
            {"points": [{"step": 2, "values": {"ok": 1.0}}, {"step": 3, "values": {long: 2.0}}]},
        ),
        post_json(client, f"/api/v1/runs/{rid}/metrics", {"step": 2, "values": {"": 1.0}}),
    ):
        assert r.status_code == 422, r.text
        assert "metric names must be 1-200 characters" in messages(r)
    assert state(engine, rid) == before
    assert post(client, rid, 2, cps[2], {"m" * 200: 1.0}).status_code == 201


@pytest.mark.postgres
def test_nul_characters_are_422_and_store_nothing(client: TestClient, engine: Engine) -> None:
    rid, cps = started_run(client)
    before = state(engine, rid)
    nul = "a\u0000b"
    for r in (
        post(client, rid, 2, cps[2], {nul: 1.0}),
        post_json(client, f"/api/v1/runs/{rid}/metrics", {"step": 2, "values": {nul: 1.0}}),
        post_json(
            client,
            f"/api/v1/runs/{rid}/metrics:batch",
            {"points": [{"step": 2, "values": {nul: 1}}]},
        ),
    ):
        assert r.status_code == 422, r.text
        assert "metric names must not contain NUL" in messages(r)
    run = {"project": "proj", "name": unique(), "sketch": {"method": "countsketch", "dim": DIM}}
    for body, expected in (
        ({**run, "groups": ["attn", nul]}, "group names must not contain NUL"),
        ({**run, "config": {"opt": nul}}, "config.opt: strings must not contain NUL"),
        ({**run, "config": {"nested": [{nul: 1}]}}, "keys must not contain NUL"),
        ({**run, "name": nul}, "String should match pattern"),
        ({**run, "project": nul}, "String should match pattern"),
    ):
        r = post_json(client, "/api/v1/runs", body)
        assert r.status_code == 422, r.text
        assert expected in messages(r)
    r = client.get("/api/v1/runs", params={"name_prefix": nul})
    assert r.status_code == 422 and r.json()["detail"] == (
        "name_prefix must not contain NUL (\\u0000) characters"
    )
    r = client.get(f"/api/v1/runs/{rid}/metrics", params={"name": nul})
    assert r.status_code == 422 and "metric name must not contain NUL" in messages(r)
    tokens_before = counts(engine)
    r = post_json(client, "/api/v1/tokens", {"project": "proj", "scope": "read", "label": nul})
    assert r.status_code == 422 and "label must not contain NUL" in messages(r)
    assert counts(engine) == tokens_before
    assert state(engine, rid) == before


@pytest.mark.postgres
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
def test_non_finite_numbers_in_config_are_422(
    client: TestClient, engine: Engine, value: float
) -> None:
    before = counts(engine)
    body = {"project": "proj", "name": unique(), "config": {"opt": {"lr": [0.1, value]}}}
    r = post_json(client, "/api/v1/runs", body)  # json.dumps writes NaN and Infinity
    assert r.status_code == 422, r.text
    assert "config.opt.lr[1]: numbers must be finite" in messages(r)
    assert counts(engine) == before


def _huge_sketch_values(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid, cps = started_run(client, windows=[3])
    before = state(engine, rid)
    huge = [1e200 if i % 2 else -1e200 for i in range(DIM)]
    r = post(client, rid, 2, {"all": huge})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "sketch values of group(s) ['all'] exceed the cap of 1e+100 in absolute value"
    )
    r = post_json(
        client,
        f"/api/v1/runs/{rid}/checkpoints:batch",
        {"checkpoints": [{"step": 2, "sketch": cps[2]}, {"step": 3, "sketch": {"all": huge}}]},
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("checkpoint 1 (step 3): sketch")
    assert state(engine, rid) == before
    # Second guard: whatever gets past the cap, an overflowing checkpoint is refused whole.
    monkeypatch.setattr(ingest, "MAX_SKETCH_VALUE", float("inf"))
    r = post(client, rid, 2, {"all": huge})
    assert r.status_code == 422, r.text
    assert "overflow to non-finite numbers" in r.json()["detail"]
    assert state(engine, rid) == before
    monkeypatch.undo()
    # At the cap every number stays finite: accepted, finite spectra.
    for step, sign in ((2, 1.0), (3, -1.0), (4, 1.0)):
        at_cap = [sign * MAX_SKETCH_VALUE * (1 if i % 2 else -1) for i in range(DIM)]
        r = post(client, rid, step, {"all": at_cap})
        assert r.status_code == 201, r.text
    edge = r.json()["edge"]
    assert edge is not None and edge["gap_ratio"] > 0


@pytest.mark.postgres
def test_sketch_values_beyond_the_cap_are_422_and_store_nothing(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _huge_sketch_values(client, engine, monkeypatch)


def test_sketch_values_beyond_the_cap_are_422_on_sqlite(
    sqlite_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Any = sqlite_client.app
    _huge_sketch_values(sqlite_client, app.state.engine, monkeypatch)


@pytest.mark.postgres
def test_values_the_database_refuses_are_422_rolled_back(
    client: TestClient, engine: Engine
) -> None:
    # A run stored before group names were checked, with a NUL in a group name: its first
    # checkpoint reaches PostgreSQL through ingest's direct psycopg statement.
    with engine.begin() as conn:
        rid = conn.execute(
            tables.runs.insert()
            .values(
                project="proj",
                name=unique("legacy"),
                sketch_method="countsketch",
                sketch_dim=DIM,
                sketch_seed=0,
                groups=["ok", "a\u0000"],
                windows=[3],
                rank_rule="half",
                config={},
                state="running",
                created_at=datetime.now(UTC),
                num_checkpoints=0,
            )
            .returning(tables.runs.c.id)
        ).scalar_one()
    before = state(engine, rid)
    cps = random_walk(2, DIM, seed=5, groups=("ok", "a\u0000"))
    for _ in range(3):  # the pooled connections stay usable after the refusal
        r = post(client, rid, 0, cps[0], {"loss": 1.0})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("a value is out of range or invalid for the database")
        assert "0x00" in r.json()["detail"]  # PostgreSQL: invalid byte sequence ... 0x00
        assert state(engine, rid) == before
    # Through SQLAlchemy (a token label, which no schema checks for NUL yet).
    tokens_before = counts(engine)
    r = post_json(client, "/api/v1/tokens", {"project": "proj", "scope": "read", "label": "\u0000"})
    assert r.status_code == 422 and "NUL" in r.text
    assert counts(engine) == tokens_before
    assert client.get(f"/api/v1/runs/{rid}").status_code == 200


def test_sqlite_overflow_is_422_and_other_overflows_stay_500(tmp_path: Path) -> None:
    app: FastAPI = make_app(f"sqlite:///{tmp_path / 'sedmon.db'}", tmp_path)

    @app.get("/sqlite-overflow")
    def sqlite_overflow() -> None:
        with app.state.engine.begin() as conn:
            conn.execute(tables.tokens.delete().where(tables.tokens.c.id == 2**70))

    @app.get("/math-overflow")
    def math_overflow() -> None:
        raise OverflowError("math range error")

    client = TestClient(app, headers=AUTH, raise_server_exceptions=False)
    r = client.get("/sqlite-overflow")
    assert r.status_code == 422, r.text
    assert "too large to convert to SQLite INTEGER" in r.json()["detail"]
    assert client.get("/math-overflow").status_code == 500
    app.state.engine.dispose()
