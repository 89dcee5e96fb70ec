"""Metric values per (run, name, step): upsert (a re-sent value replaces the stored one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sedmon_server import tables

_m = tables.metrics
_values: dict[str, Any] = {
    "run_id": bindparam("run_id"),
    "name": bindparam("name"),
    "step": bindparam("step"),
    "value": bindparam("value"),
}
_pg = pg_insert(_m).values(_values)
_lite = sqlite_insert(_m).values(_values)
# Built once so SQLAlchemy's statement cache serves every call (hot path of ingest).
UPSERT: dict[str, Any] = {
    "postgresql": _pg.on_conflict_do_update(
        index_elements=[_m.c.run_id, _m.c.name, _m.c.step], set_={"value": _pg.excluded.value}
    ),
    "sqlite": _lite.on_conflict_do_update(
        index_elements=[_m.c.run_id, _m.c.name, _m.c.step], set_={"value": _lite.excluded.value}
    ),
}


def upsert_metrics(conn: Connection, run_id: int, step: int, values: Mapping[str, float]) -> None:
    """Store each value at (run, name, step); the latest write of a (name, step) wins."""
    if not values:
        return
    rows = [
        {"run_id": run_id, "name": n, "step": step, "value": float(v)}
        for n, v in sorted(values.items())
    ]
    conn.execute(UPSERT[conn.dialect.name], rows)


def upsert_metric_points(
    conn: Connection, run_id: int, points: Iterable[tuple[int, Mapping[str, float]]]
) -> int:
    """Store many steps' values in one statement; returns the (name, step) values stored.

    A (name, step) given twice keeps the later value, as two single posts would.
    """
    merged: dict[tuple[str, int], float] = {}
    for step, values in points:
        for name, value in values.items():
            merged[(name, step)] = float(value)
    if not merged:
        return 0
    rows = [
        {"run_id": run_id, "name": n, "step": s, "value": v} for (n, s), v in sorted(merged.items())
    ]
    conn.execute(UPSERT[conn.dialect.name], rows)
    return len(rows)
