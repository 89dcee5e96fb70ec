"""Wire schemas shared by the client and the server (DESIGN.md, "Contract").

Numbers in sketches may be non-finite on the wire (Python's JSON writes NaN): the server
answers them with 422 and a `non_finite` alert, so these models accept them and the
server checks.

Limits that keep bad input from reaching the database (422, nothing stored): steps and
list offsets are 0..MAX_INT64 (the database's BIGINT); text the server stores (group and
metric names, config strings, webhook fields) holds no NUL character and no unpaired
surrogate (PostgreSQL text cannot); metric names are 1-200 characters; `config` holds
finite numbers only (JSON has no NaN or Infinity); finite sketch values are at most
MAX_SKETCH_VALUE in absolute value (the server checks, with the non-finite ones).
"""

from __future__ import annotations

from datetime import datetime
from math import isfinite
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
MAX_INT64 = 2**63 - 1
"""Largest step, list offset or id the database holds (BIGINT)."""
MAX_METRIC_NAME = 200
MAX_SKETCH_VALUE = 1e100
"""Cap on |x| of a finite sketch value (the server answers 422 above it). A delta is then
at most 2e100 per entry, so a squared norm or dot product over the most entries one
Gram sums (group "all" of MAX_GROUPS groups of MAX_SKETCH_DIM: 2**22, more than
MAX_IDENTITY_DIM) is at most 2**22 * (2e100)**2 ~ 1.7e207, and an eigenvalue of a
window's Gram (W <= MAX_WINDOW) at most ~1.7e209: every stored number stays finite,
far below float64's 1.8e308. Real parameters are many orders of magnitude smaller."""
ALL_GROUP = "all"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as database text (PostgreSQL refuses NUL; UTF-8 has
    no unpaired surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def _check_text(value: str, what: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(f"{what} {problem}")
    return value


def _check_metric_names(values: dict[str, float]) -> dict[str, float]:
    for name in values:
        if not 1 <= len(name) <= MAX_METRIC_NAME:
            raise ValueError(
                f"metric names must be 1-{MAX_METRIC_NAME} characters, got one of {len(name)}"
            )
        _check_text(name, "metric names")
    return values


def _check_json(config: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON: finite numbers only, storable text in keys and strings (iterative,
    so any nesting depth the JSON parser accepted is checked without recursion)."""
    stack: list[tuple[str, Any]] = [("config", config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not isfinite(value):
            raise ValueError(f"{path}: numbers must be finite (JSON has no NaN or Infinity)")
        if isinstance(value, str):
            _check_text(value, f"{path}: strings")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(str(key), f"{path}: keys")
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return config


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
            _check_text(g, "group names")
        if ALL_GROUP in v and len(v) > 1:
            raise ValueError("'all' is the whole model; with named groups the server adds it")
        return v

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_json(v)

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
    """A run as the API returns it: its spec, state, counts, and the latest edge per window.

    latest: the edge of group "all" at the last checkpoint, one entry per window with a
    full window. firing_alerts: alerts of the run now firing. Times are UTC.
    """

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
    """GET /api/v1/runs: one page of runs (`limit`, `offset`) and the `total` that match."""

    runs: list[RunOut]
    total: int
    limit: int
    offset: int


class CheckpointIn(_Model):
    """POST /api/v1/runs/{id}/checkpoints: the sketch of the parameters (positions).

    step: 0..MAX_INT64; metric names: 1-200 characters, no NUL; the server refuses finite
    sketch values beyond +-MAX_SKETCH_VALUE (422) and non-finite ones (422 + event)."""

    step: int = Field(ge=0, le=MAX_INT64)
    sketch: dict[str, list[float]]
    metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_metric_names(v)


class CheckpointAck(BaseModel):
    """Answer to a checkpoint: created (201) or the same step again (200), with the edge at
    the smallest full window, None before the first window is full."""

    run_id: int
    step: int
    created: bool
    edge: EdgeSummary | None = None


class CheckpointBatchIn(_Model):
    """Backfill: many checkpoints, same rules as one at a time, all or nothing."""

    checkpoints: list[CheckpointIn] = Field(min_length=1, max_length=10_000)


class CheckpointBatchAck(BaseModel):
    """Answer to a batch of checkpoints: how many were new, how many repeats, the last ack."""

    run_id: int
    created: int
    unchanged: int
    last: CheckpointAck | None = None


class MetricsIn(_Model):
    """POST /api/v1/runs/{id}/metrics: metric values (name -> number) at one step.

    step: 0..MAX_INT64; names: 1-200 characters, no NUL."""

    step: int = Field(ge=0, le=MAX_INT64)
    values: dict[str, float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _metric_names(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_metric_names(v)


MAX_METRIC_POINTS = 10_000
"""Cap on the points of one metrics batch (as on the checkpoints of one batch)."""


class MetricsBatchIn(_Model):
    """POST /api/v1/runs/{id}/metrics:batch: many steps' values, stored all or nothing."""

    points: list[MetricsIn] = Field(min_length=1, max_length=MAX_METRIC_POINTS)

    @model_validator(mode="before")
    @classmethod
    def _point_names(cls, data: Any) -> Any:
        # Names first, so the detail names the point as the server's other refusals do
        # ("point 3 (step 1200): ..."); MetricsIn checks each point again, and the rest.
        points = data.get("points") if isinstance(data, dict) else None
        for i, point in enumerate(points if isinstance(points, list) else ()):
            values = point.get("values") if isinstance(point, dict) else None
            if isinstance(values, dict):
                try:
                    _check_metric_names(values)
                except ValueError as exc:
                    step = point.get("step")
                    at = f"point {i} (step {step})" if isinstance(step, int) else f"point {i}"
                    raise ValueError(f"{at}: {exc}") from None
        return data


class FinishIn(_Model):
    """POST /api/v1/runs/{id}/finish (optional body): how the run ended."""

    state: Literal["finished", "failed"] = "finished"


class SpectrumPoint(BaseModel):
    """One window's observables (`WindowSpectrum.as_dict`), labelled by the step of its last
    checkpoint. sigma: (W,) descending, parameter (or sketch) units; ratios: (W-1,)."""

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
    """GET /api/v1/runs/{id}/spectrum: every stored window of one size W and group, by step."""

    run_id: int
    window: int
    group: str
    rank_rule: str
    points: list[SpectrumPoint]


class AlertOut(BaseModel):
    """One alert event of a run: rule, lifecycle state and times, where it fired (step,
    window, group), a one-line summary and the rule's details; fingerprint: stable per
    (run, rule, window, group) so receivers can group events."""

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
    """GET /api/v1/runs/{id}/alerts: the run's alerts, oldest first."""

    alerts: list[AlertOut]


class WebhookCreate(_Model):
    """POST /api/v1/webhooks: where a project's alerts go, in which chat format, signed
    with `secret` when given."""

    project: str = Field(pattern=PROJECT_PATTERN)
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    format: WebhookFormat = "generic"
    secret: str | None = Field(default=None, min_length=8, max_length=512)

    @field_validator("url", "secret")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return v if v is None else _check_text(v, "url and secret")


class WebhookOut(BaseModel):
    """A registered webhook as the API returns it (the secret itself is never returned)."""

    id: int
    project: str
    url: str
    format: WebhookFormat
    has_secret: bool
    enabled: bool
    created_at: datetime
