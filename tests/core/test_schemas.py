"""Wire schemas: the contract of DESIGN.md as the client and the server both parse it."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sedmon_core import window_spectrum
from sedmon_core.schemas import (
    DEFAULT_WINDOWS,
    MAX_SKETCH_DIM,
    AlertOut,
    CheckpointIn,
    MetricsIn,
    RunCreate,
    SketchSpecIn,
    SpectrumOut,
    SpectrumPoint,
    WebhookCreate,
)

# DESIGN.md, "Contract": the fields of a spectrum point and of an alert.
SPECTRUM_POINT_FIELDS = {
    "step",
    "sigma",
    "ratios",
    "signal_rank",
    "gap_ratio",
    "edge_strength",
    "total_variance",
    "effective_rank",
    "k95",
    "pc1_share",
    "drift_speed",
}
ALERT_FIELDS = {
    "id",
    "rule",
    "state",
    "step",
    "window",
    "started_at",
    "resolved_at",
    "summary",
    "details",
}


def test_run_create_defaults_are_countsketch_the_paper_windows_and_half() -> None:
    run = RunCreate(project="lm", name="gpt2-ft")
    assert (run.sketch.method, run.sketch.seed) == ("countsketch", 0)
    assert run.windows == list(DEFAULT_WINDOWS) == [10, 15, 20, 25, 30]
    assert run.rank_rule == "half"
    assert run.groups == ["all"]


def test_run_create_sorts_windows_and_rejects_repeats_and_out_of_range() -> None:
    assert RunCreate(project="p", name="r", windows=[30, 10, 20]).windows == [10, 20, 30]
    for windows in ([10, 10], [1, 10], [101], []):
        with pytest.raises(ValidationError):
            RunCreate(project="p", name="r", windows=windows)


@pytest.mark.parametrize("rule", ["half", "noise_edge", "weighted", "all"])
def test_run_create_accepts_each_named_rank_rule(rule: str) -> None:
    assert RunCreate(project="p", name="r", rank_rule=rule).rank_rule == rule


def test_run_create_rejects_an_unknown_rank_rule() -> None:
    with pytest.raises(ValidationError, match="rank_rule must be one of"):
        RunCreate(project="p", name="r", rank_rule="largest")


def test_run_create_rejects_fields_the_contract_does_not_name() -> None:
    with pytest.raises(ValidationError, match="extra"):
        RunCreate.model_validate({"project": "p", "name": "r", "window": [10]})


def test_named_groups_exclude_all_and_repeats() -> None:
    assert RunCreate(project="p", name="r", groups=["attn", "mlp"]).groups == ["attn", "mlp"]
    for groups in (["all", "attn"], ["attn", "attn"], [""]):
        with pytest.raises(ValidationError):
            RunCreate(project="p", name="r", groups=groups)


@pytest.mark.parametrize("project", ["", "has space", "-lead", "x" * 65])
def test_bad_project_names_are_rejected(project: str) -> None:
    with pytest.raises(ValidationError):
        RunCreate(project=project, name="r")


@pytest.mark.parametrize("method", ["countsketch", "gaussian", "identity", "external"])
def test_the_four_sketch_methods_are_accepted(method: str) -> None:
    assert SketchSpecIn(method=method, dim=100).method == method


def test_projected_sketches_are_capped_but_identity_may_be_longer() -> None:
    with pytest.raises(ValidationError, match="exceeds the cap"):
        SketchSpecIn(method="countsketch", dim=MAX_SKETCH_DIM + 1)
    assert SketchSpecIn(method="identity", dim=MAX_SKETCH_DIM + 1).dim == MAX_SKETCH_DIM + 1
    with pytest.raises(ValidationError):
        SketchSpecIn(method="srht", dim=100)


def test_checkpoint_keeps_non_finite_numbers_for_the_server_to_answer() -> None:
    body = '{"step": 3, "sketch": {"all": [1.0, NaN, Infinity]}, "metrics": {"loss": NaN}}'
    cp = CheckpointIn.model_validate(json.loads(body))
    assert math.isnan(cp.sketch["all"][1]) and math.isinf(cp.sketch["all"][2])
    assert math.isnan(cp.metrics["loss"])


def test_checkpoint_step_is_non_negative_and_metrics_need_a_value() -> None:
    with pytest.raises(ValidationError):
        CheckpointIn(step=-1, sketch={"all": [1.0]})
    with pytest.raises(ValidationError):
        MetricsIn(step=1, values={})


def test_a_window_spectrum_is_a_valid_spectrum_point_with_every_contract_field() -> None:
    deltas = np.random.default_rng(0).normal(size=(10, 50))
    spec = window_spectrum(deltas @ deltas.T)
    point = SpectrumPoint.model_validate({"step": 900, **spec.as_dict()})
    dumped = point.model_dump()
    assert set(dumped) >= SPECTRUM_POINT_FIELDS
    assert dumped["sigma"] == [float(v) for v in spec.sigma]
    assert dumped["gap_ratio"] == spec.gap_ratio and dumped["signal_rank"] == spec.signal_rank
    out = SpectrumOut(run_id=1, window=10, group="all", rank_rule="half", points=[point])
    assert json.loads(out.model_dump_json())["points"][0]["step"] == 900


def test_alert_out_carries_the_contract_fields() -> None:
    assert set(AlertOut.model_fields) >= ALERT_FIELDS


def test_alert_state_is_one_of_pending_firing_resolved() -> None:
    base: dict[str, Any] = {
        "id": 1,
        "rule": "edge_collapse",
        "step": 100,
        "window": 10,
        "group": "all",
        "started_at": "2026-01-01T00:00:00Z",
        "resolved_at": None,
        "summary": "s",
        "details": {},
        "fingerprint": "f",
    }
    for state in ("pending", "firing", "resolved"):
        assert AlertOut.model_validate({**base, "state": state}).state == state
    with pytest.raises(ValidationError):
        AlertOut.model_validate({**base, "state": "open"})


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams", "generic"])
def test_webhook_formats_of_the_contract(fmt: str) -> None:
    hook = WebhookCreate(project="p", url="http://127.0.0.1:9/hook", format=fmt)
    assert hook.format == fmt


def test_webhook_needs_an_http_url_and_a_known_format() -> None:
    with pytest.raises(ValidationError):
        WebhookCreate(project="p", url="ftp://example.org/x")
    with pytest.raises(ValidationError):
        WebhookCreate(project="p", url="http://127.0.0.1:9/hook", format="email")
