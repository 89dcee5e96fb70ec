"""The validation's measurements on recorded runs, as plain data (no plotting, no text).

Every spectral quantity comes from sedmon_core (the product's math); the alert replays
call the server's own rule functions offline, window by window, as ingest would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from demo.recording import Recording
from sedmon_core.changepoints import cusum_change, max_derivative_change, ttest_change
from sedmon_core.coupling import lag_sweep, lagged_correlation
from sedmon_core.noise import noise_cv_against_mp, ratio_null
from sedmon_core.phases import segment_phases
from sedmon_core.reliability import split_half_reliability
from sedmon_core.spectrum import WindowSpectrum, spectrum_series, window_steps
from sedmon_server.alerts.rules import AlertSettings, Observation, evaluate

MONITOR_KEY = ("countsketch", 100, 0)
"""The sketch a live run sends by default in the demo: countsketch, k = 10 W at W = 10."""


@dataclass(frozen=True)
class Series:
    """Spectra of every window of size W of one run: steps (n,) of each window's last
    checkpoint, the spectra, and the val loss (n,) at those checkpoints."""

    window: int
    steps: np.ndarray
    spectra: list[WindowSpectrum]
    val_loss: np.ndarray

    def values(self, name: str) -> np.ndarray:
        """(n,) one WindowSpectrum field per window."""
        return np.array([getattr(s, name) for s in self.spectra], dtype=np.float64)

    def ratio(self, j: int) -> np.ndarray:
        """(n,) R_j = sigma_j / sigma_{j+1} (1-based j)."""
        return np.array([s.ratios[j - 1] for s in self.spectra], dtype=np.float64)

    def g23(self) -> np.ndarray:
        """(n,) sigma_2^2 - sigma_3^2, the grokking papers' additive gap (squared units)."""
        return np.array([s.sigma[1] ** 2 - s.sigma[2] ** 2 for s in self.spectra])


def series(
    rec: Recording,
    window: int = 10,
    source: str = "exact",
    rank_rule: str = "half",
) -> Series:
    """Window spectra of a recording. source: "exact", "sketch" (MONITOR_KEY) or a group."""
    if source == "exact":
        dots, dim = rec.dots, None
    elif source == "sketch":
        dots, dim = rec.sketch_dots[MONITOR_KEY], MONITOR_KEY[1]
    else:
        dots, dim = rec.group_dots[source], None
    spectra = spectrum_series(dots, window, rank_rule, dim)
    steps = window_steps(rec.steps, window)
    return Series(window, steps, spectra, rec.metric("val_loss")[window:])


# ------------------------------------------------------------------ 1. rank and noise


@dataclass(frozen=True)
class RankSignificance:
    """Signal rank and its significance over the windows of one run (W fixed).

    rank_counts: {k*: windows}. above_null: fraction of windows whose R_{k*} exceeds the
    95th percentile of R_{k*} under the Gaussian equal-norm null. modes_above: median number
    of sigma_j above their null 95th percentile. r2_above: fraction with R_2 above its null.
    split_half: fraction of windows whose k* agrees between odd and even deltas.
    """

    rank_counts: dict[int, int]
    above_null: float
    median_excess: float
    modes_above: float
    r2_above: float
    split_half: float


def rank_significance(rec: Recording, s: Series, n_draws: int = 200) -> RankSignificance:
    """Signal rank of each exact window against `ratio_null` in D = rec.parameters dims."""
    counts: dict[int, int] = {}
    above, excess, modes, r2 = [], [], [], []
    dots = rec.dots
    for i, spec in enumerate(s.spectra):
        counts[spec.signal_rank] = counts.get(spec.signal_rank, 0) + 1
        gram = dots[i : i + s.window, i : i + s.window]
        null = ratio_null(gram, rec.parameters, n_draws=n_draws, seed=i)
        k = spec.signal_rank
        above.append(bool(null.above[k - 1]))
        excess.append(float(null.excess[k - 1]))
        modes.append(int(null.sigma_above.sum()))
        r2.append(bool(null.above[1]))
    split = split_half_reliability(dots, s.window)
    return RankSignificance(
        rank_counts=dict(sorted(counts.items())),
        above_null=float(np.mean(above)),
        median_excess=float(np.median(excess)),
        modes_above=float(np.median(modes)),
        r2_above=float(np.mean(r2)),
        split_half=float("nan") if split.agreement is None else float(split.agreement),
    )


