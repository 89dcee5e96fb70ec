"""Coupling of a spectral series with a training metric (val loss): lagged and local correlation.

x is a spectral series (gap ratio, a key ratio R_j, ...), y a metric, both (n,) on the same
evenly spaced checkpoints, oldest first; a lag is counted in checkpoints. Sign convention
everywhere: r(lag) = corr(x(t), y(t + lag)), so a positive lag means x leads y (the spectral
series moves first), a negative lag that y leads. Non-finite values are missing: a
correlation uses the pairs where both are finite. Correlations are Pearson r in [-1, 1];
nan where fewer than `min_pairs` pairs or one side is constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_LAGS: tuple[int, ...] = tuple(range(-5, 6))


@dataclass(frozen=True)
class LaggedCorrelation:
    """r (L,) and n (L,) pairs per lag in `lags` (L,); peak_lag / peak_r: the lag with the
    largest |r| (ties: the lag nearest 0), None / nan when no lag has a defined r."""

    lags: np.ndarray
    r: np.ndarray
    n: np.ndarray
    peak_lag: int | None
    peak_r: float
    detrended: bool


@dataclass(frozen=True)
class LagSweep:
    """Peak lag and r per window size W (ascending). lag_flip: the peak lags include both a
    negative lag (metric leads) and a positive one (spectral series leads)."""

    windows: tuple[int, ...]
    peak_lags: tuple[int | None, ...]
    peak_r: tuple[float, ...]
    lag_flip: bool


@dataclass(frozen=True)
class EdgeCoupling:
    """One ratio series R_j against the metric: its peak lag and r at that lag."""

    j: int
    peak_lag: int | None
    peak_r: float


@dataclass(frozen=True)
class KeyEdge:
    """The key edge of a run: j of the R_j most strongly coupled to the metric (|r| at its
    best lag), None when no j has a defined r; ranking: every candidate, strongest first
    (undefined r last); plateau_signal_rank: the modal signal rank k* over the plateau
    points (all points when no labels were given), None without signal ranks."""

    j: int | None
    ranking: tuple[EdgeCoupling, ...]
    plateau_signal_rank: int | None


@dataclass(frozen=True)
class PhaseCorrelation:
    """Pearson r of x and y over the n points of one phase, with its two-sided p-value."""

    phase: str
    r: float
    p: float
    n: int


def pearson(x: np.ndarray, y: np.ndarray, min_pairs: int = 3) -> tuple[float, int]:
    """Pearson r of two (n,) series over the pairs where both are finite, and that count.

    r is nan when fewer than min_pairs (default 3) pairs or either side is constant.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"series must have the same shape, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < max(min_pairs, 2):
        return float("nan"), n
    da = a[ok] - a[ok].mean()
    db = b[ok] - b[ok].mean()
    denom = float(np.sqrt(np.dot(da, da) * np.dot(db, db)))
    if denom <= 0.0:
        return float("nan"), n
    return float(np.clip(np.dot(da, db) / denom, -1.0, 1.0)), n


def cubic_detrend(series: np.ndarray, degree: int = 3) -> np.ndarray:
    """Residuals (n,) of a least-squares polynomial (default cubic) in the checkpoint index.

    Fitted on the finite points (index rescaled to [-1, 1] for conditioning); non-finite
    points stay nan. The degree drops to (finite points - 1) for very short series.
    """
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {y.shape}")
    out = np.full(y.shape, np.nan)
    ok = np.isfinite(y)
    m = int(ok.sum())
    if m == 0:
        return out
    t = np.linspace(-1.0, 1.0, y.size) if y.size > 1 else np.zeros(1)
    deg = min(degree, m - 1)
    coef = np.polynomial.polynomial.polyfit(t[ok], y[ok], deg)
    out[ok] = y[ok] - np.polynomial.polynomial.polyval(t[ok], coef)
    return out


def _peak(lags: np.ndarray, r: np.ndarray) -> tuple[int | None, float]:
    defined = np.flatnonzero(np.isfinite(r))
    if defined.size == 0:
        return None, float("nan")
    best = min(defined, key=lambda i: (-abs(float(r[i])), abs(int(lags[i]))))
    return int(lags[best]), float(r[best])


