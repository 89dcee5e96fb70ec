"""Helpers of the server tests: apps, runs, sketches, database snapshots."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from sedmon_server import tables
from sedmon_server.app import create_app
from sedmon_server.settings import Settings

ADMIN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def make_app(url: str, home: Path, **settings: Any) -> FastAPI:
    return create_app(
        Settings(database_url=url, home=home, admin_token=ADMIN, **settings), extensions=()
    )


def unique(prefix: str = "run") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_run(client: TestClient, project: str = "proj", **spec: Any) -> int:
    body: dict[str, Any] = {
        "project": project,
        "name": unique(),
        "sketch": {"method": "countsketch", "dim": 16, "seed": 1},
        "windows": [3, 5],
    }
    body.update(spec)
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def random_walk(
    n: int, dim: int, seed: int = 0, groups: tuple[str, ...] = ("all",)
) -> list[dict[str, list[float]]]:
    """n checkpoints of positions per group: a drifting random walk of O(1e3) size."""
    rng = np.random.default_rng(seed)
    out = []
    pos = {g: rng.normal(scale=1e3, size=dim) for g in groups}
    drift = {g: rng.normal(size=dim) for g in groups}
    for _ in range(n):
        out.append({g: pos[g].tolist() for g in groups})
        for g in groups:
            pos[g] = pos[g] + drift[g] * rng.uniform(0.5, 1.5) + rng.normal(scale=0.3, size=dim)
    return out


def post(
    client: TestClient,
    run_id: int,
    step: int,
    sketch: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
) -> Any:
    return post_json(
        client,
        f"/api/v1/runs/{run_id}/checkpoints",
        {"step": step, "sketch": sketch, "metrics": dict(metrics or {})},
    )


def post_json(client: TestClient, url: str, body: Any) -> Any:
    """POST a body as Python's json writes it (NaN and Infinity included, as clients send)."""
    return client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})


def snapshot(engine: Engine, run_id: int) -> dict[str, Any]:
    """Everything stored for a run: row counts per table, the run row and its group state."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for t in (tables.checkpoints, tables.metrics, tables.spectra, tables.group_state):
            out[t.name] = conn.execute(
                select(func.count()).select_from(t).where(t.c.run_id == run_id)
            ).scalar_one()
        run = conn.execute(select(tables.runs).where(tables.runs.c.id == run_id)).mappings().one()
        out["run"] = dict(run)
        out["state"] = [
            tuple(r)
            for r in conn.execute(
                select(tables.group_state)
                .where(tables.group_state.c.run_id == run_id)
                .order_by(tables.group_state.c.group_name)
            )
        ]
    return out
