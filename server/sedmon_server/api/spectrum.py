"""The stored spectrum of one (run, group, window), as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import Engine

from sedmon_core.schemas import ALL_GROUP, MAX_INT64, SpectrumOut
from sedmon_server.api.dependencies import (
    BAD_PARAMS,
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    visible_run,
)
from sedmon_server.auth import Principal, require
from sedmon_server.csv_export import spectrum_csv
from sedmon_server.series import SCALAR_FIELDS, spectrum_series

router = APIRouter(prefix="/api/v1/runs", tags=["spectra"])

POINT_KEYS: tuple[str, ...] = ("step", "sigma", "ratios", *SCALAR_FIELDS)


@router.get(
    "/{run_id}/spectrum",
    response_model=SpectrumOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"},
        **ERROR_RESPONSES,
        **NOT_FOUND,
        **BAD_PARAMS,
    },
)
def get_spectrum(
    run_id: int,
    principal: Annotated[Principal, Depends(require("read"))],
    engine: Annotated[Engine, Depends(engine_of)],
    window: Annotated[int | None, Query(description="default: the run's smallest")] = None,
    group: Annotated[str, Query(max_length=100)] = ALL_GROUP,
    since_step: Annotated[
        int | None,
        Query(ge=-MAX_INT64 - 1, le=MAX_INT64, description="only points after this step"),
    ] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """Every stored window spectrum, in step order; `step` is the window's last checkpoint."""
    with engine.connect() as conn:
        run = visible_run(conn, run_id, principal)
        windows = [int(w) for w in run["windows"]]
        w = min(windows) if window is None else window
        if w not in windows:
            raise HTTPException(422, f"window must be one of the run's windows {windows}")
        if group != ALL_GROUP and group not in run["groups"]:
            raise HTTPException(422, f"group must be 'all' or one of {run['groups']}")
        series = spectrum_series(conn, run_id, group, w, since_step)
    if format == "csv":
        return Response(spectrum_csv(series), media_type="text/csv")
    columns = (  # sigma and ratios rows stay numpy: orjson writes them without Python floats
        series.steps.tolist(),
        list(series.sigma),
        list(series.ratios),
        *(series.scalars[f].tolist() for f in SCALAR_FIELDS),
    )
    points = [dict(zip(POINT_KEYS, values, strict=True)) for values in zip(*columns, strict=True)]
    body = {
        "run_id": run_id,
        "window": w,
        "group": group,
        "rank_rule": run["rank_rule"],
        "points": points,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
