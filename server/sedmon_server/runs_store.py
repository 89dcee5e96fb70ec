"""Runs in the database: create (idempotent on project + name), read, list, finish.

A run's spec is (sketch, groups, windows, rank_rule, config): creating a run whose
(project, name) exists answers the existing run when the spec is the same and a conflict
when it differs. `latest` is the edge of group "all" at the run's last checkpoint for
every window that has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from sedmon_core.schemas import (
    ALL_GROUP,
    MAX_INT64,
    EdgeSummary,
    RunCreate,
    RunOut,
    SketchSpecIn,
)
from sedmon_server import tables

RUN_STATES: tuple[str, ...] = ("running", "finished", "failed")


class RunConflict(Exception):
    """(project, name) exists with a different spec."""


def _spec(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sketch": {
            "method": row["sketch_method"],
            "dim": int(row["sketch_dim"]),
            "seed": int(row["sketch_seed"]),
        },
        "groups": list(row["groups"]),
        "windows": [int(w) for w in row["windows"]],
        "rank_rule": row["rank_rule"],
        "config": dict(row["config"]),
    }


def _spec_of(body: RunCreate) -> dict[str, Any]:
    return {
        "sketch": body.sketch.model_dump(),
        "groups": list(body.groups),
        "windows": list(body.windows),
        "rank_rule": body.rank_rule,
        "config": body.config,
    }


def create_run(conn: Connection, body: RunCreate) -> tuple[Mapping[str, Any], bool]:
    """Insert the run or return the existing one: (row, created). Raises RunConflict."""
    r = tables.runs
    existing = (
        conn.execute(select(r).where(r.c.project == body.project, r.c.name == body.name))
        .mappings()
        .first()
    )
    if existing is None:
        try:
            with conn.begin_nested():
                run_id = conn.execute(
                    r.insert()
                    .values(
                        project=body.project,
                        name=body.name,
                        sketch_method=body.sketch.method,
                        sketch_dim=body.sketch.dim,
                        sketch_seed=body.sketch.seed,
                        groups=list(body.groups),
                        windows=list(body.windows),
                        rank_rule=body.rank_rule,
                        config=body.config,
                        state="running",
                        created_at=datetime.now(UTC),
                        num_checkpoints=0,
                    )
                    .returning(r.c.id)
                ).scalar_one()
            return dict(conn.execute(select(r).where(r.c.id == run_id)).mappings().one()), True
        except IntegrityError:
            # Lost a race with another process creating the same run: compare with theirs.
            existing = (
                conn.execute(select(r).where(r.c.project == body.project, r.c.name == body.name))
                .mappings()
                .one()
            )
    if _spec(dict(existing)) != _spec_of(body):
        raise RunConflict(
            f"run {body.project}/{body.name} exists (id {existing['id']}) with a different spec"
        )
    return dict(existing), False


def can_exist(run_id: int) -> bool:
    """Whether a run could have this id: ids are positive BIGINTs. Asking the database
    about one it cannot hold fails (PostgreSQL: bigint out of range; SQLite: overflow)."""
    return 0 < run_id <= MAX_INT64


def get_run(conn: Connection, run_id: int) -> Mapping[str, Any] | None:
    """The run row, or None when there is no such run (whatever the id's size)."""
    if not can_exist(run_id):
        return None
    r = tables.runs
    row = conn.execute(select(r).where(r.c.id == run_id)).mappings().first()
    return None if row is None else dict(row)


def list_runs(
    conn: Connection,
    project: str | None,
    state: str | None,
    name_prefix: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Mapping[str, Any]], int]:
    """Runs newest first, filtered; (page, total matching)."""
    r = tables.runs
    conds: list[Any] = []
    if project is not None:
        conds.append(r.c.project == project)
    if state is not None:
        conds.append(r.c.state == state)
    if name_prefix:
        escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(r.c.name.like(escaped + "%", escape="\\"))
    total = conn.execute(select(func.count()).select_from(r).where(*conds)).scalar_one()
    rows = (
        conn.execute(select(r).where(*conds).order_by(r.c.id.desc()).limit(limit).offset(offset))
        .mappings()
        .all()
    )
    return [dict(row) for row in rows], int(total)


def finish_run(conn: Connection, run_id: int, state: str = "finished") -> None:
    """End the run as `finished` or `failed`; the same state again changes nothing, and
    another one replaces it (the latest report of how the run ended wins)."""
    r = tables.runs
    conn.execute(
        r.update()
        .where(r.c.id == run_id, r.c.state != state)
        .values(state=state, finished_at=datetime.now(UTC))
    )


def latest_edges(
    conn: Connection, rows: Sequence[Mapping[str, Any]]
) -> dict[int, list[EdgeSummary]]:
    """Per run id, the group-"all" edge of every window at the run's last checkpoint."""
    with_steps = [
        (int(row["id"]), int(row["last_step"])) for row in rows if row["last_step"] is not None
    ]
    out: dict[int, list[EdgeSummary]] = {int(row["id"]): [] for row in rows}
    if not with_steps:
        return out
    s, r = tables.spectra, tables.runs
    result = conn.execute(
        select(
            s.c.run_id,
            s.c.window,
            s.c.step,
            s.c.signal_rank,
            s.c.gap_ratio,
            s.c.edge_strength,
            s.c.phase,
        )
        .join(r, (r.c.id == s.c.run_id) & (r.c.last_step == s.c.step))
        .where(s.c.run_id.in_([rid for rid, _ in with_steps]), s.c.group_name == ALL_GROUP)
        .order_by(s.c.run_id, s.c.window)
    )
    for row in result:
        out[int(row.run_id)].append(
            EdgeSummary(
                step=int(row.step),
                window=int(row.window),
                group=ALL_GROUP,
                signal_rank=int(row.signal_rank),
                gap_ratio=float(row.gap_ratio),
                edge_strength=float(row.edge_strength),
                phase=row.phase or "warmup",
            )
        )
    return out


def run_out(row: Mapping[str, Any], latest: list[EdgeSummary], firing_alerts: int = 0) -> RunOut:
    spec = _spec(row)
    return RunOut(
        id=int(row["id"]),
        project=row["project"],
        name=row["name"],
        sketch=SketchSpecIn(**spec["sketch"]),
        groups=spec["groups"],
        windows=spec["windows"],
        rank_rule=spec["rank_rule"],
        config=spec["config"],
        state=row["state"],
        created_at=row["created_at"],
        last_step=row["last_step"],
        last_checkpoint_at=row["last_checkpoint_at"],
        num_checkpoints=int(row["num_checkpoints"]),
        latest=latest,
        firing_alerts=firing_alerts,
    )
