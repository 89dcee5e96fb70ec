"""Runs: create (idempotent), list, read one, finish (as finished or failed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from sqlalchemy import Engine

from sedmon_core.schemas import (
    MAX_INT64,
    PROJECT_PATTERN,
    FinishIn,
    RunCreate,
    RunList,
    RunOut,
    text_problem,
)
from sedmon_server.api.dependencies import (
    BAD_INPUT,
    BAD_PARAMS,
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    error,
    visible_run,
)
from sedmon_server.auth import Principal, check_project, require
from sedmon_server.runs_store import (
    RUN_STATES,
    RunConflict,
    create_run,
    finish_run,
    latest_edges,
    list_runs,
    run_out,
)

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


def _firing(request: Request, engine: Engine, run_ids: list[int]) -> dict[int, int]:
    """Firing alerts per run, from the alerts engine's hook when one is installed."""
    counter = getattr(request.app.state, "firing_alerts", None)
    if counter is None or not run_ids:
        return {}
    with engine.connect() as conn:
        return dict(counter(conn, run_ids))


@router.post(
    "",
    response_model=RunOut,
    status_code=201,
    responses={
        200: {"model": RunOut, "description": "The run exists with the same spec"},
        409: error("The run exists with a different spec"),
        **ERROR_RESPONSES,
        **BAD_INPUT,
    },
)
def create(
    body: RunCreate,
    response: Response,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> RunOut:
    """Create a run, or answer the existing (project, name) when its spec is the same."""
    check_project(principal, body.project)
    with engine.begin() as conn:
        try:
            row, created = create_run(conn, body)
        except RunConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        latest = latest_edges(conn, [row])[int(row["id"])]
    if not created:
        response.status_code = 200
    return run_out(row, latest)


@router.get("", response_model=RunList, responses={**ERROR_RESPONSES, **BAD_PARAMS})
def list_(
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
    engine: Annotated[Engine, Depends(engine_of)],
    project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None,
    state: Annotated[str | None, Query(description=f"one of {', '.join(RUN_STATES)}")] = None,
    name_prefix: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> RunList:
    """Runs newest first; a project token sees its own project only."""
    if state is not None and state not in RUN_STATES:
        raise HTTPException(422, f"state must be one of {', '.join(RUN_STATES)}")
    problem = None if name_prefix is None else text_problem(name_prefix)
    if problem:
        raise HTTPException(422, f"name_prefix {problem}")
    if project is not None:
        check_project(principal, project)
    elif principal.project is not None:
        project = principal.project
    with engine.connect() as conn:
        rows, total = list_runs(conn, project, state, name_prefix, limit, offset)
        latest = latest_edges(conn, rows)
    firing = _firing(request, engine, [int(r["id"]) for r in rows])
    return RunList(
        runs=[run_out(r, latest[int(r["id"])], firing.get(int(r["id"]), 0)) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{run_id}", response_model=RunOut, responses={**ERROR_RESPONSES, **NOT_FOUND})
def get(
    run_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> RunOut:
    """One run: spec, counts, state and the latest edge of every window (group all)."""
    with engine.connect() as conn:
        row = visible_run(conn, run_id, principal)
        latest = latest_edges(conn, [row])[run_id]
    return run_out(row, latest, _firing(request, engine, [run_id]).get(run_id, 0))


@router.post(
    "/{run_id}/finish",
    response_model=RunOut,
    responses={**ERROR_RESPONSES, **NOT_FOUND, **BAD_INPUT},
)
def finish(
    run_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
    body: Annotated[FinishIn | None, Body()] = None,
) -> RunOut:
    """Mark the run `finished`, or `failed` with `{"state": "failed"}` (no body: finished).

    Idempotent; a later call with the other state replaces it. Late checkpoints are still
    accepted.
    """
    state = body.state if body is not None else "finished"
    with engine.begin() as conn:
        visible_run(conn, run_id, principal)
        finish_run(conn, run_id, state)
        row = visible_run(conn, run_id, principal)
        latest = latest_edges(conn, [row])[run_id]
    request.app.state.observability.forget_run(run_id)
    return run_out(row, latest)