def lagged_correlation(
    x: np.ndarray,
    y: np.ndarray,
    lags: Sequence[int] = DEFAULT_LAGS,
    detrend: bool = True,
    min_pairs: int = 3,
) -> LaggedCorrelation:
    """Pearson r of x(t) and y(t + lag) for each lag (default -5..5): positive lag = x leads.

    x, y: (n,) on the same checkpoints. With detrend (default) both series are first
    replaced by their cubic-fit residuals over the whole series (`cubic_detrend`), so shared
    slow trends do not pass for coupling. n per lag counts the finite pairs (at most n - |lag|).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {a.shape} and {b.shape}")
    if detrend:
        a, b = cubic_detrend(a), cubic_detrend(b)
    lag_arr = np.asarray(list(lags), dtype=np.int64)
    size = a.size
    r = np.full(lag_arr.size, np.nan)
    counts = np.zeros(lag_arr.size, dtype=np.int64)
    for i, lag in enumerate(lag_arr):
        lag = int(lag)
        if abs(lag) >= size:
            continue
        xs = a[: size - lag] if lag >= 0 else a[-lag:]
        ys = b[lag:] if lag >= 0 else b[: size + lag]
        r[i], counts[i] = pearson(xs, ys, min_pairs)
    peak_lag, peak_r = _peak(lag_arr, r)
    return LaggedCorrelation(lag_arr, r, counts, peak_lag, peak_r, detrend)


def lag_sweep(
    pairs: Mapping[int, tuple[np.ndarray, np.ndarray]],
    lags: Sequence[int] = DEFAULT_LAGS,
    detrend: bool = True,
) -> LagSweep:
    """Peak lag of `lagged_correlation` for each window size W, and whether it flips sign.

    pairs: W -> (x, y), the spectral series at window W and the metric on its checkpoints
    (each pair aligned by the caller; windows of different W start at different steps).
    """
    windows = tuple(sorted(pairs))
    results = [lagged_correlation(*pairs[w], lags=lags, detrend=detrend) for w in windows]
    peak_lags = tuple(res.peak_lag for res in results)
    signs = {int(np.sign(lag)) for lag in peak_lags if lag is not None}
    return LagSweep(
        windows=windows,
        peak_lags=peak_lags,
        peak_r=tuple(res.peak_r for res in results),
        lag_flip={-1, 1} <= signs,
    )


def modal_signal_rank(
    signal_ranks: np.ndarray, labels: Sequence[str] | None = None, phase: str = "plateau"
) -> int | None:
    """Most frequent signal rank k* (ties: the smaller) over the points labelled `phase`.

    signal_ranks: (n,) ints; labels: n phase labels (`segment_phases`), or None for all
    points. None when no point qualifies.
    """
    ranks = np.asarray(signal_ranks, dtype=np.int64)
    if labels is not None:
        if len(labels) != ranks.size:
            raise ValueError("labels and signal_ranks must have the same length")
        ranks = ranks[np.array([lab == phase for lab in labels], dtype=bool)]
    if ranks.size == 0:
        return None
    values, counts = np.unique(ranks, return_counts=True)
    return int(values[int(np.argmax(counts))])


def key_edge(
    ratios: np.ndarray,
    metric: np.ndarray,
    candidates: Sequence[int] = (1, 2, 3, 4),
    lags: Sequence[int] = DEFAULT_LAGS,
    signal_ranks: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> KeyEdge:
    """Pick the key edge: the R_j (j in candidates, default 1..4) most coupled to the metric.

    ratios: (n, W-1), row t the ratios R_1..R_{W-1} of window t (WindowSpectrum.ratios);
    metric: (n,) on the same checkpoints. Each R_j series is ranked by |r| at its own best
    lag (`lagged_correlation`, detrended); candidates beyond W-1 are skipped. With
    signal_ranks (n,) the modal k* over the plateau (labels from `segment_phases`, or over
    all points without labels) is reported beside it: the edge the run established.
    """
    rat = np.asarray(ratios, dtype=np.float64)
    if rat.ndim != 2 or rat.shape[0] != np.asarray(metric).shape[0]:
        raise ValueError(f"ratios must be (n, W-1) with n = len(metric), got {rat.shape}")
    couplings = []
    for j in candidates:
        if 1 <= j <= rat.shape[1]:
            res = lagged_correlation(rat[:, j - 1], metric, lags=lags)
            couplings.append(EdgeCoupling(j, res.peak_lag, res.peak_r))
    ranking = tuple(
        sorted(couplings, key=lambda c: -abs(c.peak_r) if np.isfinite(c.peak_r) else 1.0)
    )
    best = ranking[0].j if ranking and np.isfinite(ranking[0].peak_r) else None
    plateau = modal_signal_rank(signal_ranks, labels) if signal_ranks is not None else None
    return KeyEdge(best, ranking, plateau)


def phase_correlation(
    x: np.ndarray, y: np.ndarray, labels: Sequence[str]
) -> dict[str, PhaseCorrelation]:
    """Pearson r of x and y inside each labelled phase (no detrending, no lag).

    x, y: (n,); labels: n labels (e.g. `segment_phases(...).labels`). Returns one entry per
    distinct label, in order of first appearance; r and p are nan below 3 finite pairs.
    p: two-sided, from the t distribution with n - 2 df. Needs scipy.
    """
    from scipy import stats

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if not (a.size == b.size == len(labels)):
        raise ValueError("x, y and labels must have the same length")
    lab = np.asarray(list(labels), dtype=object)
    out: dict[str, PhaseCorrelation] = {}
    for phase in dict.fromkeys(labels):
        mask = lab == phase
        r, n = pearson(a[mask], b[mask])
        if np.isfinite(r) and n > 2:
            t = r * np.sqrt((n - 2) / max(1.0 - r * r, 1e-300))
            p = float(2.0 * stats.t.sf(abs(t), n - 2))
        else:
            p = float("nan")
        out[phase] = PhaseCorrelation(phase, r, p, n)
    return out


def sliding_correlation(x: np.ndarray, y: np.ndarray, window: int = 9) -> np.ndarray:
    """Local Pearson r over a sliding window of `window` points (default 9; 7-11 typical).

    x, y: (n,) -> (n,). Entry t is r over points t - window + 1 .. t (right-aligned, like
    the spectral windows); nan for t < window - 1 and where r is undefined.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {a.shape} and {b.shape}")
    if window < 3:
        raise ValueError("window must be >= 3")
    out = np.full(a.size, np.nan)
    for t in range(window - 1, a.size):
        out[t] = pearson(a[t - window + 1 : t + 1], b[t - window + 1 : t + 1])[0]
    return out
