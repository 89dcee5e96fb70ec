"""Pure rule functions: plateau-then-collapse, rank hysteresis, one event one alert, lifecycle,
stalled, settings."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from replay import alerts_fired
from synthetic import trajectory

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
    # The run's patch had a bad value: the built-in default stands.
    assert settings.edge_collapse.pending_points == EdgeCollapseSettings().pending_points
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


def test_refractory_is_validated_like_the_other_settings() -> None:
    assert rules.AlertSettings().refractory_w == 3.0
    assert rules.merge_settings(rules.AlertSettings(), {"refractory_w": 0}).refractory_w == 0.0
    with pytest.raises(rules.SettingsError, match=r"refractory_w must be >= 0"):
        rules.merge_settings(rules.AlertSettings(), {"refractory_w": -1})
    with pytest.raises(rules.SettingsError, match=r"refractory_w must be a number"):
        rules.merge_settings(rules.AlertSettings(), {"refractory_w": "30"})
    with pytest.raises(rules.SettingsError, match=r"refractory_w must be a number"):
        rules.merge_settings(rules.AlertSettings(), {"refractory_w": float("inf")})


def fold_run(
    fires: dict[int, list[str]], settings: rules.AlertSettings, n: int = 60, window: int = 10
) -> list[tuple[int, str]]:
    """(checkpoint, rule) of the alerts raised when rules report a new firing event at the given
    checkpoints (firing for 5 checkpoints each), through `fold_event` and the lifecycle."""
    state: dict[str, Any] = {}
    open_states: dict[str, str | None] = {rule: None for rule in rules.SERIES_RULES}
    started: dict[str, int] = {}
    raised = []
    for i in range(n):
        outcomes = {}
        for rule in rules.SERIES_RULES:
            if rule in fires.get(i, []):
                started[rule] = i
                outcomes[rule] = Outcome("firing", i, {"k": 1}, new_event=True)
            elif rule in started and i - started[rule] < 5:
                outcomes[rule] = Outcome("firing", started[rule], {"k": 1})
            else:
                outcomes[rule] = rules.INACTIVE
        state, outcomes, _ = rules.fold_event(settings, window, state, outcomes, open_states, i)
        for rule in rules.SERIES_RULES:
            action = rules.lifecycle(open_states[rule], outcomes[rule])
            if action in rules.FIRE_ACTIONS:
                raised.append((i, rule))
                open_states[rule] = "firing"
            elif action in ("resolve", "drop"):
                open_states[rule] = None
    return raised


def test_alerts_of_other_rules_within_the_refractory_span_are_folded_into_the_first() -> None:
    fires = {3: ["distribution_shift"], 13: ["rank_change"], 32: ["edge_collapse"]}
    # W = 10, refractory 3 W: rank_change 10 checkpoints after the shift is the same event;
    # edge_collapse is never folded (rules.NEVER_FOLDED): it raises its own alert.
    assert fold_run(fires, rules.AlertSettings()) == [
        (3, "distribution_shift"),
        (32, "edge_collapse"),
    ]
    # The collapse starts an event of its own: rank_change 8 checkpoints later is part of
    # it; one 30 checkpoints after the collapse is a new alert.
    fires[40] = ["rank_change"]
    fires[62] = ["rank_change"]
    assert fold_run(fires, rules.AlertSettings(), n=80) == [
        (3, "distribution_shift"),
        (32, "edge_collapse"),
        (62, "rank_change"),
    ]
    # refractory_w 1 (10 checkpoints): rank_change at 13 is its own alert again.
    one_w = rules.AlertSettings(refractory_w=1.0)
    assert fold_run(fires, one_w)[:2] == [(3, "distribution_shift"), (13, "rank_change")]
    # 0: every rule raises its own alerts.
    assert fold_run(fires, rules.AlertSettings(refractory_w=0.0), n=80) == [
        (3, "distribution_shift"),
        (13, "rank_change"),
        (32, "edge_collapse"),
        (40, "rank_change"),
        (62, "rank_change"),
    ]


def test_an_edge_collapse_alert_folds_the_rank_change_that_follows_it() -> None:
    fires = {20: ["edge_collapse"], 25: ["rank_change"]}
    assert fold_run(fires, rules.AlertSettings()) == [(20, "edge_collapse")]


def test_two_rules_firing_at_one_checkpoint_are_one_alert() -> None:
    fires = {5: ["edge_collapse", "rank_change"]}
    assert fold_run(fires, rules.AlertSettings()) == [(5, "edge_collapse")]


def test_a_silenced_rules_alert_starts_no_event() -> None:
    opened: dict[str, str | None] = {rule: None for rule in rules.SERIES_RULES}
    fired = {
        rule: Outcome("firing", 5, new_event=True) for rule in ("edge_collapse", "rank_change")
    }
    outcomes = {"distribution_shift": rules.INACTIVE, **fired}
    state, adjusted, folded = rules.fold_event(
        rules.AlertSettings(), 10, {}, outcomes, opened, 500, lambda r: r == "edge_collapse"
    )
    # The silenced rule is recorded (not sent) as usual; the next one starts the event.
    assert adjusted["edge_collapse"].status == "firing"
    assert adjusted["rank_change"].status == "firing" and folded == []
    assert state["anchor"]["rule"] == "rank_change"


def test_rank_event_is_one_alert_and_refractory_0_gives_each_rule_its_own() -> None:
    traj = trajectory("rank", n=100, seed=0, noise=1.0, at=60)
    one = alerts_fired(traj.positions)
    assert [(rule, len(at)) for rule, at in one.items() if at] == [("distribution_shift", 1)]
    each = alerts_fired(traj.positions, rules.AlertSettings(refractory_w=0.0))
    assert each["distribution_shift"] == one["distribution_shift"]
    assert len(each["rank_change"]) == 1 and each["rank_change"][0] > one["distribution_shift"][0]


def test_a_lower_rank_counts_only_once_the_edge_it_leaves_is_no_longer_clear() -> None:
    s = rules.RankChangeSettings(hold=3, resolve_after=2)
    two = [1.2, 2.5, 1.0, 1.0]  # rank 2, clear
    # The top direction stands out (R1 >= 1.15 x R2) while the second edge stays clear
    # (R2 >= 1.3): two directions lined up in the window, no direction left the signal.
    lined_up = Observation(0, (2.0, 1.5, 1.0, 1.0), 1, 2.0, 1.0)
    # The second edge is gone (R2 < 1.3): direction 2 merged into the noise.
    gone = Observation(0, (2.4, 1.1, 1.0, 1.0), 1, 2.4, 1.0)
    for lower, expect in ((lined_up, []), (gone, [(2, 1)])):
        state: dict[str, Any] = {}
        events = []
        for i in range(12):
            o = obs(i, two) if i < 4 else replace(lower, step=i)
            state, outcome = rules.rank_change(s, state, o)
            if outcome.new_event:
                events.append((outcome.facts["from_rank"], outcome.facts["to_rank"]))
        assert events == expect


def test_distribution_shift_edge_at_rank_2_ignores_energy_moving_between_signal_modes() -> None:
    # Rank 2 established; then sigma_1 and sigma_2 trade energy (sigma_1^2 + sigma_2^2 kept,
    # the noise modes unchanged): R2 falls from 2.4 to 2.0 (about 36 sd of its jitter), the
    # share of the top two modes does not move.
    s = rules.ShiftSettings()
    rng = np.random.default_rng(5)

    def run(levels: list[tuple[float, float]]) -> tuple[list[int], dict[str, Any]]:
        state: dict[str, Any] = {}
        events = []
        for i, (a, b) in enumerate(levels):
            jitter = 1.0 + 0.005 * rng.standard_normal()
            o = obs(i, [a * jitter / b, b, 1.0, 1.0], rank=2)
            state, outcome = rules.distribution_shift(s, state, o)
            if outcome.new_event:
                events.append(i)
        return events, state

    traded = math.sqrt(2.5**2 + 2.4**2 - 2.0**2)
    events, state = run([(2.5, 2.4)] * 50 + [(traded, 2.0)] * 30)
    assert state["edge"] == 2
    assert events == []
    # The share itself falling (sigma_2 merging into the noise) is a shift.
    events, _ = run([(2.5, 2.4)] * 50 + [(2.5, 1.6)] * 30)
    assert events == [50]


def test_a_collapse_hovering_at_tau_keeps_the_date_of_its_first_window_below() -> None:
    plateau = [[1.1, 1.8, 1.0, 1.0]] * 3
    hover = [[1.5, r, 1.0, 1.0] for r in (1.1, 1.25, 1.1, 1.1)]
    outcomes = run_collapse(plateau + hover, S)  # pending_points 2, clear_ratio 1.3
    assert [o.status for o in outcomes[3:]] == ["pending", "inactive", "pending", "firing"]
    assert outcomes[-1].step == 3
    # clear_ratio = tau: any window at tau or above starts the count and the date afresh.
    strict = run_collapse(plateau + hover, replace(S, clear_ratio=1.2))
    assert strict[-1].status == "firing" and strict[-1].step == 5
    # A recovery to a clear edge (>= clear_ratio) between dips: two dips, dated apart.
    recovered = [[1.5, r, 1.0, 1.0] for r in (1.1, 1.4, 1.1, 1.1)]
    assert run_collapse(plateau + recovered, S)[-1].step == 5


def test_clear_ratio_is_checked_against_tau() -> None:
    with pytest.raises(rules.SettingsError, match=r"clear_ratio must be >= tau"):
        rules.merge_settings(rules.AlertSettings(), {"edge_collapse": {"clear_ratio": 1.1}})
    with pytest.raises(rules.SettingsError, match=r"clear_ratio must be positive"):
        rules.merge_settings(rules.AlertSettings(), {"edge_collapse": {"clear_ratio": 0}})
    merged = rules.merge_settings(
        rules.AlertSettings(), {"edge_collapse": {"tau": 1.1, "clear_ratio": 1.1}}
    )
    assert merged.edge_collapse.clear_ratio == 1.1
