"""Checkpoints: one at a time (the training job) or a batch (backfill, all or nothing).

The hot path of the server: the routes answer a Response they serialised themselves, so
FastAPI does not validate the answer against the response model a second time (the model
still documents it). Ingest runs in a worker thread under a per-process limiter of
`ingest_concurrency` (default: the pool size), so a burst of posts queues in the process
instead of taking every pooled and overflow connection at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import Engine

from sedmon_core.schemas import (
    CheckpointAck,
    CheckpointBatchAck,
    CheckpointBatchIn,
    CheckpointIn,
)
from sedmon_server.api.dependencies import (
    BAD_INPUT,
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    error,
)
from sedmon_server.auth import Principal, require
from sedmon_server.ingest import IngestError, IngestOutcome, ingest
from sedmon_server.observability import Observability

router = APIRouter(prefix="/api/v1/runs", tags=["checkpoints"])

INGEST_RESPONSES = {
    **ERROR_RESPONSES,
    **NOT_FOUND,
    **BAD_INPUT,
    409: error("Step not after the run's last, or the same step with another payload"),
    422: error("Wrong groups or lengths, non-finite numbers, or an invalid body"),
}


def _run(
    request: Request,
    engine: Engine,
    principal: Principal,
    run_id: int,
    checkpoints: list[CheckpointIn],
    endpoint: str,
) -> IngestOutcome:
    obs: Observability = request.app.state.observability
    started = time.perf_counter()
    try:
        outcome = ingest(engine, run_id, checkpoints, principal.sees, request.app.state.observers)
    except IngestError as exc:
        obs.checkpoints.labels(outcome=str(exc.status_code)).inc(len(checkpoints))
        raise HTTPException(exc.status_code, exc.detail) from exc
    finally:  # refused ingests too: a slow refusal is a slow ingest
        obs.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
    obs.checkpoints.labels(outcome="created").inc(outcome.created)
    obs.checkpoints.labels(outcome="unchanged").inc(outcome.unchanged)
    last = outcome.acks[-1] if outcome.acks else None
    if outcome.created and last is not None and last.edge is not None:
        obs.record_edge(
            run_id,
            outcome.run["project"],
            outcome.run["name"],
            last.edge.gap_ratio,
            last.edge.signal_rank,
            step=last.step,
        )
    return outcome


T = TypeVar("T")


async def in_ingest_thread(request: Request, fn: Callable[[], T]) -> T:
    """Run `fn` in a worker thread under the app's ingest limiter."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "ingest_limiter", None)
    if limiter is None:  # made on the event loop, on first use
        settings = state.settings
        limiter = anyio.CapacityLimiter(settings.ingest_concurrency or settings.pool_size)
        state.ingest_limiter = limiter
    return await anyio.to_thread.run_sync(fn, limiter=limiter)


def _json(model: BaseModel, status_code: int) -> Response:
    return Response(model.model_dump_json(), status_code, media_type="application/json")


@router.post(
    "/{run_id}/checkpoints",
    response_model=CheckpointAck,
    status_code=201,
    responses={
        200: {"model": CheckpointAck, "description": "Same step, same payload"},
        **INGEST_RESPONSES,
    },
)
async def post_checkpoint(
    run_id: int,
    body: CheckpointIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> Response:
    """Ingest the sketch (positions) of one checkpoint; answers the edge of the smallest window."""
    job = partial(_run, request, engine, principal, run_id, [body], "checkpoint")
    outcome = await in_ingest_thread(request, job)
    return _json(outcome.acks[0], 201 if outcome.created else 200)


@router.post(
    "/{run_id}/checkpoints:batch",
    response_model=CheckpointBatchAck,
    status_code=201,
    responses={
        200: {"model": CheckpointBatchAck, "description": "Every checkpoint was known"},
        **INGEST_RESPONSES,
    },
)
@router.post(
    "/{run_id}/checkpoints/batch",
    response_model=CheckpointBatchAck,
    status_code=201,
    include_in_schema=False,
)
async def post_batch(
    run_id: int,
    body: CheckpointBatchIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> Response:
    """Backfill many checkpoints in step order under the single-checkpoint rules, all or nothing."""
    job = partial(_run, request, engine, principal, run_id, list(body.checkpoints), "batch")
    outcome = await in_ingest_thread(request, job)
    ack = CheckpointBatchAck(
        run_id=run_id,
        created=outcome.created,
        unchanged=outcome.unchanged,
        last=outcome.acks[-1] if outcome.acks else None,
    )
    return _json(ack, 201 if outcome.created else 200)
