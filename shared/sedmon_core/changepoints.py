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
- `online_shift`: for alerts. First differences, each standardised against the `trailing`
  differences before it (median, 1.4826 MAD), and a two-sided CUSUM on those. A CUSUM with a
  fixed reference false-alarms on slow trends (PAPER-NOTES.md); a trend is a constant
  shift of the differences, which the trailing median removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    alarm: the CUSUM crossed h somewhere in the series. alarm_index: the first index where
    it did. change_index: estimated change index (where that CUSUM last left zero).
    direction: "up" | "down" (the sign of the change in the increments), None without alarm.
    statistic: max(S+, S-) at the latest point; peak: the largest CUSUM value reached
    (standard units). n_tested: increments that had a full trailing window.
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
    d = np.diff(y)
    for t in range(trailing + 1, y.size):
        past = d[t - 1 - trailing : t - 1]
        out[t] = (d[t - 1] - float(np.median(past))) / _robust_scale(past)
    return out


def online_shift(
    series: np.ndarray, trailing: int = 20, k: float = 1.5, h: float = 5.0
) -> OnlineShift:
    """Online shift detector over a series up to now (call it per checkpoint, last ~40 values).

    series: (n,), oldest first. Increments d_t = y_t - y_{t-1} are standardised against the
    `trailing` increments before them (`standardised_increments`, default 20), then a
    two-sided CUSUM with drift k and threshold h runs over them. A step of the series is a
    spike of the increments, so the CUSUM fires at once on a step of more than (h + k)
    robust sd of the increments, or within two points when it spreads over two. A linear
    trend shifts every increment equally and is removed by the trailing median. Defaults
    k = 1.5, h = 5 (a single increment of more than 6.5 robust sd fires): with 20-point
    standardisation z has heavier tails than normal, and a large k keeps them from adding
    up. Simulated: under 1 false alarm per 1000 points on white noise, random walks, AR(0.9)
    and noisy trends; a one-step jump of 10 increment sd fires at once 94-98 % of the time,
    one spread over two steps within two points ~75 %. (k = 0.5, h = 5: ~5 per 1000.) The change
    index is the first increment of the alarming excursion (the index of the first
    post-change value). No alarm when n <= trailing + 1.
    """
    z = standardised_increments(series, trailing)
    params: dict[str, float | int] = {"trailing": trailing, "k": k, "h": h}
    tested = z[trailing + 1 :] if z.size > trailing + 1 else np.zeros(0)
    offset = trailing + 1
    if tested.size == 0:
        return OnlineShift(False, None, None, None, 0.0, 0.0, 0, params)
    up, down, alarm, start, direction = _two_sided_cusum(tested, k, h)
    if alarm is None:
        statistic = float(max(up[-1], down[-1]))
        peak = float(max(up.max(), down.max()))
        return OnlineShift(False, None, None, None, statistic, peak, tested.size, params)
    assert start is not None
    # After an alarm the sums keep running (no reset) so `statistic` describes the latest point.
    full_up, full_down, _, _, _ = _two_sided_cusum(tested, k, float("inf"))
    return OnlineShift(
        alarm=True,
        alarm_index=offset + alarm,
        change_index=offset + start,
        direction=direction,
        statistic=float(max(full_up[-1], full_down[-1])),
        peak=float(max(full_up.max(), full_down.max())),
        n_tested=int(tested.size),
        params=params,
    )
