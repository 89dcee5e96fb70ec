"""Dependencies the routers share: the engine, the caller's runs, error responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy import Connection, Engine

from sedmon_server.api.schemas import ErrorOut
from sedmon_server.auth import Principal
from sedmon_server.runs_store import get_run


def error(description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI error response: `description`, with the `{"detail": ...}` body schema."""
    return {"model": ErrorOut, "description": description, **extra}


# Every route behind `require` (a bearer token).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error(
        "Missing, unknown or revoked bearer token",
        headers={
            "WWW-Authenticate": {
                "description": 'Bearer realm="sedmon"',
                "schema": {"type": "string"},
            }
        },
    ),
    403: error("The token's scope or project does not allow this"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("No such run visible to this token")}
# Routes that read a JSON body (POST, PUT): the body can be malformed or too large.
BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: error("Malformed JSON"),
    413: error("Request body larger than SEDMON_MAX_BODY_BYTES"),
    422: error("Invalid body or query parameters"),
}
# Routes without a body (GET, DELETE): only their path and query parameters can be invalid.
BAD_PARAMS: dict[int | str, dict[str, Any]] = {
    422: error("Invalid path or query parameters"),
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
