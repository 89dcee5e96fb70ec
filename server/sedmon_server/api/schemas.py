"""Wire models only the server answers with (the shared ones live in sedmon_core.schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sedmon_core.schemas import PROJECT_PATTERN


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


class AnalysisOut(BaseModel):
    """One analysis of a run's stored series; `result` is the sedmon_core result as JSON."""

    run_id: int
    analysis: str
    window: int | None
    group: str
    metric: str | None
    method: str | None
    n: int = Field(description="Number of checkpoints (points) the analysis used")
    result: dict[str, Any]
