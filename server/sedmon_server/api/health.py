"""Liveness, readiness (the database answers) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, text

from sedmon_server.api.dependencies import engine_of
from sedmon_server.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database does not answer"}},
)
def readyz(engine: Annotated[Engine, Depends(engine_of)], response: Response) -> Health:
    """The database answers a query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        response.status_code = 503
        return Health(status="unavailable", database=type(exc).__name__)
    return Health(status="ok", database=engine.dialect.name)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this server: every worker of a multi-worker `serve`."""
    return Response(request.app.state.observability.render(), media_type=CONTENT_TYPE_LATEST)
