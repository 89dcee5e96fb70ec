"""Alert rules as pure functions: (settings, state, observation) -> (new state, outcome).

State is plain JSON-ready data that the engine keeps per fingerprint in `alert_state`, so
a rule never re-reads a run's history. One function per rule:

- `edge_collapse`: a plateau first (the gap ratio at one signal rank k >= plateau_ratio
  for plateau_points windows in a row), then the ratio AT THAT EDGE, sigma_k/sigma_{k+1},
  below tau for pending_points windows. The key ratio is tracked, not the running
  maximum: when direction k merges into the noise the maximum jumps to a smaller j and
  rises, and that is the collapse. "Below tau" without a plateau before is not an event.
- `distribution_shift`: `sedmon_core.changepoints.track_increment` (first differences
  standardised against the trailing 20 with a floored robust scale, windowed GLR over the
  last `span`) on the log edge at the established rank k (R_1 at k = 1, the share of the
  top k modes at k >= 2), the log of the next ratio and the log total variance; the
  established clear signal rank picks the edge (its changes are `rank_change`'s alerts).
- `rank_change`: the clear signal rank (gap ratio >= min_gap_ratio) differs from the
  established one for `hold` windows in a row; a lower rank counts only while the edge it
  leaves is no longer clear.
- `non_finite` and `stalled` have no series state: see `stalled_check`.

`lifecycle` turns an outcome and the open alert of a fingerprint into what the engine
does: open pending, fire, resolve, drop, repeat. `fold_event` makes one event one alert:
the series rules of one window and group that fire within `refractory_w` x W checkpoints
of an alert there are folded into it instead of raising their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from sedmon_core.changepoints import IncrementTrack, track_increment

RULES: tuple[str, ...] = (
    "edge_collapse",
    "distribution_shift",
    "rank_change",
    "non_finite",
    "stalled",
)
SERIES_RULES: tuple[str, ...] = ("edge_collapse", "distribution_shift", "rank_change")
SHIFT_SERIES: tuple[str, ...] = ("gap_ratio", "next_ratio", "total_variance", "signal_rank")
DEFAULT_SHIFT_SERIES: tuple[str, ...] = SHIFT_SERIES
METRIC_CANDIDATES: tuple[str, ...] = (
    "val_loss",
    "val/loss",
    "eval_loss",
    "eval/loss",
    "validation_loss",
    "loss",
    "train_loss",
    "train/loss",
)

Status = Literal["inactive", "pending", "firing"]


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class EdgeCollapseSettings:
    enabled: bool = True
    tau: float = 1.20
    plateau_ratio: float = 1.5
    plateau_points: int = 10
    pending_points: int = 4
    clear_ratio: float = 1.3
    send_resolved: bool = True


@dataclass(frozen=True)
class ShiftSettings:
    enabled: bool = True
    series: tuple[str, ...] = DEFAULT_SHIFT_SERIES
    trailing: int = 20
    span: int = 10
    h: float = 10.0
    min_run: int = 2
    h_total_variance: float = 7.0
    scale_floor: float = 0.85
    scale_alpha: float = 0.05
    rank_hold: int = 10
    min_gap_ratio: float = 1.3
    rank_margin: float = 1.3
    resolve_after: int = 10
    send_resolved: bool = False


@dataclass(frozen=True)
class RankChangeSettings:
    enabled: bool = True
    hold: int = 10
    min_gap_ratio: float = 1.3
    rank_margin: float = 1.15
    resolve_after: int = 10
    send_resolved: bool = False


@dataclass(frozen=True)
class NonFiniteSettings:
    enabled: bool = True
    send_resolved: bool = True


@dataclass(frozen=True)
class StalledSettings:
    enabled: bool = True
    multiple: float = 5.0
    floor_s: float = 600.0
    min_checkpoints: int = 3
    send_resolved: bool = True


@dataclass(frozen=True)
class AlertSettings:
    """Every knob, with the defaults documented in docs/alerts.md.

    windows: the watched windows (empty: the run's smallest). groups: watched groups.
    repeat_interval_s: how often a still-firing, unacknowledged alert is sent again (0:
    never). metric: the metric quoted in messages (empty: the first of METRIC_CANDIDATES
    present). refractory_w: series alerts of one window W and group within refractory_w x W
    checkpoints of an alert there are that event's, folded into its alert (`fold_event`;
    0: never).
    """

    windows: tuple[int, ...] = ()
    groups: tuple[str, ...] = ("all",)
    repeat_interval_s: float = 4 * 3600.0
    metric: str = ""
    refractory_w: float = 3.0
    edge_collapse: EdgeCollapseSettings = field(default_factory=EdgeCollapseSettings)
    distribution_shift: ShiftSettings = field(default_factory=ShiftSettings)
    rank_change: RankChangeSettings = field(default_factory=RankChangeSettings)
    non_finite: NonFiniteSettings = field(default_factory=NonFiniteSettings)
    stalled: StalledSettings = field(default_factory=StalledSettings)

    def rule(self, name: str) -> Any:
        return getattr(self, name)


class SettingsError(ValueError):
    """An alert setting with an unknown name or a value of the wrong kind or range."""


_POSITIVE = {
    "tau",
    "clear_ratio",
    "plateau_ratio",
    "multiple",
    "min_gap_ratio",
    "h",
    "h_total_variance",
    "rank_margin",
    "scale_alpha",
}


def _coerce(name: str, current: Any, value: Any) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"{name} must be an integer >= 1")
        return value
    if isinstance(current, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise SettingsError(f"{name} must be a number")
        if name.rsplit(".", 1)[-1] in _POSITIVE and value <= 0:
            raise SettingsError(f"{name} must be positive")
        if value < 0:
            raise SettingsError(f"{name} must be >= 0")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise SettingsError(f"{name} must be a string")
        return value
    if isinstance(current, tuple):
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{name} must be a list")
        return tuple(value)
    raise SettingsError(f"{name} cannot be set")


def _merge_dataclass(obj: Any, patch: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in known:
            raise SettingsError(f"unknown alert setting {prefix}{key}")
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{prefix}{key} must be an object")
            changes[key] = _merge_dataclass(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(prefix + key, current, value)
    return replace(obj, **changes)


def merge_settings(base: AlertSettings, patch: Mapping[str, Any]) -> AlertSettings:
    """base overridden by a JSON patch ({"edge_collapse": {"tau": 1.3}, ...}).

    Raises SettingsError on an unknown name or a bad value.
    """
    merged: AlertSettings = _merge_dataclass(base, patch, "")
    for w in merged.windows:
        if not isinstance(w, int) or isinstance(w, bool) or w < 2:
            raise SettingsError("windows must be integers >= 2")
    collapse = merged.edge_collapse
    if collapse.clear_ratio < collapse.tau:
        raise SettingsError("edge_collapse.clear_ratio must be >= tau")
    shift = merged.distribution_shift
    for series in shift.series:
        if series not in SHIFT_SERIES:
            raise SettingsError(f"distribution_shift.series: use {', '.join(SHIFT_SERIES)}")
    if shift.trailing < 2:
        raise SettingsError("distribution_shift.trailing must be >= 2")
    if shift.min_run > shift.span:
        raise SettingsError("distribution_shift.min_run must be <= span")
    if shift.scale_alpha > 1.0:
        raise SettingsError("distribution_shift.scale_alpha must be <= 1")
    return merged


def resolve_settings(
    project_patch: Mapping[str, Any] | None, run_patch: Mapping[str, Any] | None
) -> tuple[AlertSettings, list[str]]:
    """Defaults <- project defaults <- the run's config["alerts"]; bad patches are skipped.

    Returns the settings and the errors of skipped patches (ingest must not fail on them).
    """
    settings, errors = AlertSettings(), []
    for patch in (project_patch, run_patch):
        if not patch:
            continue
        try:
            settings = merge_settings(settings, patch)
        except SettingsError as exc:
            errors.append(str(exc))
    return settings, errors


def settings_as_dict(settings: AlertSettings) -> dict[str, Any]:
    def convert(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: convert(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, tuple):
            return list(obj)
        return obj

    result: dict[str, Any] = convert(settings)
    return result


def watched_windows(settings: AlertSettings, run_windows: Sequence[int]) -> list[int]:
    """The windows the series rules watch: the configured ones the run has, else its smallest."""
    have = sorted(run_windows)
    chosen = [w for w in settings.windows if w in have]
    return chosen or have[:1]


def pick_metric(settings: AlertSettings, metrics: Mapping[str, float]) -> tuple[str, float] | None:
    if settings.metric:
        value = metrics.get(settings.metric)
        return (settings.metric, value) if value is not None else None
    for name in METRIC_CANDIDATES:
        if name in metrics:
            return name, metrics[name]
    return None


# ---------------------------------------------------------------- observations


@dataclass(frozen=True)
class Observation:
    """What the series rules see of one window at one checkpoint (its last step)."""

    step: int
    ratios: tuple[float, ...]
    signal_rank: int
    gap_ratio: float
    total_variance: float

    @classmethod
    def of(cls, step: int, spectrum: Any) -> Observation:
        """From a sedmon_core.spectrum.WindowSpectrum (or anything with its fields)."""
        return cls(
            step=int(step),
            ratios=tuple(float(r) for r in spectrum.ratios),
            signal_rank=int(spectrum.signal_rank),
            gap_ratio=float(spectrum.gap_ratio),
            total_variance=float(spectrum.total_variance),
        )


@dataclass(frozen=True)
class Outcome:
    """A rule's verdict at one checkpoint.

    status: inactive | pending | firing. step: the step the event is dated at (collapse:
    first window below tau; shift: the estimated change). facts: numbers for the message.
    new_event: a new, separate event while one is open (close the open alert, open another).
    """

    status: Status
    step: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    new_event: bool = False


INACTIVE = Outcome("inactive")


# ---------------------------------------------------------------- edge_collapse


def _plateau_scan(
    s: EdgeCollapseSettings, state: dict[str, Any], obs: Observation
) -> tuple[int, float] | None:
    """Advance the plateau search by one window; (k, ratio) once a plateau stands."""
    k, ratio = obs.signal_rank, obs.gap_ratio
    if ratio >= s.plateau_ratio:
        if state.get("cand_k") == k:
            state["run"] = int(state.get("run", 0)) + 1
        else:
            state["cand_k"], state["run"], state["cand_step"] = k, 1, obs.step
    else:
        state["cand_k"], state["run"] = None, 0
    if state["run"] >= s.plateau_points:
        return k, ratio
    return None


def edge_collapse(
    s: EdgeCollapseSettings, state: Mapping[str, Any], obs: Observation
) -> tuple[dict[str, Any], Outcome]:
    """One window of the collapse rule: pending_points windows in a row below tau fire, dated
    at the first window below tau since the edge last stood at clear_ratio or above. state
    keys: key_k, peak, peak_step, plateau_step, below, below_step, collapsed, and the
    plateau search's cand_k, run, cand_step."""
    st = dict(state)
    plateau = _plateau_scan(s, st, obs)
    key_k = st.get("key_k")

    if plateau is not None and (
        key_k is None
        or st.get("collapsed")
        or (plateau[0] != key_k and _key_ratio(obs, key_k) >= s.plateau_ratio)
    ):
        # A (new) standing edge: arm on it. After a collapse this resolves the alert; while
        # armed, the watch moves only if the old edge is not fading (its ratio is high too).
        st.update(
            key_k=plateau[0],
            peak=plateau[1],
            peak_step=obs.step,
            plateau_step=st.get("cand_step", obs.step),
            below=0,
            below_step=None,
            collapsed=False,
        )
        return st, INACTIVE
    if key_k is None:
        return st, INACTIVE

    ratio = _key_ratio(obs, key_k)
    facts = {
        "k": key_k,
        "key_ratio": ratio,
        "tau": s.tau,
        "peak_ratio": st.get("peak"),
        "peak_step": st.get("peak_step"),
        "plateau_step": st.get("plateau_step"),
        "signal_rank": obs.signal_rank,
        "gap_ratio": obs.gap_ratio,
    }
    if st.get("collapsed"):
        return st, Outcome("firing", st.get("below_step"), facts)
    rank_rose = obs.signal_rank > key_k and obs.gap_ratio >= s.plateau_ratio
    if ratio < s.tau and not rank_rose:
        # A higher edge standing out means a direction joined the signal (rank_change), not
        # that direction key_k merged into the noise.
        st["below"] = int(st.get("below", 0)) + 1
        if st.get("below_step") is None:
            st["below_step"] = obs.step
        facts["detected_step"] = obs.step
        if st["below"] >= s.pending_points:
            # Only a plateau that stands after the collapse may resolve it.
            st.update(collapsed=True, cand_k=None, run=0)
            return st, Outcome("firing", st["below_step"], facts)
        return st, Outcome("pending", st["below_step"], facts)
    st["below"] = 0
    if ratio >= s.clear_ratio or rank_rose:
        # Clear again: the next dip is dated afresh (a ratio hovering at tau keeps its date).
        st["below_step"] = None
    if ratio > float(st.get("peak") or 0.0):
        st["peak"], st["peak_step"] = ratio, obs.step
    return st, INACTIVE