@dataclass(frozen=True)
class NoiseStructure:
    """Median over windows of the CV of the eigenvalues below the edge, against MP."""

    source: str
    dim: int
    observed_cv: float
    predicted_cv: float
    excess: float


def noise_structure(rec: Recording, window: int = 10) -> list[NoiseStructure]:
    """Noise CV vs Marchenko-Pastur for the exact deltas (D) and the monitor sketch (k)."""
    out = []
    for source, dim in (("exact", rec.parameters), ("sketch", MONITOR_KEY[1])):
        s = series(rec, window, source)
        cvs = [
            noise_cv_against_mp(sp.sigma, sp.signal_rank, dim, finite_size=True) for sp in s.spectra
        ]
        obs = np.array([c.observed_cv for c in cvs])
        pred = np.array([c.predicted_cv for c in cvs])
        ok = np.isfinite(obs)
        out.append(
            NoiseStructure(
                source,
                dim,
                float(np.median(obs[ok])),
                float(np.median(pred[ok])),
                float(np.median(obs[ok] / pred[ok])),
            )
        )
    return out


# ------------------------------------------------------------------ 2. lag


@dataclass(frozen=True)
class LagResult:
    """Peak lag (checkpoints; > 0: the edge leads val loss) and r per W, and the sweep's flip."""

    windows: tuple[int, ...]
    peak_lags: tuple[int | None, ...]
    peak_r: tuple[float, ...]
    lag_flip: bool
    curves: dict[int, tuple[np.ndarray, np.ndarray]]


def lag_result(
    rec: Recording, windows: tuple[int, ...] = (10, 20, 30), source: str = "exact"
) -> LagResult:
    """Cross-correlation of the gap ratio with val loss (cubic-detrended), lags -5..5.

    source: "exact" deltas or the monitor "sketch" (as `series`)."""
    pairs = {}
    curves = {}
    for w in windows:
        s = series(rec, w, source)
        x = s.values("gap_ratio")
        pairs[w] = (x, s.val_loss)
        res = lagged_correlation(x, s.val_loss)
        curves[w] = (res.lags, res.r)
    sweep = lag_sweep(pairs)
    return LagResult(sweep.windows, sweep.peak_lags, sweep.peak_r, sweep.lag_flip, curves)


# ------------------------------------------------------------------ 4. shift, alerts


@dataclass(frozen=True)
class AlertEvent:
    """An alert the product's rule would open: rule, step dated, step detected, facts."""

    rule: str
    step: int | None
    detected_step: int
    facts: dict[str, Any]


def replay_alerts(
    s: Series, rules: tuple[str, ...] = ("distribution_shift", "edge_collapse", "rank_change")
) -> list[AlertEvent]:
    """Feed the windows one by one to the server's rule functions (default settings)."""
    settings = AlertSettings()
    events: list[AlertEvent] = []
    for rule in rules:
        state: dict[str, Any] = {}
        firing = False
        for step, spec in zip(s.steps, s.spectra, strict=True):
            state, outcome = evaluate(rule, settings, state, Observation.of(int(step), spec))
            now = outcome.status == "firing"
            if now and (not firing or outcome.new_event):
                events.append(AlertEvent(rule, outcome.step, int(step), dict(outcome.facts)))
            firing = now
    return sorted(events, key=lambda e: e.detected_step)


@dataclass(frozen=True)
class OfflineShift:
    """The offline change-point detectors on one series: method -> detected step or None."""

    series: str
    detected: dict[str, int | None]


def offline_shifts(s: Series) -> list[OfflineShift]:
    """max-derivative, CUSUM and t-test on the gap ratio and on log total variance."""
    out = []
    for name, y in (
        ("gap_ratio", s.values("gap_ratio")),
        ("log_total_variance", np.log(s.values("total_variance"))),
    ):
        found: dict[str, int | None] = {}
        for cp in (max_derivative_change(y), cusum_change(y), ttest_change(y)):
            found[cp.method] = None if cp.index is None else int(s.steps[cp.index])
        out.append(OfflineShift(name, found))
    return out


# ------------------------------------------------------------------ 5. phases


@dataclass(frozen=True)
class PhaseResult:
    """Phase boundaries (steps) of the W = 10 gap ratio by one method."""

    method: str
    peak_step: int | None
    peak: float
    plateau_start: int | None
    collapse_step: int | None


