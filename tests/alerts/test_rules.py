"""Pure rule functions: plateau-then-collapse, rank hysteresis, lifecycle, stalled, settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sedmon_server.alerts import rules
from sedmon_server.alerts.rules import EdgeCollapseSettings, Observation, Outcome


def obs(step: int, ratios: list[float], rank: int | None = None, tv: float = 1.0) -> Observation:
    half = ratios[: max(1, (len(ratios) + 1) // 2)]
    k = rank if rank is not None else int(max(range(len(half)), key=lambda j: half[j])) + 1
    return Observation(step, tuple(ratios), k, ratios[k - 1], tv)


def run_collapse(series: list[list[float]], s: EdgeCollapseSettings) -> list[Outcome]:
    state: dict[str, Any] = {}
    out = []
    for i, ratios in enumerate(series):
        state, outcome = rules.edge_collapse(s, state, obs(i, ratios))
        out.append(outcome)
    return out


S = EdgeCollapseSettings(plateau_points=3, pending_points=2)


def test_collapse_fires_after_plateau_when_the_key_ratio_falls_below_tau() -> None:
    plateau = [[1.1, 1.8, 1.05, 1.0]] * 3
    fading = [[1.3, 1.15, 1.05, 1.0], [1.6, 1.1, 1.05, 1.0]]
    outcomes = run_collapse(plateau + fading, S)
    assert [o.status for o in outcomes] == ["inactive"] * 3 + ["pending", "firing"]
    assert outcomes[-1].step == 3
    assert outcomes[-1].facts["k"] == 2


def test_below_tau_without_a_plateau_is_not_a_collapse() -> None:
    series = [[1.3, 1.4, 1.0, 1.0]] * 5 + [[1.1, 1.1, 1.0, 1.0]] * 5
    assert all(o.status == "inactive" for o in run_collapse(series, S))


def test_collapse_tracks_the_edge_ratio_not_the_maximum_ratio() -> None:
    # sigma2/sigma3 fades while sigma1/sigma2 rises: the maximum stays high, the edge collapses.
    plateau = [[1.2, 2.0, 1.0, 1.0]] * 3
    merge = [[1.9, 1.4, 1.0, 1.0], [2.5, 1.1, 1.0, 1.0], [3.0, 1.05, 1.0, 1.0]]
    outcomes = run_collapse(plateau + merge, S)
    assert [o.status for o in outcomes[3:]] == ["inactive", "pending", "firing"]


def test_collapse_resolves_only_after_a_new_plateau_stands() -> None:
    plateau = [[1.1, 1.8, 1.0, 1.0]] * 3
    collapsed = [[2.0, 1.1, 1.0, 1.0]] * 2
    new_edge = [[2.0, 1.05, 1.0, 1.0]] * 3
    outcomes = run_collapse(plateau + collapsed + new_edge, S)
    assert [o.status for o in outcomes[3:]] == ["pending", "firing", "firing", "firing", "inactive"]


def test_rank_change_needs_the_new_rank_to_hold() -> None:
    s = rules.RankChangeSettings(hold=3, resolve_after=2)
    one = [2.0, 1.0, 1.0, 1.0]
    two = [1.0, 2.0, 1.0, 1.0]
    state: dict[str, Any] = {}
    statuses = []
    for i, ratios in enumerate([one] * 3 + [two, one] + [two] * 3 + [two] * 2):
        state, outcome = rules.rank_change(s, state, obs(i, ratios))
        statuses.append(outcome.status)
    assert statuses == ["inactive"] * 3 + [
        "pending",
        "inactive",
        "pending",
        "pending",
        "firing",
        "firing",
        "inactive",
    ]


def test_ambiguous_rank_readings_do_not_count() -> None:
    near_equal = Observation(0, (1.5, 1.45, 1.0, 1.0), 1, 1.5, 1.0)
    assert rules.clear_rank(near_equal, 1.3, 1.15) is None
    assert rules.clear_rank(Observation(0, (2.0, 1.2, 1.0, 1.0), 1, 2.0, 1.0), 1.3, 1.15) == 1


def run_shift(
    gap: list[float], tv: list[float] | None = None, s: rules.ShiftSettings | None = None
) -> list[tuple[int, int | None]]:
    """(window index, dated step) of every new distribution_shift event over a series of
    windows whose first ratio is `gap` (no clear rank below 1.3: the gap ratio is watched)."""
    s = s or rules.ShiftSettings()
    state: dict[str, Any] = {}
    fired = []
    for i, g in enumerate(gap):
        o = obs(i, [g, 1.0, 1.0, 1.0], tv=1.0 if tv is None else tv[i])
        state, outcome = rules.distribution_shift(s, state, o)
        if outcome.new_event:
            fired.append((i, outcome.step))
    return fired


def noisy(level: list[float], sd: float = 0.01, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in np.asarray(level) + sd * rng.standard_normal(len(level))]


def test_distribution_shift_fires_on_a_step_once_and_dates_it() -> None:
    # A jump of log(1.6 / 1.2) = 0.29 over differences of sd 0.012: about 24 sd.
    assert run_shift(noisy([1.2] * 40 + [1.6] * 60)) == [(40, 40)]


def test_a_lone_window_jump_must_be_sqrt2_larger_than_h() -> None:
    # One window 14 sd up and back: alone it passes h = 10, with either neighbour it does not.
    base = noisy([1.15] * 70, seed=1)
    spike = base.copy()
    spike[50] *= 1.2
    assert run_shift(base) == []
    assert run_shift(spike, s=rules.ShiftSettings(min_run=1)) == [(50, 50)]
    assert run_shift(spike) == []


def test_a_total_variance_step_fires_from_one_window() -> None:
    tv = noisy([10.0] * 40 + [14.0] * 30, sd=0.1, seed=2)
    assert run_shift(noisy([1.15] * 70, seed=3), tv) == [(40, 40)]


def test_distribution_shift_watches_the_ratio_at_the_established_edge() -> None:
    # Rank 2 established (R2 = 2.0 clear); then R2 falls to 1.6 while staying the largest
    # ratio: the edge itself moved, and the event says which edge it watched.
    s = rules.ShiftSettings()
    state: dict[str, Any] = {}
    events = []
    r2 = noisy([2.0] * 45 + [1.6] * 20, sd=0.01, seed=4)
    for i, ratio in enumerate(r2):
        state, outcome = rules.distribution_shift(s, state, obs(i, [1.1, ratio, 1.0, 1.0]))
        if outcome.new_event:
            events.append((i, outcome.step, outcome.facts["edge"], outcome.facts["series"]))
    assert events == [(45, 45, 2, ["gap_ratio"])]


@pytest.mark.parametrize(
    ("open_state", "status", "new_event", "action"),
    [
        (None, "inactive", False, "none"),
        (None, "pending", False, "open_pending"),
        (None, "firing", False, "open_firing"),
        ("pending", "pending", False, "update"),
        ("pending", "firing", False, "fire"),
        ("pending", "inactive", False, "drop"),
        ("firing", "firing", False, "update"),
        ("firing", "firing", True, "reopen"),
        ("firing", "inactive", False, "resolve"),
    ],
)
def test_lifecycle(open_state: str | None, status: Any, new_event: bool, action: str) -> None:
    assert rules.lifecycle(open_state, Outcome(status, new_event=new_event)) == action


def test_repeat_waits_for_the_interval_and_stops_when_acknowledged() -> None:
    assert rules.repeat_due(None, 100.0, 3600.0, acknowledged=False)
    assert not rules.repeat_due(100.0, 3000.0, 3600.0, acknowledged=False)
    assert rules.repeat_due(100.0, 3700.0, 3600.0, acknowledged=False)
    assert not rules.repeat_due(100.0, 9999.0, 3600.0, acknowledged=True)
    assert not rules.repeat_due(100.0, 9999.0, 0.0, acknowledged=False)


def test_stalled_uses_a_multiple_of_the_median_interval_with_a_floor() -> None:
    s = rules.StalledSettings(multiple=5.0, floor_s=600.0)
    arrivals = [0.0, 300.0, 600.0, 900.0]
    assert not rules.stalled_check(s, arrivals, 900.0 + 1499.0).stalled
    check = rules.stalled_check(s, arrivals, 900.0 + 1501.0)
    assert check.stalled and check.usual_s == 300.0 and check.threshold_s == 1500.0
    fast = [0.0, 1.0, 2.0, 3.0]
    assert rules.stalled_check(s, fast, 3.0 + 599.0).stalled is False
    assert rules.stalled_check(s, fast, 3.0 + 601.0).stalled is True


def test_settings_merge_project_then_run_and_skip_bad_patches() -> None:
    settings, errors = rules.resolve_settings(
        {"edge_collapse": {"tau": 1.3}, "windows": [20]},
        {"edge_collapse": {"pending_points": 1}, "stalled": {"floor_s": "soon"}},
    )
    assert settings.edge_collapse.tau == 1.3
    assert settings.windows == (20,)
    assert settings.edge_collapse.pending_points == 3  # the run's patch had a bad value
    assert errors == ["stalled.floor_s must be a number"]


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(rules.SettingsError, match=r"edge_collapse\.tua"):
        rules.merge_settings(rules.AlertSettings(), {"edge_collapse": {"tua": 1.3}})


def test_watched_window_defaults_to_the_smallest() -> None:
    assert rules.watched_windows(rules.AlertSettings(), [20, 10, 30]) == [10]
    assert rules.watched_windows(rules.AlertSettings(windows=(20, 99)), [10, 20]) == [20]


def test_a_rank_change_that_reverts_within_two_holds_is_one_event() -> None:
    s = rules.RankChangeSettings(hold=3, resolve_after=2)
    one = [2.0, 1.0, 1.0, 1.0]
    two = [1.0, 2.0, 1.0, 1.0]
    state: dict[str, Any] = {}
    events, statuses = [], []
    # 1 established; 2 holds (event); back to 1 within 2 x hold windows (no event); then 2
    # again, well after: a new event.
    series = [one] * 3 + [two] * 3 + [one] * 3 + [one] * 6 + [two] * 3
    for i, ratios in enumerate(series):
        state, outcome = rules.rank_change(s, state, obs(i, ratios))
        statuses.append(outcome.status)
        if outcome.new_event:
            events.append((i, outcome.facts["from_rank"], outcome.facts["to_rank"]))
    assert events == [(5, 1, 2), (17, 1, 2)]
    assert "pending" not in statuses[6:9]


def test_shift_settings_are_checked_where_they_depend_on_each_other() -> None:
    with pytest.raises(rules.SettingsError, match="min_run must be <= span"):
        rules.merge_settings(rules.AlertSettings(), {"distribution_shift": {"min_run": 11}})
    with pytest.raises(rules.SettingsError, match="scale_alpha must be <= 1"):
        rules.merge_settings(rules.AlertSettings(), {"distribution_shift": {"scale_alpha": 2}})
    with pytest.raises(rules.SettingsError, match="use gap_ratio, next_ratio"):
        rules.merge_settings(rules.AlertSettings(), {"distribution_shift": {"series": ["loss"]}})
