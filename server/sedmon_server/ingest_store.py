"""Ingest's statements: one to lock a run and read its group state, one to write a call's rows.

Ingest costs a fixed number of round trips however many groups, windows and metrics a
checkpoint has (bench/ingest.py measures it):

1. `lock_run_with_state`: the run row (PostgreSQL `FOR UPDATE OF runs`) left-joined with its
   group_state rows, one SELECT;
2. `write_rows`: on PostgreSQL one statement, whose data-modifying CTEs insert the
   checkpoints, spectra and metrics (upsert) from one JSON parameter per table
   (`json_populate_recordset`) and upsert the group state from arrays (`unnest`) while the
   main UPDATE writes the run row; one fixed SQL text for any number of rows, so psycopg
   prepares it once per connection. The group state's arrays travel in psycopg's binary
   format (`%(name)b`): text array literals of bytea cost a regex pass over every byte.
   On SQLite (no data-modifying CTEs) the same rows go through bulk SQLAlchemy Core
   statements. When ingest isolates its observers with savepoints (only after one failed,
   see sedmon_server.ingest), the first SAVEPOINT rides in the same round trip (a psycopg
   pipeline).

Both run inside the caller's transaction; neither commits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg.rows import dict_row
from sqlalchemy import Column, Connection, Table, bindparam, select
from sqlalchemy.dialects import postgresql

from sedmon_server import tables
from sedmon_server.database import driver_connection
from sedmon_server.metric_store import UPSERT

_r, _gs = tables.runs, tables.group_state
_STATE_COLUMNS = ("group_name", "position", "deltas", "gram", "count")
_STATE_PREFIX = "gs_"

LOCK_RUN = select(_r).where(_r.c.id == bindparam("run_id"))
_RUN_WITH_STATE = (
    select(_r, *(_gs.c[c].label(_STATE_PREFIX + c) for c in _STATE_COLUMNS))
    .select_from(_r.outerjoin(_gs, _gs.c.run_id == _r.c.id))
    .where(_r.c.id == bindparam("run_id"))
)
_PG_READ = str(_RUN_WITH_STATE.with_for_update(of=_r).compile(dialect=postgresql.psycopg.dialect()))


@dataclass
class IngestRows:
    """What one ingest call writes: new rows (as column -> value dicts, run_id left out)
    and the run's new group state and run-row values."""

    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    spectra: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    """One per group: group_name, position, deltas, gram, count, and `exists` (stored)."""
    run: dict[str, Any] = field(default_factory=dict)
    """last_step, last_checkpoint_at, num_checkpoints, group_dims, edge_series."""