def phase_results(s: Series, values: np.ndarray | None = None) -> list[PhaseResult]:
    """segment_phases by every method on the gap ratio (or on `values`)."""
    y = s.values("gap_ratio") if values is None else values
    out = []
    for method in ("threshold", "peak", "derivative"):
        ph = segment_phases(y, method)

        def at(i: int | None) -> int | None:
            return None if i is None else int(s.steps[i])

        peak = float(y[ph.peak_index]) if ph.peak_index is not None else float("nan")
        start, end = at(ph.plateau_start), at(ph.collapse_index)
        out.append(PhaseResult(method, at(ph.peak_index), peak, start, end))
    return out


# ------------------------------------------------------------------ 6. layer groups


@dataclass(frozen=True)
class GroupResult:
    """One layer group at W = 10: size, modal k*, share of windows with k* = the whole
    model's, median gap ratio, peak lag/r with val loss, and the response to the shift
    (max gap ratio over the 3 windows after it / median of the 10 before; nan without)."""

    group: str
    parameters: int
    modal_rank: int
    agreement: float
    median_gap: float
    peak_lag: int | None
    peak_r: float
    shift_response: float


def group_results(rec: Recording, window: int = 10) -> list[GroupResult]:
    """Per-layer-group spectra (exact) against the whole model's."""
    whole = series(rec, window)
    ranks_whole = whole.values("signal_rank")
    out = []
    for group, size in rec.group_sizes.items():
        s = series(rec, window, group)
        ranks = s.values("signal_rank")
        values, counts = np.unique(ranks, return_counts=True)
        gap = s.values("gap_ratio")
        lag = lagged_correlation(gap, s.val_loss)
        response = float("nan")
        shift = rec.spec.shift_step
        if shift is not None:
            i = int(np.searchsorted(s.steps, shift, side="right"))
            before = gap[max(0, i - 10) : i]
            response = float(gap[i : i + 3].max() / np.median(before))
        out.append(
            GroupResult(
                group,
                size,
                int(values[int(np.argmax(counts))]),
                float(np.mean(ranks == ranks_whole)),
                float(np.median(gap)),
                lag.peak_lag,
                lag.peak_r,
                response,
            )
        )
    return out


# ------------------------------------------------------------------ grokking


@dataclass(frozen=True)
class GrokTimeline:
    """Steps of the grokking run's events and of the gap's turning points (W = 10).

    memorised: train accuracy >= 99 %; test_50 / test_95: test accuracy passes 50 / 95 %;
    gap_min_step: where the gap ratio R* is lowest after memorisation; collapse_*: the
    collapse step of R*, R_2 and g23 = sigma_2^2 - sigma_3^2 by the `peak` method (None:
    no collapse); rank: modal signal rank.
    """

    memorised: int | None
    test_50: int | None
    test_95: int | None
    gap_at_memorised: float
    gap_min_step: int | None
    gap_min: float
    gap_at_end: float
    collapse_gap: int | None
    collapse_r2: int | None
    collapse_g23: int | None
    rank: int


def grok_timeline(rec: Recording, window: int = 10) -> GrokTimeline:
    """Accuracy milestones against the gap's collapse points for one grokking run."""
    res = rec.result
    s = series(rec, window)
    gap = s.values("gap_ratio")
    memorised = res.first_step_at_or_above("train_accuracy", 0.99)
    after = s.steps >= (memorised or 0)
    i_min = int(np.flatnonzero(after)[int(np.argmin(gap[after]))]) if after.any() else None

    def collapse(y: np.ndarray) -> int | None:
        c = segment_phases(y, "peak").collapse_index
        return None if c is None else int(s.steps[c])

    i_mem = int(np.searchsorted(s.steps, memorised or 0))
    ranks, counts = np.unique(s.values("signal_rank"), return_counts=True)
    return GrokTimeline(
        memorised=memorised,
        test_50=res.first_step_at_or_above("test_accuracy", 0.5),
        test_95=res.first_step_at_or_above("test_accuracy", 0.95),
        gap_at_memorised=float(gap[min(i_mem, gap.size - 1)]),
        gap_min_step=None if i_min is None else int(s.steps[i_min]),
        gap_min=float(gap[i_min]) if i_min is not None else float("nan"),
        gap_at_end=float(gap[-1]),
        collapse_gap=collapse(gap),
        collapse_r2=collapse(s.ratio(2)),
        collapse_g23=collapse(s.g23()),
        rank=int(ranks[int(np.argmax(counts))]),
    )
