"""The FastAPI application factory.

    app = create_app(Settings(database_url=...), observers=[my_alert_engine])

`create_app` connects, applies migrations (unless settings.migrate_on_start is off) and
mounts the routers. `app.state` holds: settings, engine, observers (CheckpointObserver,
see sedmon_server.ingest), observability (Prometheus; `record_alert` hook), token_cache
(sedmon_server.auth.TokenCache) and firing_alerts (optional `(conn, run_ids) -> {run_id:
count}` the alerts engine sets so run listings show firing alerts).

Extensions: for each module in `extensions` (default: sedmon_server.alerts and
sedmon_server.dashboard) that exists and defines `install(app: FastAPI) -> None`, the
factory calls it after the core routers are mounted; there the alerts engine appends its
observer to `app.state.observers`, mounts its routers and sets `app.state.firing_alerts`,
and the dashboard mounts its pages. Bad input answers 4xx {"detail": ...}, never 500:
malformed JSON 400, a body over SEDMON_MAX_BODY_BYTES 413, invalid fields 422. The
schemas bound what reaches the database (sedmon_core.schemas); as a safety net, a value
the database still refuses (sqlalchemy.exc.DataError, psycopg.DataError from ingest's
direct statements, SQLite's OverflowError for an integer beyond 64 bits) answers 422,
logged at warning: the exception left the route's `with engine.begin()` block (or
ingest's), which rolled the transaction back, so nothing was stored.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import DataError as PsycopgDataError
from sqlalchemy import Engine
from sqlalchemy.exc import DataError as SQLAlchemyDataError

from sedmon_server import __doc__ as package_doc
from sedmon_server import migrations
from sedmon_server.api import analysis, checkpoints, health, metrics, runs, spectrum, tokens
from sedmon_server.auth import TokenCache
from sedmon_server.body_limit import BodyLimit
from sedmon_server.database import make_engine
from sedmon_server.ingest import CheckpointObserver
from sedmon_server.observability import Observability
from sedmon_server.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS: tuple[str, ...] = ("sedmon_server.alerts", "sedmon_server.dashboard")


def _json_safe(errors: Sequence[Any]) -> Any:
    # Validation errors may echo NaN or bytes from the input; keep the answer valid JSON.
    out = []
    for err in errors:
        e = dict(err)
        e.pop("input", None)
        e.pop("ctx", None)
        out.append(e)
    return jsonable_encoder(out)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
    return JSONResponse({"detail": _json_safe(errors)}, status_code=422)


def _data_error_detail(exc: Exception) -> str:
    if isinstance(exc, SQLAlchemyDataError):
        exc = exc.orig if isinstance(exc.orig, Exception) else exc
    # The database's first line names the problem ("bigint out of range", "value too long
    # for type character varying(200)"); the rest echoes the statement and its parameters.
    first = (str(exc).strip().splitlines() or ["invalid value"])[0][:200]
    first = first.encode("utf-8", "replace").decode("utf-8")
    return f"a value is out of range or invalid for the database: {first}"


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OverflowError) and "SQLite" not in str(exc):
        return await _unexpected(request, exc)  # numeric code, not the database
    log.warning(
        "database refused a value on %s %s: %s",
        request.method,
        request.url.path,
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
    return JSONResponse({"detail": _data_error_detail(exc)}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(
    settings: Settings | None = None,
    observers: Sequence[CheckpointObserver] = (),
    engine: Engine | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> FastAPI:
    """A ready application on the configured database (migrated unless told not to)."""
    settings = settings or Settings()
    engine = engine or make_engine(
        settings.resolved_database_url(), settings.pool_size, settings.pool_max_overflow
    )
    if settings.migrate_on_start:
        migrations.upgrade(engine)
    app = FastAPI(
        title="sedmon",
        version="0.1.0",
        description=(package_doc or "").strip()
        + "\n\nAuth: `Authorization: Bearer <token>` on every /api/v1 route.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.observers = list(observers)
    app.state.observability = Observability(settings.active_run_seconds, settings.max_gauge_runs)
    app.state.token_cache = TokenCache(settings.token_cache_seconds)
    app.state.firing_alerts = None
    app.add_exception_handler(RequestValidationError, _validation_error)
    for data_error in (SQLAlchemyDataError, PsycopgDataError, OverflowError):
        app.add_exception_handler(data_error, _data_error)
    app.add_exception_handler(Exception, _unexpected)
    for module in (health, runs, checkpoints, metrics, spectrum, analysis, tokens):
        app.include_router(module.router)
    for name in extensions:
        _install(app, name)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _install(app: FastAPI, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return  # not written (yet): the server runs without it
        raise
    install = getattr(module, "install", None)
    if callable(install):
        install(app)


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and the multi-worker `serve`: settings from SEDMON_*."""
    return create_app(Settings())
