"""Metrics: post values at any step, one step or a batch; read series back (JSON or CSV)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy import Engine

from sedmon_core.schemas import MetricsBatchIn, MetricsIn, text_problem
from sedmon_server.api.dependencies import (
    BAD_INPUT,
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    visible_run,
)
from sedmon_server.api.schemas import MetricsAck, MetricsBatchAck, MetricSeries, MetricsOut
from sedmon_server.auth import Principal, require
from sedmon_server.csv_export import metrics_csv
from sedmon_server.metric_store import upsert_metric_points, upsert_metrics
from sedmon_server.series import metric_names, metric_series

router = APIRouter(prefix="/api/v1/runs", tags=["metrics"])


def _non_finite(values: Mapping[str, float]) -> list[str]:
    return sorted(n for n, v in values.items() if not np.isfinite(v))


@router.post(
    "/{run_id}/metrics",
    response_model=MetricsAck,
    status_code=201,
    responses={**ERROR_RESPONSES, **NOT_FOUND, **BAD_INPUT},
)
def post_metrics(
    run_id: int,
    body: MetricsIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> MetricsAck:
    """Store metric values at a step (any step, checkpoint or not); a re-sent value replaces.

    Names (1-200 characters, no NUL) and the step (0..2**63-1) are checked by MetricsIn."""
    bad = _non_finite(body.values)
    with engine.begin() as conn:
        visible_run(conn, run_id, principal)
        if bad:
            raise HTTPException(422, f"non-finite metric values: {bad}")
        upsert_metrics(conn, run_id, body.step, body.values)
    request.app.state.observability.metric_points.inc(len(body.values))
    return MetricsAck(run_id=run_id, step=body.step, stored=len(body.values))


@router.post(
    "/{run_id}/metrics:batch",
    response_model=MetricsBatchAck,
    status_code=201,
    responses={**ERROR_RESPONSES, **NOT_FOUND, **BAD_INPUT},
)
@router.post(
    "/{run_id}/metrics/batch",
    response_model=MetricsBatchAck,
    status_code=201,
    include_in_schema=False,
)
def post_metrics_batch(
    run_id: int,
    body: MetricsBatchIn,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> MetricsBatchAck:
    """Store many steps' values under the single-post rules, all or nothing (one transaction).

    The first point refused refuses the batch; its detail names the point's index.
    """
    with engine.begin() as conn:
        visible_run(conn, run_id, principal)
        for i, point in enumerate(body.points):
            bad = _non_finite(point.values)
            if bad:
                raise HTTPException(
                    422, f"point {i} (step {point.step}): non-finite metric values: {bad}"
                )
        stored = upsert_metric_points(conn, run_id, ((p.step, p.values) for p in body.points))
    request.app.state.observability.metric_points.inc(stored)
    return MetricsBatchAck(run_id=run_id, points=len(body.points), stored=stored)


@router.get(
    "/{run_id}/metrics",
    response_model=MetricsOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"},
        **ERROR_RESPONSES,
        **NOT_FOUND,
    },
)
def get_metrics(
    run_id: int,
    principal: Annotated[Principal, Depends(require("read"))],
    engine: Annotated[Engine, Depends(engine_of)],
    name: Annotated[list[str] | None, Query(description="metric name(s); default all")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response | MetricsOut:
    """Series of the run's metrics in step order, every name or the ones asked for."""
    for n in name or ():
        problem = text_problem(n)
        if problem:
            raise HTTPException(422, f"metric name {problem}")
    with engine.connect() as conn:
        visible_run(conn, run_id, principal)
        names = name if name else metric_names(conn, run_id)
        data = [(n, *metric_series(conn, run_id, n)) for n in names]
    if format == "csv":
        return Response(
            metrics_csv([(n, s.tolist(), v.tolist()) for n, s, v in data]), media_type="text/csv"
        )
    return MetricsOut(
        run_id=run_id,
        series=[MetricSeries(name=n, steps=s.tolist(), values=v.tolist()) for n, s, v in data],
    )
