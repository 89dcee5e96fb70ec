"""Wire schemas shared by the client and the server (DESIGN.md, "Contract").

Numbers in sketches may be non-finite on the wire (Python's JSON writes NaN): the server
answers them with 422 and a `non_finite` alert, so these models accept them and the
server checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sedmon_core.spectrum import RANK_RULES

SketchMethod = Literal["countsketch", "gaussian", "identity", "external"]
WebhookFormat = Literal["slack", "discord", "teams", "generic"]
AlertState = Literal["pending", "firing", "resolved"]
Phase = Literal["rise", "plateau", "collapse", "warmup"]

DEFAULT_WINDOWS: tuple[int, ...] = (10, 15, 20, 25, 30)
MAX_WINDOW = 100
MAX_SKETCH_DIM = 65_536
"""Cap on k for projected sketches (countsketch, gaussian, external)."""
MAX_IDENTITY_DIM = 1_048_576
"""Cap on the total length of an identity sketch (exact parameters, small models only)."""
MAX_GROUPS = 64
ALL_GROUP = "all"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SketchSpecIn(_Model):
    """How each checkpoint's parameters are projected: (method, dim k, seed)."""

    method: SketchMethod = "countsketch"
    dim: int = Field(default=300, ge=1, le=MAX_IDENTITY_DIM)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _dim_cap(self) -> SketchSpecIn:
        if self.method != "identity" and self.dim > MAX_SKETCH_DIM:
            raise ValueError(f"sketch dim {self.dim} exceeds the cap of {MAX_SKETCH_DIM}")
        return self


class RunCreate(_Model):
    """POST /api/v1/runs body. `groups` == ["all"] or named groups (the server adds `all`)."""

    project: str = Field(pattern=PROJECT_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    sketch: SketchSpecIn = Field(default_factory=SketchSpecIn)
    groups: list[str] = Field(default_factory=lambda: [ALL_GROUP], min_length=1)
    windows: list[int] = Field(default_factory=lambda: list(DEFAULT_WINDOWS), min_length=1)
    rank_rule: str = "half"
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups")
        if len(set(v)) != len(v):
            raise ValueError("group names must be unique")
        for g in v:
            if not g or len(g) > 100:
                raise ValueError("group names must be 1-100 characters")
        if ALL_GROUP in v and len(v) > 1:
            raise ValueError("'all' is the whole model; with named groups the server adds it")
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("windows must be unique")
        for w in v:
            if not 2 <= w <= MAX_WINDOW:
                raise ValueError(f"each window must be in 2..{MAX_WINDOW}, got {w}")
        return sorted(v)

    @field_validator("rank_rule")
    @classmethod
    def _rule(cls, v: str) -> str:
        if v not in RANK_RULES:
            raise ValueError(f"rank_rule must be one of {', '.join(RANK_RULES)}")
        return v


class EdgeSummary(BaseModel):
    """The latest edge of a run for one window and group."""

    step: int
    window: int
    group: str = ALL_GROUP
    signal_rank: int
    gap_ratio: float
    edge_strength: float
    phase: Phase


class RunOut(BaseModel):
    id: int
    project: str
    name: str
    sketch: SketchSpecIn
    groups: list[str]
    windows: list[int]
    rank_rule: str
    config: dict[str, Any]
    state: str
    created_at: datetime
    last_step: int | None = None
    last_checkpoint_at: datetime | None = None
    num_checkpoints: int = 0
    latest: list[EdgeSummary] = Field(default_factory=list)
    firing_alerts: int = 0


class RunList(BaseModel):
    runs: list[RunOut]
    total: int
    limit: int
    offset: int


class CheckpointIn(_Model):
    """POST /api/v1/runs/{id}/checkpoints: the sketch of the parameters (positions)."""

    step: int = Field(ge=0)
    sketch: dict[str, list[float]]
    metrics: dict[str, float] = Field(default_factory=dict)


class CheckpointAck(BaseModel):
    run_id: int
    step: int
    created: bool
    edge: EdgeSummary | None = None


class CheckpointBatchIn(_Model):
    """Backfill: many checkpoints, same rules as one at a time, all or nothing."""

    checkpoints: list[CheckpointIn] = Field(min_length=1, max_length=10_000)


class CheckpointBatchAck(BaseModel):
    run_id: int
    created: int
    unchanged: int
    last: CheckpointAck | None = None


class MetricsIn(_Model):
    step: int = Field(ge=0)
    values: dict[str, float] = Field(min_length=1)


class SpectrumPoint(BaseModel):
    step: int
    sigma: list[float]
    ratios: list[float]
    signal_rank: int
    gap_ratio: float
    additive_gap: float
    edge_strength: float
    total_variance: float
    effective_rank: float
    k95: int
    pc1_share: float
    drift_speed: float


class SpectrumOut(BaseModel):
    run_id: int
    window: int
    group: str
    rank_rule: str
    points: list[SpectrumPoint]


class AlertOut(BaseModel):
    id: int
    rule: str
    state: AlertState
    step: int | None
    window: int | None
    group: str | None
    started_at: datetime
    resolved_at: datetime | None
    summary: str
    details: dict[str, Any]
    fingerprint: str
    acknowledged: bool = False


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class WebhookCreate(_Model):
    project: str = Field(pattern=PROJECT_PATTERN)
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    format: WebhookFormat = "generic"
    secret: str | None = Field(default=None, min_length=8, max_length=512)


class WebhookOut(BaseModel):
    id: int
    project: str
    url: str
    format: WebhookFormat
    has_secret: bool
    enabled: bool
    created_at: datetime
