"""Ingest's two write paths (PostgreSQL: one statement; SQLite: Core statements) store the same."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servertest import AUTH, make_app, new_run, post, post_json, random_walk
from sqlalchemy import Engine, select

from sedmon_server import tables

pytestmark = pytest.mark.postgres

GROUPS = ("attn", "mlp")


def _ingest(client: TestClient) -> int:
    """A two-group run: checkpoints one by one with metrics, a re-sent one, then a batch."""
    rid = new_run(client, groups=list(GROUPS), windows=[3, 5])
    cps = random_walk(14, 16, seed=4, groups=GROUPS)
    for i, cp in enumerate(cps[:9]):
        metrics = {"loss": 1.0 / (i + 1), "acc": 0.1 * i} if i % 3 else {}
        assert post(client, rid, 10 * i, cp, metrics).status_code == 201
    assert post(client, rid, 80, cps[8], {"acc": 0.8, "loss": 1.0 / 9}).status_code == 200
    batch = [
        {"step": 10 * i, "sketch": cp, "metrics": {"loss": float(i)}}
        for i, cp in enumerate(cps[9:], start=9)
    ]
    r = post_json(client, f"/api/v1/runs/{rid}/checkpoints:batch", {"checkpoints": batch})
    assert r.status_code == 201, r.text
    return rid


def _stored(engine: Engine, run_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for t, order in (
            (tables.checkpoints, ("step",)),
            (tables.spectra, ("group_name", "window", "step")),
            (tables.metrics, ("name", "step")),
            (tables.group_state, ("group_name",)),
        ):
            cols = [c for c in t.c if c.name not in ("run_id", "created_at")]
            rows = conn.execute(
                select(*cols).where(t.c.run_id == run_id).order_by(*(t.c[o] for o in order))
            )
            out[t.name] = [tuple(row) for row in rows]
        r = tables.runs
        run = conn.execute(
            select(r.c.last_step, r.c.num_checkpoints, r.c.group_dims, r.c.edge_series).where(
                r.c.id == run_id
            )
        ).one()
        out["run"] = tuple(run)
    return out


def test_postgres_stores_exactly_what_sqlite_stores(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    lite = make_app("", tmp_path)
    lite_client = TestClient(lite, headers=AUTH)
    on_postgres = _stored(engine, _ingest(client))
    on_sqlite = _stored(lite.state.engine, _ingest(lite_client))
    assert len(on_postgres["checkpoints"]) == 14
    assert len(on_postgres["spectra"]) == 3 * (11 + 9)  # attn, mlp, all; 13 deltas, W 3 and 5
    assert len(on_postgres["metrics"]) == 2 * 6 + 5
    assert on_postgres == on_sqlite
    lite.state.engine.dispose()


def test_checkpoint_times_are_stored_to_the_microsecond(client: TestClient, engine: Engine) -> None:
    before = datetime.now(UTC)
    rid = _ingest(client)
    after = datetime.now(UTC)
    c, r = tables.checkpoints, tables.runs
    with engine.connect() as conn:
        times = (
            conn.execute(select(c.c.created_at).where(c.c.run_id == rid).order_by(c.c.step))
            .scalars()
            .all()
        )
        last = conn.execute(select(r.c.last_checkpoint_at).where(r.c.id == rid)).scalar_one()
    assert before <= times[0] and times == sorted(times) and times[-1] <= after
    assert last == times[-1]  # the same instant, written through two different parameters
