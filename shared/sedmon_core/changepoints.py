"""Change points of a run's series (distribution shift): three offline detectors, one online.

A series is one value per window or checkpoint, indices 0..n-1 (gap ratio, total variance,
...). A change index c is the first index of the new regime: y[:c] before, y[c:] after.
The paper names the offline methods (maximum of the derivative, CUSUM, two-sample t-test)
without parameters; the defaults below are ours, each settable, each reported in the
result's `params`.

- `max_derivative_change`: the derivative at split i is the slope between the means of the
  `span` points before and after i; it must exceed `z_threshold` times its noise level
  (robust noise scale from the first differences) to count.
- `cusum_change`: Page's two-sided tabular CUSUM on the series standardised against its
  first `reference` points (median, 1.4826 MAD); drift k, threshold h in standard units.
- `ttest_change`: Welch t-test of y[:i] against y[i:] at every split leaving
  `min_segment` points on each side; the best split counts when its Bonferroni-corrected
  p-value (p times the number of splits scanned) is < alpha.
- `online_shift`: for alerts, one step per new point (`track_increment`). First differences,
  each standardised against the `trailing` differences before it (median, 1.4826 MAD,
  the MAD floored at a fraction of its own running average), and a windowed generalised
  likelihood ratio (GLR) over the last `span` standardised differences: a step is one
  large difference, a change that enters a window series over several windows is a run
  of moderate ones, and the GLR weighs every run length at once. A CUSUM with a fixed
  reference false-alarms on slow trends (PAPER-NOTES.md); a trend is a constant shift of
  the differences, which the trailing median removes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

MAD_TO_SD = 1.4826
"""1 / Phi^-1(3/4): MAD times this estimates the standard deviation of Gaussian noise."""


@dataclass(frozen=True)
class ChangePoint:
    """One detector's answer on one series.

    index: the change index c (first point of the new regime), or None when nothing passes
    the detector's threshold. candidate: the best split the detector found, passing or not.
    score: the statistic at the candidate (its units in each detector's docstring).
    params: the parameters used.
    """

    method: str
    index: int | None
    candidate: int | None
    score: float
    params: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class OnlineShift:
    """Online detector's answer for a series up to now.

    alarm: the statistic crossed h somewhere in the series. alarm_index: the first index
    where it did. change_index: estimated change index (the first point of the run of
    differences that made the alarm). direction: "up" | "down" (the sign of that run's
    sum), None without alarm. statistic: the windowed GLR at the latest point; peak: the
    largest reached (standard units). n_tested: differences that had a full reference.
    """

    alarm: bool
    alarm_index: int | None
    change_index: int | None
    direction: str | None
    statistic: float
    peak: float
    n_tested: int
    params: dict[str, float | int] = field(default_factory=dict)


def _as_series(series: np.ndarray) -> np.ndarray:
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("series must be finite")
    return y


def _robust_scale(values: np.ndarray) -> float:
    """1.4826 MAD of values; falls back to the mean absolute deviation, then to a tiny floor."""
    med = float(np.median(values))
    dev = np.abs(values - med)
    scale = MAD_TO_SD * float(np.median(dev))
    if scale <= 0.0:
        scale = 1.2533 * float(dev.mean())  # sqrt(pi/2): mean abs deviation -> sd
    return max(scale, 1e-12 * max(1.0, float(np.max(np.abs(values)))))


def noise_scale(series: np.ndarray) -> float:
    """Robust sd of the noise of a series (n,): 1.4826 MAD of its first differences / sqrt(2).

    Insensitive to a few steps and to a linear trend (a constant shift of the differences).
    Units: those of the series. Needs n >= 2.
    """
    y = _as_series(series)
    if y.size < 2:
        raise ValueError("need at least 2 points")
    return _robust_scale(np.diff(y)) / np.sqrt(2.0)


def max_derivative_change(
    series: np.ndarray, span: int = 3, z_threshold: float = 4.5
) -> ChangePoint:
    """Change point at the maximum of the smoothed derivative, if it stands out of the noise.

    series: (n,). At each split i (span <= i <= n - span) the smoothed derivative is
    (mean(y[i:i+span]) - mean(y[i-span:i])) / span, per index; the candidate is the split
    with the largest |derivative|. Its score is |derivative| in units of its noise sd
    (`noise_scale` * sqrt(2 / span) / span); the candidate is the change when score >
    z_threshold. Defaults: span 3 (smooths single-point noise, a step still peaks at its
    own index), z_threshold 4.5 (the 99th percentile of the maximum score on white noise of
    60 to 200 points is about 4.1; a step of 4 noise sd scores about 4.9).
    """
    y = _as_series(series)
    n = y.size
    params: dict[str, float | int | str] = {"span": span, "z_threshold": z_threshold}
    if span < 1:
        raise ValueError("span must be >= 1")
    if n < 2 * span:
        return ChangePoint("max_derivative", None, None, float("nan"), params)
    csum = np.concatenate(([0.0], np.cumsum(y)))
    splits = np.arange(span, n - span + 1)
    after = (csum[splits + span] - csum[splits]) / span
    before = (csum[splits] - csum[splits - span]) / span
    deriv = (after - before) / span
    best = int(np.argmax(np.abs(deriv)))
    sd = noise_scale(y) * np.sqrt(2.0 / span) / span
    score = float(abs(deriv[best]) / sd)
    candidate = int(splits[best])
    return ChangePoint(
        "max_derivative", candidate if score > z_threshold else None, candidate, score, params
    )


def _two_sided_cusum(
    z: np.ndarray, k: float, h: float
) -> tuple[np.ndarray, np.ndarray, int | None, int | None, str | None]:
    """Page's CUSUM S+ and S- over z; first alarm index, its excursion start and direction."""
    up = np.zeros(z.size)
    down = np.zeros(z.size)
    s_up = s_down = 0.0
    up_start = down_start = 0
    for i, zi in enumerate(z):
        if s_up == 0.0:
            up_start = i
        if s_down == 0.0:
            down_start = i
        s_up = max(0.0, s_up + zi - k)
        s_down = max(0.0, s_down - zi - k)
        up[i], down[i] = s_up, s_down
        if s_up > h or s_down > h:
            direction = "up" if s_up >= s_down else "down"
            start = up_start if direction == "up" else down_start
            return up[: i + 1], down[: i + 1], i, start, direction
    return up, down, None, None, None


def cusum_change(
    series: np.ndarray, reference: int = 20, k: float = 1.0, h: float = 6.0
) -> ChangePoint:
    """Two-sided tabular CUSUM (Page) against the level of the first `reference` points.

    series: (n,). Standardise: z = (y - median(ref)) / `noise_scale`(y), ref the first
    min(reference, n // 2) points (default 20); the noise sd comes from the first
    differences of the whole series, robust to the step itself and far steadier than the
    spread of 20 points. S+ = max(0, S+ + z - k), S- = max(0, S- - z - k); alarm when either
    exceeds h. The change index is where the alarming sum last left zero, rescanned with
    k raised to half the mean shift of the excursion (a large step then is not placed early
    because noise had lifted the sum just before it). score: the
    largest CUSUM value reached (standard units). Defaults k = 1 (tuned to a shift of 2 sd,
    and fewer noise excursions before the change, so the change index lands within one
    point more often), h = 6: on white noise of 60 to 200 points about 2 % false alarms (the
    textbook k = 0.5, h = 5 gives 15-45 % here, the 20-point median being off by ~0.3 sd);
    steps of 2-4 sd found within one index 80-90 % of the time. A fixed reference raises
    alarms on slow trends: use `online_shift` for alerts.
    """
    y = _as_series(series)
    params: dict[str, float | int | str] = {"reference": reference, "k": k, "h": h}
    n_ref = min(reference, y.size // 2)
    if n_ref < 2:
        return ChangePoint("cusum", None, None, float("nan"), params)
    z = (y - float(np.median(y[:n_ref]))) / noise_scale(y)
    up, down, alarm, start, direction = _two_sided_cusum(z, k, h)
    score = float(max(up.max(), down.max()))
    if alarm is None or start is None:
        return ChangePoint("cusum", None, None, score, params)
    # Refine: rescan the excursion with k tuned to the shift it shows (half of it), so noise
    # that lifted the sum just before a large change does not pull the estimate early.
    signed = z[start : alarm + 1] * (1.0 if direction == "up" else -1.0)
    k_shift = max(k, 0.5 * float(signed.mean()))
    total, change = 0.0, start
    for i, zi in enumerate(signed):
        if total == 0.0:
            change = start + i
        total = max(0.0, total + zi - k_shift)
    return ChangePoint("cusum", change, change, score, params)


def ttest_change(
    series: np.ndarray, min_segment: int = 5, alpha: float = 0.05, correction: str = "bonferroni"
) -> ChangePoint:
    """Split with the most significant Welch t-test of before (y[:i]) against after (y[i:]).

    series: (n,). Splits i = min_segment .. n - min_segment (default 5 points a side). The
    candidate is the split with the smallest p-value; score is that p-value, corrected for
    the scan: "bonferroni" (default) multiplies it by the number of splits tested (capped at
    1), "none" keeps it raw (scanning many splits then finds a "change" in pure noise). The
    candidate is the change when the score < alpha (0.05). Needs scipy.
    """
    from scipy import stats

    y = _as_series(series)
    params: dict[str, float | int | str] = {
        "min_segment": min_segment,
        "alpha": alpha,
        "correction": correction,
    }
    if correction not in ("bonferroni", "none"):
        raise ValueError("correction must be 'bonferroni' or 'none'")
    if min_segment < 2:
        raise ValueError("min_segment must be >= 2")
    splits = np.arange(min_segment, y.size - min_segment + 1)
    if splits.size == 0:
        return ChangePoint("ttest", None, None, float("nan"), params)
    pvalues = np.array(
        [stats.ttest_ind(y[:i], y[i:], equal_var=False).pvalue for i in splits], dtype=np.float64
    )
    pvalues = np.where(np.isnan(pvalues), 1.0, pvalues)  # constant halves: no evidence
    best = int(np.argmin(pvalues))
    p = float(pvalues[best])
    if correction == "bonferroni":
        p = min(1.0, p * splits.size)
    candidate = int(splits[best])
    return ChangePoint("ttest", candidate if p < alpha else None, candidate, p, params)


def standardised_increments(series: np.ndarray, trailing: int = 20) -> np.ndarray:
    """First differences standardised against the `trailing` differences before each one.

    series: (n,) -> (n,): entry t is (d_t - median(d_{t-trailing..t-1})) / (1.4826 MAD of the
    same), d_t = y_t - y_{t-1}; nan where fewer than `trailing` earlier differences exist
    (t <= trailing). Dimensionless.
    """
    y = _as_series(series)
    if trailing < 2:
        raise ValueError("trailing must be >= 2")
    out = np.full(y.size, np.nan)
    if y.size <= trailing + 1:
        return out
    d = np.diff(y)
    # Row j holds d[j : j + trailing], the differences before d[j + trailing] (entry j +
    # trailing + 1): `_robust_scale` row by row, in one pass (the alerts run it per checkpoint).
    past = np.lib.stride_tricks.sliding_window_view(d[:-1], trailing)
    med = np.median(past, axis=1)
    dev = np.abs(past - med[:, None])
    scale = MAD_TO_SD * np.median(dev, axis=1)
    flat = scale <= 0.0
    if np.any(flat):
        scale[flat] = 1.2533 * dev[flat].mean(axis=1)
    floor = 1e-12 * np.maximum(1.0, np.abs(past).max(axis=1))
    out[trailing + 1 :] = (d[trailing:] - med) / np.maximum(scale, floor)
    return out


@dataclass(frozen=True)
class IncrementTrack:
    """What the online detector keeps of one series between points (a few dozen numbers).

    last: the latest value (None before the first). past: the latest `trailing` + `span`
    first differences, oldest first; the oldest `trailing` are the reference the next one
    is standardised against (the latest `span` are kept out of it). z: the
    latest `span` standardised differences, oldest first. scale: running average of the
    reference's robust scale (None until the reference is full), the floor's basis.
    """

    last: float | None = None
    past: tuple[float, ...] = ()
    z: tuple[float, ...] = ()
    scale: float | None = None

    def restarted(self) -> IncrementTrack:
        """A fresh reference (after an alarm, or when the series changes meaning) that keeps
        the running scale, so the floor holds from the first point after the restart."""
        return IncrementTrack(scale=self.scale)


@dataclass(frozen=True)
class GlrReading:
    """The windowed GLR at one point: statistic max_m |sum of the last m z| / sqrt(m) in
    standard units, span the maximising m (the change index is the point's index - span +
    1), direction "up" | "down" (the sign of that sum), z the point's own standardised
    difference."""

    statistic: float
    span: int
    direction: str
    z: float


def windowed_glr(z: Sequence[float], min_run: int = 1) -> tuple[float, int, float]:
    """max over m = min_run..len(z) of |sum(z[-m:])| / sqrt(m); returns (statistic, m, sum).

    z: (n,) standardised differences, oldest first. For unit-variance independent z this
    is the generalised likelihood ratio statistic (sqrt of twice the log ratio) for "the
    mean of the last m points shifted, by an unknown amount", maximised over m: one test
    covers a one-point jump and a shift spread over up to n points. With min_run = 2 a
    single point's deviation counts only together with a neighbour: on its own it must be
    sqrt(2) times larger to pass the same threshold, while a jump that holds or grows for
    one more point passes it with that point. With fewer than min_run points: (0.0, 0,
    0.0). Plain floats: n is a window's length, where numpy's per-call overhead would
    dominate.
    """
    best, best_m, best_sum, total = 0.0, 0, 0.0, 0.0
    for m, value in enumerate(reversed(z), start=1):
        total += float(value)
        score = abs(total) / math.sqrt(m)
        if m >= min_run and (best_m == 0 or score > best):
            best, best_m, best_sum = score, m, total
    return best, best_m, best_sum


def _median_of(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _small_robust_scale(values: list[float]) -> tuple[float, float]:
    """(median, `_robust_scale`) of a short list in plain floats (same rule and fallbacks)."""
    med = _median_of(values)
    dev = [abs(v - med) for v in values]
    scale = MAD_TO_SD * _median_of(dev)
    if scale <= 0.0:
        scale = 1.2533 * sum(dev) / len(dev)
    return med, max(scale, 1e-12 * max(1.0, max(abs(v) for v in values)))


def track_increment(
    track: IncrementTrack,
    value: float,
    trailing: int = 20,
    span: int = 10,
    floor: float = 0.85,
    alpha: float = 0.05,
    min_run: int = 1,
) -> tuple[IncrementTrack, GlrReading | None]:
    """One new point of a series: update the track, and read the GLR once the reference is full.

    The difference d = value - last is standardised as (d - median(ref)) / scale, ref the
    `trailing` differences before the latest `span` (a change spread over the tested run
    does not leak into its own reference), scale the 1.4826 MAD of ref floored at `floor`
    times its running
    average (exponential, weight `alpha` per point): twenty differences of a window series
    now and then have a MAD several times below its usual value, and a fixed
    standardisation would turn an ordinary difference into a 15-20 sd "jump" there. Then
    the GLR (`windowed_glr`, runs of at least `min_run`) over the last `span` standardised
    differences; the reading's span (which dates the change) is that of the best run of
    any length with the same sign. Returns the new track and the reading (None while fewer
    than `trailing` + `span` differences precede it, or fewer than `min_run` have been
    standardised). Constant cost per point: two sorts of `trailing` numbers and two sums
    of `span`.
    """
    if not math.isfinite(value):
        raise ValueError("value must be finite")
    if track.last is None:
        return replace(track, last=float(value)), None
    d = float(value) - track.last
    reading = None
    z, scale = track.z, track.scale
    if len(track.past) >= trailing + span:
        # The reference ends where the tested run can begin: a change spread over the
        # last `span` points does not leak into the scale it is measured against.
        med, own = _small_robust_scale(list(track.past[-trailing - span : -span]))
        scale = own if scale is None else (1.0 - alpha) * scale + alpha * own
        zi = (d - med) / max(own, floor * scale)
        z = (*z, zi)[-span:]
        if len(z) >= min_run:
            statistic, m, total = windowed_glr(z, min_run)
            # Date the change by the best run of any length with the same sign: a jump of
            # the latest point alone starts there, not at the neighbour min_run adds.
            _, m_any, total_any = windowed_glr(z)
            if (total_any >= 0) == (total >= 0):
                m = m_any
            reading = GlrReading(statistic, m, "up" if total >= 0 else "down", zi)
    past_kept = (*track.past, d)[-(trailing + span) :]
    return IncrementTrack(float(value), past_kept, z, scale), reading


def online_shift(
    series: np.ndarray,
    trailing: int = 20,
    span: int = 10,
    h: float = 9.0,
    floor: float = 0.85,
    alpha: float = 0.05,
    min_run: int = 1,
) -> OnlineShift:
    """Online shift detector run over a series (the alert rule calls `track_increment` per point).

    series: (n,), oldest first. Each first difference is standardised against the
    `trailing` (20) differences before the latest `span`, with a floored robust scale, and
    the windowed GLR over the last `span` (10) standardised differences is compared with h
    (9, standard units); see `track_increment`. A step of the series is one large
    difference and fires at once; a change that enters a W-window series over W windows
    shifts W differences and fires as soon as their sum stands out, so span = W, the
    alerts' smallest window. A linear trend shifts every difference equally and is removed
    by the trailing median. Why h = 9 and not a Gaussian 4-5: the differences of window
    series are heavy-tailed (an odd delta enters W windows at once, and leaves W windows
    later); on the quiet synthetic runs of bench/alerts.py 0.3-0.8 per 1,000 differences of
    the log gap ratio lie beyond 8 robust sd. The alert rule's own choice (h 10, min_run 2
    on ratios) is measured there. The change index is the index of the first point of the
    new regime: alarm index - span of the dating run + 1. No alarm while n <= trailing +
    span + 1. `statistic` is the GLR at the latest point and `peak` the largest reached
    (the detector runs on after the alarm, without restarting, to report them).
    """
    y = _as_series(series)
    if trailing < 2 or not 1 <= min_run <= span:
        raise ValueError("need trailing >= 2 and 1 <= min_run <= span")
    params: dict[str, float | int] = {
        "trailing": trailing,
        "span": span,
        "h": h,
        "floor": floor,
        "alpha": alpha,
        "min_run": min_run,
    }
    track = IncrementTrack()
    alarm: tuple[int, int, str] | None = None
    statistic = peak = 0.0
    tested = 0
    for i, value in enumerate(y):
        track, reading = track_increment(track, float(value), trailing, span, floor, alpha, min_run)
        if reading is None:
            continue
        tested += 1
        statistic = reading.statistic
        peak = max(peak, statistic)
        if alarm is None and statistic > h:
            alarm = (i, i - reading.span + 1, reading.direction)
    if alarm is None:
        return OnlineShift(False, None, None, None, statistic, peak, tested, params)
    return OnlineShift(True, alarm[0], alarm[1], alarm[2], statistic, peak, tested, params)