def _key_ratio(obs: Observation, k: int) -> float:
    return obs.ratios[k - 1] if 1 <= k <= len(obs.ratios) else 1.0


# ---------------------------------------------------------------- held rank readings


def clear_rank(obs: Observation, min_gap_ratio: float, margin: float) -> int | None:
    """The signal rank when its edge stands out: gap ratio >= min_gap_ratio and >= margin x
    every other ratio R_j, j <= W/2 (two near-equal edges make an ambiguous rank)."""
    if obs.gap_ratio < min_gap_ratio:
        return None
    half = obs.ratios[: max(1, (len(obs.ratios) + 1) // 2)]
    others = [r for j, r in enumerate(half, start=1) if j != obs.signal_rank]
    if others and obs.gap_ratio < margin * max(others):
        return None
    return obs.signal_rank


def _held_rank(
    state: dict[str, Any],
    obs: Observation,
    min_gap_ratio: float,
    margin: float,
    hold: int,
    lower_needs_gone: bool = False,
) -> tuple[int, int, int] | None:
    """Track the clear signal rank; (from, to, first step) when a new one has held `hold` windows.

    Only clear readings (`clear_rank`) count; anything else breaks the streak, so a rank
    flickering between near-equal edges never holds. With `lower_needs_gone`, a reading
    below the established rank k counts only while the edge k is no longer clear (R_k <
    min_gap_ratio): a lower rank means that direction k merged into the noise. The first
    rank to hold becomes the established one without an event.
    """
    reading = clear_rank(obs, min_gap_ratio, margin)
    established = state.get("established")
    if (
        lower_needs_gone
        and reading is not None
        and established is not None
        and reading < int(established)
        and _key_ratio(obs, int(established)) >= min_gap_ratio
    ):
        reading = None
    if reading is None:
        state["cand"], state["run"] = None, 0
    elif reading == state.get("cand"):
        state["run"] = int(state.get("run", 0)) + 1
    else:
        state["cand"], state["run"], state["cand_step"] = reading, 1, obs.step
    if state["run"] >= hold and state["cand"] != established:
        state["established"] = state["cand"]
        if established is not None:
            return int(established), int(state["cand"]), int(state["cand_step"])
    return None


# ---------------------------------------------------------------- rank_change


REVERT_HOLDS = 4
"""A rank change straight back within REVERT_HOLDS x hold windows of an event ends it."""


def rank_change(
    s: RankChangeSettings, state: Mapping[str, Any], obs: Observation
) -> tuple[dict[str, Any], Outcome]:
    """Signal rank changes and holds `hold` clear windows: pending while it holds, then firing
    for `resolve_after` windows.

    A lower rank counts only while the edge it leaves is no longer clear (its ratio below
    min_gap_ratio): on a noisy run two signal directions whose coefficients line up in a
    window make the top one stand out (R_1 >= margin x R_2) for W windows or more while
    the second edge stays clear, and that is no direction leaving the signal. A change
    straight back (to the rank before the last event, from the rank it went to) that holds
    within REVERT_HOLDS x hold windows of that event is the end of a transient, not a new
    event: the first alert told it, a second would double the count of every transient.
    state: n (windows seen), cand, run, cand_step, established, since, event, last (the
    last event's from, to and n).
    """
    st = dict(state)
    n = int(st.get("n", 0)) + 1
    st["n"] = n
    last = st.get("last") or {}
    change = _held_rank(st, obs, s.min_gap_ratio, s.rank_margin, s.hold, lower_needs_gone=True)

    def reverts(before: Any, after: Any) -> bool:
        return (
            bool(last)
            and (before, after) == (last.get("to"), last.get("from"))
            and n - int(last.get("n", 0)) <= REVERT_HOLDS * s.hold
        )

    if change is not None and not reverts(change[0], change[1]):
        before, after, first_step = change
        st["event"] = {"from_rank": before, "to_rank": after, "change_step": first_step}
        st["since"] = 0
        st["last"] = {"from": before, "to": after, "n": n}
        facts = {
            **st["event"],
            "held": s.hold,
            "gap_ratio": obs.gap_ratio,
            "detected_step": obs.step,
        }
        return st, Outcome("firing", first_step, facts, new_event=True)
    if st.get("since") is not None:
        st["since"] = int(st["since"]) + 1
        if st["since"] < s.resolve_after:
            event = st.get("event") or {}
            return st, Outcome("firing", event.get("change_step"), {**event, "held": s.hold})
        st["since"], st["event"] = None, None
        return st, INACTIVE
    established, cand = st.get("established"), st.get("cand")
    if (
        established is not None
        and cand is not None
        and cand != established
        and not reverts(established, cand)
    ):
        facts = {
            "from_rank": established,
            "to_rank": cand,
            "held": st["run"],
            "gap_ratio": obs.gap_ratio,
        }
        return st, Outcome("pending", st.get("cand_step"), facts)
    return st, INACTIVE


# ---------------------------------------------------------------- distribution_shift


_RATIO_SERIES: tuple[str, ...] = ("gap_ratio", "next_ratio")


def _log_edge_share(obs: Observation, k: int) -> float:
    """log of (sigma_1^2 + ... + sigma_k^2) / (sigma_{k+1}^2 + ... + sigma_W^2), from the ratios."""
    log_sigma, logs = 0.0, [0.0]
    for ratio in obs.ratios:
        log_sigma -= math.log(max(ratio, 1e-300))
        logs.append(log_sigma)
    top = sum(math.exp(2.0 * v) for v in logs[:k])
    rest = sum(math.exp(2.0 * v) for v in logs[k:])
    return math.log(top) - math.log(max(rest, 1e-300))


def _shift_values(obs: Observation, edge: int | None) -> dict[str, float]:
    """The detector's inputs at one window, all logs (changes of a ratio or a variance are
    multiplicative): the edge at the established rank k, the next ratio R_{k+1} (a direction
    joining the signal raises it), and the total variance.

    The edge (series "gap_ratio") is the ratio R_1 at k = 1 and the share of the top k modes,
    (sigma_1^2 + ... + sigma_k^2) / (the rest), at k >= 2: when the coefficients of two
    signal directions line up over a window, energy moves from sigma_k to sigma_1 and R_k
    jumps with no change of the signal subspace or of the noise; their sum does not move.
    Before a rank is established it is the gap ratio R_k*.
    """
    values = {"total_variance": math.log(max(obs.total_variance, 1e-300))}
    if edge is None:
        values["gap_ratio"] = math.log(max(obs.gap_ratio, 1e-300))
    else:
        if edge >= 2:
            values["gap_ratio"] = _log_edge_share(obs, edge)
        else:
            values["gap_ratio"] = math.log(max(_key_ratio(obs, edge), 1e-300))
        if edge < len(obs.ratios):
            values["next_ratio"] = math.log(max(obs.ratios[edge], 1e-300))
    return values


def _track_of(data: Mapping[str, Any] | None) -> IncrementTrack:
    if not data:
        return IncrementTrack()
    return IncrementTrack(
        last=data.get("last"),
        past=tuple(data.get("past", ())),
        z=tuple(data.get("z", ())),
        scale=data.get("scale"),
    )


def _track_state(track: IncrementTrack) -> dict[str, Any]:
    return {"last": track.last, "past": list(track.past), "z": list(track.z), "scale": track.scale}


def distribution_shift(
    s: ShiftSettings, state: Mapping[str, Any], obs: Observation
) -> tuple[dict[str, Any], Outcome]:
    """Online change point on the log edge at the established rank (`_shift_values`), the log
    next ratio and the log total variance (windowed GLR, `track_increment`).

    The established clear rank k (held rank_hold windows) picks the edge: the edge at a fixed
    k moves smoothly through a change, where the maximum ratio first falls and then jumps
    to another edge. The ratios are tested over runs of at least min_run windows, so one
    window's jump alone (one odd delta briefly merging two directions) must be sqrt(2)
    times larger; the total variance, whose differences are far less heavy-tailed, is
    tested from one window on (threshold h_total_variance). After an alarm every series
    starts a fresh reference once the change has fully entered the window (span - 1 -
    delay windows later), and the rank of the new regime is established afresh without an
    event: one change fires once. state: n (windows seen), steps (the last span + 1
    windows' steps), tracks {series: IncrementTrack}, edge, rank (held-rank state), skip,
    since, event.
    """
    st = dict(state)
    n = int(st.get("n", 0)) + 1
    steps = [*list(st.get("steps", [])), obs.step][-(s.span + 1) :]
    st["n"], st["steps"] = n, steps
    use_rank = "signal_rank" in s.series
    rank_state = dict(st.get("rank", {}))
    if use_rank:
        # The held rank only picks the edge; its changes are `rank_change`'s alerts.
        _held_rank(rank_state, obs, s.min_gap_ratio, s.rank_margin, s.rank_hold)
    st["rank"] = rank_state
    edge = rank_state.get("established") if use_rank else None
    tracks = {name: _track_of(data) for name, data in dict(st.get("tracks", {})).items()}
    if edge != st.get("edge"):
        # The ratio series now measure another edge: their references start over.
        tracks = {name: t.restarted() if name in _RATIO_SERIES else t for name, t in tracks.items()}
        st["edge"] = edge

    values = _shift_values(obs, edge)
    watched = [name for name in s.series if name in values]
    # (series, windows from the change to now, direction, statistic)
    alarms: list[tuple[str, int, str, float]] = []
    skip = int(st.get("skip", 0))
    if skip > 0:
        # The change is still entering the window: keep the last values, test nothing.
        st["skip"] = skip - 1
        for name in watched:
            tracks[name] = replace(tracks.get(name, IncrementTrack()), last=values[name])
    else:
        for name in watched:
            track, reading = track_increment(
                tracks.get(name, IncrementTrack()),
                values[name],
                s.trailing,
                s.span,
                s.scale_floor,
                s.scale_alpha,
                1 if name == "total_variance" else s.min_run,
            )
            tracks[name] = track
            h = s.h_total_variance if name == "total_variance" else s.h
            if reading is not None and reading.statistic > h:
                alarms.append((name, reading.span - 1, reading.direction, reading.statistic))
    st["tracks"] = {name: _track_state(t) for name, t in tracks.items()}

    if alarms:
        delay = max(a[1] for a in alarms)
        st["skip"] = max(0, s.span - 1 - delay)
        st["tracks"] = {name: _track_state(t.restarted()) for name, t in tracks.items()}
        # The new regime's rank is established afresh, without an event of its own.
        st["rank"] = {**rank_state, "established": None}
        if st.get("since") is not None:
            # Another series confirming the open event: fold it in, no second alert.
            open_event = dict(st.get("event") or {})
            open_event["series"] = sorted({*open_event.get("series", []), *(a[0] for a in alarms)})
            st["event"] = open_event
            alarms = []
    if alarms:
        delay = max(a[1] for a in alarms)
        change_step = steps[-1 - delay]
        event: dict[str, Any] = {
            "change_step": change_step,
            "detected_step": obs.step,
            "delay_checkpoints": delay,
            "series": sorted({a[0] for a in alarms}),
            "directions": {a[0]: a[2] for a in alarms},
            "statistics": {a[0]: round(a[3], 2) for a in alarms},
            "edge": edge,
            "gap_ratio": obs.gap_ratio,
            "signal_rank": obs.signal_rank,
            "total_variance": obs.total_variance,
        }
        st["since"], st["event"] = 0, event
        return st, Outcome("firing", change_step, event, new_event=True)

    if st.get("since") is not None:
        st["since"] = int(st["since"]) + 1
        if st["since"] < s.resolve_after:
            held: dict[str, Any] = st.get("event") or {}
            return st, Outcome("firing", held.get("change_step"), held)
        st["since"], st["event"] = None, None
    return st, INACTIVE


# ---------------------------------------------------------------- dispatch by name


def evaluate(
    rule: str, settings: AlertSettings, state: Mapping[str, Any], obs: Observation
) -> tuple[dict[str, Any], Outcome]:
    """Run one series rule on one window; a disabled rule keeps its state and stays inactive."""
    if rule == "edge_collapse":
        if not settings.edge_collapse.enabled:
            return dict(state), INACTIVE
        return edge_collapse(settings.edge_collapse, state, obs)
    if rule == "distribution_shift":
        if not settings.distribution_shift.enabled:
            return dict(state), INACTIVE
        return distribution_shift(settings.distribution_shift, state, obs)
    if rule == "rank_change":
        if not settings.rank_change.enabled:
            return dict(state), INACTIVE
        return rank_change(settings.rank_change, state, obs)
    raise ValueError(f"{rule} is not a series rule")


# ---------------------------------------------------------------- stalled


ARRIVALS_KEPT = 21


def record_arrival(state: Mapping[str, Any], at: float) -> dict[str, Any]:
    """Remember a checkpoint's arrival time (unix seconds); keeps the last ARRIVALS_KEPT."""
    st = dict(state)
    st["arrivals"] = [*list(st.get("arrivals", [])), at][-ARRIVALS_KEPT:]
    return st


@dataclass(frozen=True)
class StalledCheck:
    stalled: bool
    silent_s: float
    usual_s: float | None
    threshold_s: float | None


def stalled_check(s: StalledSettings, arrivals: Sequence[float], now: float) -> StalledCheck:
    """Stalled when the time since the last arrival exceeds max(multiple x usual, floor_s).

    The usual interval is the median of the recent gaps between arrivals (robust to a pause
    for evaluation). Needs min_checkpoints arrivals: a run's first checkpoints define it.
    """
    if not arrivals:
        return StalledCheck(False, 0.0, None, None)
    silent = max(0.0, now - arrivals[-1])
    if len(arrivals) < max(2, s.min_checkpoints):
        return StalledCheck(False, silent, None, None)
    usual = float(np.median(np.diff(np.asarray(arrivals, dtype=np.float64))))
    threshold = max(s.multiple * usual, s.floor_s)
    return StalledCheck(s.enabled and silent > threshold, silent, usual, threshold)


# ---------------------------------------------------------------- lifecycle


Action = Literal[
    "none", "open_pending", "open_firing", "fire", "update", "resolve", "drop", "reopen"
]


def lifecycle(open_state: str | None, outcome: Outcome) -> Action:
    """What to do with a fingerprint's open alert (None, "pending" or "firing") given an outcome.

    open_pending / open_firing: create the alert row; fire: pending -> firing; update: keep
    it, refresh its facts; resolve: firing -> resolved; drop: a pending alert that never
    fired is deleted (Grafana's pending -> normal); reopen: resolve the open one and open a
    new firing one (a separate event while the first was still open).
    """
    if outcome.status == "inactive":
        if open_state == "firing":
            return "resolve"
        return "drop" if open_state == "pending" else "none"
    if open_state is None:
        return "open_firing" if outcome.status == "firing" else "open_pending"
    if outcome.new_event and open_state == "firing":
        return "reopen"
    if outcome.status == "firing" and open_state == "pending":
        return "fire"
    return "update"


FIRE_ACTIONS: tuple[Action, ...] = ("open_firing", "fire", "reopen")
"""Lifecycle actions that raise an alert (a message goes out unless silenced)."""


def advance_open_state(open_states: dict[str, str | None], rule: str, outcome: Outcome) -> bool:
    """Apply `lifecycle` to `rule`'s open alert in `open_states` (rule -> None, "pending" or
    "firing"), as the engine does to its rows; True when an alert is raised. For replays of
    the rules without a server (bench/alerts.py, tests)."""
    action = lifecycle(open_states[rule], outcome)
    if action == "open_pending":
        open_states[rule] = "pending"
    elif action in FIRE_ACTIONS:
        open_states[rule] = "firing"
    elif action in ("resolve", "drop"):
        open_states[rule] = None
    return action in FIRE_ACTIONS


EVENT_STATE = "series_event"
"""The `alert_state` rule name under which `fold_event` keeps its state per window and group."""


@dataclass(frozen=True)
class Folded:
    """A series rule's alert folded into its event's alert: recorded there, not raised or sent.

    step: the step the rule dates the event at; detected_step: the checkpoint it fired at.
    """

    rule: str
    step: int | None
    detected_step: int
    facts: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "step": self.step,
            "detected_step": self.detected_step,
            "facts": dict(self.facts),
        }


NEVER_FOLDED = frozenset({"edge_collapse"})
"""Rules that raise their own alert even inside another's event span: the collapse of the
edge is the product's headline event, so a shift alert that saw it first does not hide it."""


def fold_event(
    settings: AlertSettings,
    window: int,
    state: Mapping[str, Any],
    outcomes: Mapping[str, Outcome],
    open_states: Mapping[str, str | None],
    step: int,
    silenced: Callable[[str], bool] | None = None,
) -> tuple[dict[str, Any], dict[str, Outcome], list[Folded]]:
    """One event, one alert: the series rules' outcomes of one window and group at one
    checkpoint, adjusted so that an alert raised within refractory_w x W checkpoints of the
    event's first alert (the anchor) is folded into it.

    One change is seen by several rules, each in its own time: a new direction (rank 1 ->
    2) fires `distribution_shift` at once and `rank_change` a hold later; a fading one fires
    `edge_collapse` and then `rank_change`. Within the span, a rule that would raise an
    alert (lifecycle open_firing, fire or reopen) is folded: its outcome becomes inactive
    (a pending alert of it is dropped; one of its own still open stays open, without a new
    event) and the rule stays muted until its outcome is inactive again or it reports a new
    event after the span. The anchor is the first alert raised outside a span, in
    SERIES_RULES order within a checkpoint; a silenced rule's alert (recorded, not sent)
    anchors nothing. `edge_collapse` (NEVER_FOLDED) always raises its own alert, and that
    alert starts a new span. refractory_w 0: nothing is folded.

    outcomes: rule -> its outcome now (`evaluate`); open_states: rule -> its open alert's
    state (None, "pending", "firing"); step: the checkpoint's step. state: n (windows
    seen), anchor {rule, n, alert_id} (the engine fills alert_id), muted. Returns the new
    state, the outcomes to apply, and what was folded (for the anchor alert's details).
    """
    st = dict(state)
    n = int(st.get("n", 0)) + 1
    st["n"] = n
    span = round(settings.refractory_w * window)
    anchor: dict[str, Any] = dict(st.get("anchor") or {})
    muted = set(st.get("muted") or ())
    adjusted = dict(outcomes)
    folded: list[Folded] = []

    def in_span() -> bool:
        return bool(anchor) and n - int(anchor["n"]) < span

    for rule in SERIES_RULES:
        outcome = adjusted.get(rule, INACTIVE)
        if rule in muted:
            if outcome.status == "inactive" or (outcome.new_event and not in_span()):
                muted.discard(rule)
            else:
                if outcome.new_event:
                    folded.append(Folded(rule, outcome.step, step, dict(outcome.facts)))
                adjusted[rule] = INACTIVE
                continue
        current = open_states.get(rule)
        if lifecycle(current, outcome) not in FIRE_ACTIONS:
            continue
        if in_span() and rule not in NEVER_FOLDED:
            folded.append(Folded(rule, outcome.step, step, dict(outcome.facts)))
            if current == "firing":
                adjusted[rule] = replace(outcome, new_event=False)
            else:
                adjusted[rule] = INACTIVE
                muted.add(rule)
        elif span > 0 and not (silenced is not None and silenced(rule)):
            anchor = {"rule": rule, "n": n, "alert_id": None}
    st["anchor"] = anchor or None
    st["muted"] = sorted(muted)
    return st, adjusted, folded


def repeat_due(
    last_notified_at: float | None, now: float, repeat_interval_s: float, acknowledged: bool
) -> bool:
    """A firing alert is sent again after repeat_interval_s, unless acknowledged; one that fired
    while silenced (never sent) goes out at the first evaluation after the silence ends."""
    if acknowledged:
        return False
    if last_notified_at is None:
        return True
    return repeat_interval_s > 0 and now - last_notified_at >= repeat_interval_s
