"""Run-level analyses: coupling, lag-sweep, phases, shifts, reliability (sedmon_core on demand)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine

from sedmon_core.schemas import ALL_GROUP
from sedmon_server import analyses
from sedmon_server.analyses import AnalysisName
from sedmon_server.api.dependencies import (
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    error,
    visible_run,
)
from sedmon_server.api.schemas import AnalysisOut
from sedmon_server.auth import Principal, require
from sedmon_server.csv_export import analysis_csv

router = APIRouter(prefix="/api/v1/runs", tags=["analysis"])

ANALYSIS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or with format=csv the result's series (docs/api.md)",
    },
    **ERROR_RESPONSES,
    **NOT_FOUND,
    422: error("Unknown analysis, window, group, metric, series or method; too little data"),
}


def _window(run: Mapping[str, Any], window: int | None) -> int:
    windows = [int(w) for w in run["windows"]]
    if window is None:
        return min(windows)
    if window not in windows:
        raise analyses.AnalysisError(f"window must be one of the run's windows {windows}")
    return window


def _run_analysis(
    conn: Connection,
    run: Mapping[str, Any],
    name: str,
    window: int | None,
    group: str,
    metric: str | None,
    method: str | None,
    series: str,
    max_lag: int,
    detrend: bool,
    last: int,
) -> dict[str, Any]:
    """The answer: AnalysisOut's fields, `result` as computed (AnalysisOut documents it)."""
    run_id = int(run["id"])
    groups = list(run["groups"])
    if group != ALL_GROUP and group not in groups:
        raise analyses.AnalysisError(f"group must be 'all' or one of {groups}")
    w = _window(run, window)
    if name in ("coupling", "lag-sweep") and not metric:
        raise analyses.AnalysisError(f"{name} needs ?metric=NAME (e.g. val_loss)")
    used_window: int | None = w
    if name == "coupling":
        assert metric is not None
        n, result = analyses.coupling(conn, run_id, group, w, metric, series, max_lag, detrend)
    elif name == "lag-sweep":
        assert metric is not None
        used_window = None
        windows = sorted(int(x) for x in run["windows"])
        n, result = analyses.lag_sweep(
            conn, run_id, group, windows, metric, series, max_lag, detrend
        )
    elif name == "phases":
        method = method or "threshold"
        n, result = analyses.phases(conn, run_id, group, w, method, series, metric)
    elif name == "shifts":
        method = method or "all"
        n, result = analyses.shifts(conn, run_id, group, w, method, series)
    else:
        noise_dim = None if run["sketch_method"] == "identity" else int(run["sketch_dim"])
        if noise_dim is not None and group == ALL_GROUP and groups != [ALL_GROUP]:
            noise_dim *= len(groups)
        rule = method or run["rank_rule"]
        method = rule
        n, result = analyses.reliability(
            conn,
            run_id,
            group,
            groups,
            w,
            max(int(x) for x in run["windows"]),
            rule,
            noise_dim,
            last,
        )
    return {
        "run_id": run_id,
        "analysis": name,
        "window": used_window,
        "group": group,
        "metric": metric,
        "method": method,
        "n": n,
        "result": result,
    }


@router.get("/{run_id}/analysis/{name}", response_model=AnalysisOut, responses=ANALYSIS_RESPONSES)
def get_analysis(
    run_id: int,
    principal: Annotated[Principal, Depends(require("read"))],
    engine: Annotated[Engine, Depends(engine_of)],
    name: Annotated[AnalysisName, Path(description="The analysis (docs/api.md#analyses)")],
    window: Annotated[int | None, Query(description="default: the run's smallest")] = None,
    group: Annotated[str, Query(max_length=100)] = ALL_GROUP,
    metric: Annotated[str | None, Query(max_length=200, description="e.g. val_loss")] = None,
    method: Annotated[
        str | None,
        Query(
            description="phases: peak|derivative|threshold; shifts: max_derivative|cusum|"
            "ttest|all; reliability: a rank rule"
        ),
    ] = None,
    series: Annotated[str, Query(description="gap_ratio (default), a scalar, or ratio_j")] = (
        "gap_ratio"
    ),
    max_lag: Annotated[int, Query(ge=1, le=20)] = 5,
    detrend: bool = True,
    last: Annotated[int, Query(ge=10, le=4000, description="reliability: deltas used")] = 2000,
    format: Annotated[
        Literal["json", "csv"], Query(description="csv: the result's series (docs/api.md)")
    ] = "json",
) -> Response:
    """Computed from the stored series; metrics aligned to checkpoints (docs/api.md)."""
    with engine.connect() as conn:
        run = visible_run(conn, run_id, principal)
        try:
            out = _run_analysis(
                conn,
                run,
                name.value,
                window,
                group,
                metric,
                method,
                series,
                max_lag,
                detrend,
                last,
            )
        except ValueError as exc:  # AnalysisError and sedmon_core's own refusals
            raise HTTPException(422, str(exc)) from exc
    if format == "csv":
        return Response(analysis_csv(name.value, out["result"]), media_type="text/csv")
    return JSONResponse(out)
