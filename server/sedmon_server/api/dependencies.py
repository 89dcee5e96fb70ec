"""Dependencies the routers share: the engine, the caller's runs, error responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy import Connection, Engine

from sedmon_server.auth import Principal
from sedmon_server.runs_store import get_run

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or revoked bearer token"},
    403: {"description": "The token's scope or project does not allow this"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run visible to this token"}
}
BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON"},
    413: {"description": "Request body larger than SEDMON_MAX_BODY_BYTES"},
    422: {"description": "Invalid body or query parameters"},
}


async def engine_of(request: Request) -> Engine:
    """The app's engine (async: no I/O, so FastAPI need not hop to a worker thread)."""
    engine: Engine = request.app.state.engine
    return engine


def visible_run(conn: Connection, run_id: int, principal: Principal) -> Mapping[str, Any]:
    """The run, when it exists and the caller's project may see it; 404 otherwise."""
    row = get_run(conn, run_id)
    if row is None or not principal.sees(row["project"]):
        raise HTTPException(404, f"run {run_id} not found")
    return row
