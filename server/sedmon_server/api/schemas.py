"""Wire models only the server answers with (the shared ones live in sedmon_core.schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sedmon_core.schemas import PROJECT_PATTERN, text_problem


class MetricsAck(BaseModel):
    run_id: int
    step: int
    stored: int


class MetricsBatchAck(BaseModel):
    run_id: int
    points: int = Field(description="Points in the batch")
    stored: int = Field(description="(name, step) values written (a repeated pair counts once)")


class MetricSeries(BaseModel):
    name: str
    steps: list[int]
    values: list[float]


class MetricsOut(BaseModel):
    run_id: int
    series: list[MetricSeries]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, pattern=PROJECT_PATTERN)
    scope: Literal["read", "ingest", "admin"]
    label: str | None = Field(default=None, max_length=200)

    @field_validator("label")
    @classmethod
    def _storable_label(cls, value: str | None) -> str | None:
        problem = None if value is None else text_problem(value)
        if problem:
            raise ValueError(f"label {problem}")
        return value


class TokenOut(BaseModel):
    id: int
    prefix: str
    project: str | None
    scope: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token in clear; shown once, stored only as a hash")


class TokenList(BaseModel):
    tokens: list[TokenOut]


class Health(BaseModel):
    status: str
    database: str | None = None


class ValidationIssue(BaseModel):
    """One invalid field of a request (pydantic's error, without the input echoed back)."""

    type: str = Field(description="pydantic's error type, e.g. missing, int_parsing")
    loc: list[str | int] = Field(description="Where: body / query / path, then the field path")
    msg: str
    url: str | None = Field(default=None, description="pydantic's page on this error type")


class ErrorOut(BaseModel):
    """Every 4xx answer: a message, or (422 for invalid fields) the list of what is wrong."""

    detail: str | list[ValidationIssue]


# ---------------------------------------------------------------- analysis results
# Documentation of `AnalysisOut.result` per analysis; the handlers answer sedmon_core's
# results as plain JSON (sedmon_server.analyses), and these models only describe them.
# Non-finite numbers are null, hence `float | None`.


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")


class LaggedCorrelationOut(_Result):
    lags: list[int] = Field(description="-max_lag..max_lag; positive: the spectral series leads")
    r: list[float | None] = Field(description="Pearson r per lag (null when undefined)")
    n: list[int] = Field(description="Pairs per lag")
    peak_lag: int | None
    peak_r: float | None
    detrended: bool


class GrangerTestOut(_Result):
    direction: Literal["x->y", "y->x"]
    lag: int = Field(description="Order chosen by AIC")
    f: float | None
    p: float | None
    df_num: int
    df_den: int
    r2_restricted: float | None
    r2_full: float | None
    r2_gain: float | None
    n: int
    aic: list[float | None] = Field(description="The full model's AIC per order tried")


class GrangerOut(_Result):
    x_to_y: GrangerTestOut = Field(description="Spectral series -> metric")
    y_to_x: GrangerTestOut = Field(description="Metric -> spectral series")


class EdgeCouplingOut(_Result):
    j: int = Field(description="R_j = sigma_j / sigma_{j+1}")
    peak_lag: int | None
    peak_r: float | None


class KeyEdgeOut(_Result):
    j: int | None = Field(description="The R_j most strongly coupled to the metric")
    ranking: list[EdgeCouplingOut]
    plateau_signal_rank: int | None = Field(
        description="Modal k* over the plateau points (all points when none is plateau)"
    )


class CouplingResult(_Result):
    """`coupling`: cross-correlation by lag, Granger both ways, the key edge."""

    series: str
    steps: list[int]
    correlation: LaggedCorrelationOut
    granger: GrangerOut | None
    granger_error: str | None = Field(default=None, description="Why granger is null")
    key_edge: KeyEdgeOut | None
    key_edge_error: str | None = Field(default=None, description="Why key_edge is null")


class LagSweepResult(_Result):
    """`lag-sweep`: the peak lag per window (ascending windows)."""

    series: str
    windows: list[int]
    peak_lags: list[int | None]
    peak_r: list[float | None]
    lag_flip: bool = Field(description="The peak lags include a negative and a positive lag")


class PhaseCorrelationOut(_Result):
    phase: str
    r: float | None
    p: float | None
    n: int


class PhasesResult(_Result):
    """`phases`: a label per point, the phase boundaries as indices and steps."""

    series: str
    steps: list[int]
    values: list[float | None]
    method: Literal["peak", "derivative", "threshold"]
    labels: list[str] = Field(description="rise / plateau / collapse, one per point")
    peak_index: int | None
    plateau_start: int | None
    plateau_end: int | None
    collapse_index: int | None
    boundaries: list[int]
    peak_step: int | None
    plateau_start_step: int | None
    plateau_end_step: int | None
    collapse_step: int | None
    phase_correlation: dict[str, PhaseCorrelationOut] | None = Field(
        default=None, description="Per phase, with ?metric= only"
    )


class ChangePointOut(_Result):
    method: Literal["max_derivative", "cusum", "ttest"]
    index: int | None = Field(description="The accepted change point, null when none")
    candidate: int | None = Field(description="The best candidate, accepted or not")
    score: float | None
    params: dict[str, Any]
    change_step: int | None
    candidate_step: int | None


class ShiftsResult(_Result):
    """`shifts`: change points of the series, one per detector asked for."""

    series: str
    steps: list[int]
    values: list[float | None]
    change_points: list[ChangePointOut]


class ReliabilityResult(_Result):
    """`reliability`: split-half (even vs odd deltas) agreement of k*."""

    window: int
    rank_rule: str
    even_ranks: list[int]
    odd_ranks: list[int]
    agree: list[bool]
    agreement: float | None
    last_delta: list[int] = Field(description="Index of each window's last delta")
    last_step: list[int] = Field(description="Step of each window's last delta")


ANALYSIS_RESULTS: dict[str, type[BaseModel]] = {
    "coupling": CouplingResult,
    "lag-sweep": LagSweepResult,
    "phases": PhasesResult,
    "shifts": ShiftsResult,
    "reliability": ReliabilityResult,
}


class AnalysisOut(BaseModel):
    """One analysis of a run's stored series; `result` is the sedmon_core result as JSON, of
    the shape named after `analysis` (CouplingResult for coupling, and so on). The handler
    answers the result as computed (api/analysis.py); this model documents it."""

    run_id: int
    analysis: str
    window: int | None
    group: str
    metric: str | None
    method: str | None
    n: int = Field(description="Number of checkpoints (points) the analysis used")
    result: CouplingResult | LagSweepResult | PhasesResult | ShiftsResult | ReliabilityResult