def lock_run(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """The run row, locked until the transaction ends (None when there is no such run)."""
    stmt = LOCK_RUN.with_for_update() if conn.dialect.name == "postgresql" else LOCK_RUN
    row = conn.execute(stmt, {"run_id": run_id}).mappings().first()
    return None if row is None else dict(row)


def lock_run_with_state(
    conn: Connection, run_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The locked run row and its group_state rows (group_name, position, deltas, gram,
    count), in one statement; None when there is no such run."""
    if conn.dialect.name == "postgresql":
        # Binary results: the state's bytea arrives as bytes, not as hex text to decode. In a
        # pipeline, the transaction's BEGIN travels with the SELECT (one round trip, not two).
        pg = driver_connection(conn)
        with pg.pipeline(), pg.cursor(row_factory=dict_row, binary=True) as cur:
            cur.execute(_PG_READ, {"run_id": run_id})
            rows: Sequence[Mapping[Any, Any]] = cur.fetchall()
    else:
        rows = conn.execute(_RUN_WITH_STATE, {"run_id": run_id}).mappings().all()
    if not rows:
        return None
    run = {c.name: rows[0][c.name] for c in _r.c}
    states = [
        {c: row[_STATE_PREFIX + c] for c in _STATE_COLUMNS}
        for row in rows
        if row[_STATE_PREFIX + "group_name"] is not None
    ]
    return run, states


def write_rows(conn: Connection, run_id: int, rows: IngestRows, savepoint: str | None) -> None:
    """Write an ingest call's rows (see the module docstring), then open SAVEPOINT
    `savepoint` when given, in the same round trip on PostgreSQL (a pipeline)."""
    if conn.dialect.name == "postgresql":
        pg = driver_connection(conn)
        with pg.pipeline():
            pg.execute(_PG_WRITE, _pg_params(run_id, rows))
            if savepoint is not None:
                pg.execute(f"SAVEPOINT {savepoint}")
    else:
        _write_core(conn, run_id, rows)
        if savepoint is not None:
            conn.exec_driver_sql(f"SAVEPOINT {savepoint}")


# -- PostgreSQL: one statement ----------------------------------------------------------------

_PG = postgresql.dialect()
_RUN_UPDATE_COLUMNS = (
    "last_step",
    "last_checkpoint_at",
    "num_checkpoints",
    "group_dims",
    "edge_series",
)


def _columns(table: Table) -> list[Column[Any]]:
    return [c for c in table.c if c.name != "run_id"]


def _unnest_insert(table: Table) -> str:
    """INSERT of one row per array element; parameters `<table>_<column>`, one array each."""
    cols = _columns(table)
    names = ", ".join(f'"{c.name}"' for c in cols)
    arrays = ", ".join(f"%({table.name}_{c.name})b::{c.type.compile(dialect=_PG)}[]" for c in cols)
    return (
        f"INSERT INTO {table.name} (run_id, {names}) "
        f"SELECT %(run_id)s::bigint, * FROM unnest({arrays})"
    )


def _json_insert(table: Table) -> str:
    """INSERT of the rows of one JSON array parameter `<table>` (objects keyed by column):
    one parameter for any number of rows and columns, decoded by PostgreSQL's own JSON
    reader. Used for the tables with many small columns (psycopg adapts each array
    parameter in Python; thirty of them cost more than the rest of the write)."""
    names = ", ".join(f'"{c.name}"' for c in _columns(table))
    return (
        f"INSERT INTO {table.name} (run_id, {names}) "
        f"SELECT %(run_id)s::bigint, {names} "
        f"FROM json_populate_recordset(NULL::{table.name}, %({table.name})s::json)"
    )


_JSON_TABLES = (tables.checkpoints, tables.spectra, tables.metrics)
"""Rows sent as one JSON parameter per table; group_state's large blobs travel as binary
arrays (hex in JSON would double them)."""


def _json_value(value: Any) -> Any:
    """A column value as PostgreSQL's JSON record reader takes it: bytea as hex text,
    non-finite floats as the float8 input words (JSON numbers cannot be non-finite)."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _json_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return orjson.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows]).decode()


def _excluded(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}" = excluded."{n}"' for n in names)


_PG_WRITE = (
    f"WITH new_checkpoints AS ({_json_insert(tables.checkpoints)}), "
    f"new_spectra AS ({_json_insert(tables.spectra)}), "
    f"new_metrics AS ({_json_insert(tables.metrics)} "
    f"ON CONFLICT (run_id, name, step) DO UPDATE SET {_excluded(['value'])}), "
    f"new_state AS ({_unnest_insert(tables.group_state)} "
    f"ON CONFLICT (run_id, group_name) DO UPDATE SET "
    f"{_excluded(['position', 'deltas', 'gram', 'count'])}) "
    "UPDATE runs SET "
    + ", ".join(
        f"{c} = %({c})s::json" if c == "group_dims" else f"{c} = %({c})b"
        for c in _RUN_UPDATE_COLUMNS
    )
    + " WHERE id = %(run_id)s::bigint"
)


def _pg_params(run_id: int, rows: IngestRows) -> dict[str, Any]:
    params: dict[str, Any] = {"run_id": run_id}
    for table, values in zip(
        _JSON_TABLES, (rows.checkpoints, rows.spectra, rows.metrics), strict=True
    ):
        params[table.name] = _json_rows(values)
    for col in _columns(tables.group_state):
        params[f"group_state_{col.name}"] = [v[col.name] for v in rows.states]
    for name in _RUN_UPDATE_COLUMNS:
        params[name] = rows.run[name]
    dims = rows.run["group_dims"]
    params["group_dims"] = None if dims is None else orjson.dumps(dims).decode()
    return params


# -- any other database: bulk Core statements --------------------------------------------------

_INSERT_STATE = _gs.insert()
_UPDATE_STATE = (
    _gs.update()
    .where(_gs.c.run_id == bindparam("b_run"), _gs.c.group_name == bindparam("b_group"))
    .values({c: bindparam(c) for c in ("position", "deltas", "gram", "count")})
)
_UPDATE_RUN = (
    _r.update()
    .where(_r.c.id == bindparam("b_id"))
    .values({c: bindparam(c) for c in _RUN_UPDATE_COLUMNS})
)


def _with_run(run_id: int, values: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"run_id": run_id, **v} for v in values]


def _write_core(conn: Connection, run_id: int, rows: IngestRows) -> None:
    if rows.checkpoints:
        conn.execute(tables.checkpoints.insert(), _with_run(run_id, rows.checkpoints))
    if rows.spectra:
        conn.execute(tables.spectra.insert(), _with_run(run_id, rows.spectra))
    if rows.metrics:
        conn.execute(UPSERT[conn.dialect.name], _with_run(run_id, rows.metrics))
    for st in rows.states:
        values = {c: st[c] for c in ("position", "deltas", "gram", "count")}
        if st["exists"]:
            conn.execute(_UPDATE_STATE, {"b_run": run_id, "b_group": st["group_name"], **values})
        else:
            conn.execute(
                _INSERT_STATE, {"run_id": run_id, "group_name": st["group_name"], **values}
            )
    conn.execute(_UPDATE_RUN, {"b_id": run_id, **rows.run})
