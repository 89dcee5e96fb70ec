"""Rise / plateau / collapse phases of a gap-ratio series (PAPER-NOTES.md, "Phase segmentation").

A series here is one value per window, in window order (the gap ratio R* or a tracked key
ratio R_j; dimensionless), indices 0..n-1. Three methods, one definition each:

- `peak`: the plateau is the contiguous region >= plateau_fraction (0.85) x the peak around
  the peak; the collapse starts at the first point after it.
- `derivative`: smooth with a trailing moving average of `smooth` (5) points, take
  numpy.gradient; the collapse starts at the first point after the smoothed peak whose
  derivative is < slope (-0.01 per window); the plateau reaches back from the peak while the
  derivative is <= -slope.
- `threshold`: the collapse starts at the first point after the peak where the series is
  < tau (1.20); the plateau starts as in `peak`. A series whose peak never reaches tau has
  no collapse: "below tau" without a plateau above it is not an event.

The moving average is trailing (each point is the mean of itself and the previous points)
so a point's phase uses only the past, as on a live dashboard; a centred average would
mark a sharp collapse two points before it happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

PhaseMethod = Literal["peak", "derivative", "threshold"]
PHASE_METHODS: tuple[str, ...] = ("peak", "derivative", "threshold")
PHASE_LABELS: tuple[str, ...] = ("rise", "plateau", "collapse")


@dataclass(frozen=True)
class Phases:
    """Segmentation of one series of n points.

    labels: n labels, "rise" | "plateau" | "collapse". peak_index: index of the peak the
    method used (None for an empty series). plateau_start, plateau_end: first and last
    index of the plateau (inclusive; None for an empty series). collapse_index: first index
    of the collapse, or None. boundaries: indices where a new phase starts (plateau start
    when > 0, then the collapse), ascending.
    """

    method: str
    labels: tuple[str, ...]
    peak_index: int | None
    plateau_start: int | None
    plateau_end: int | None
    collapse_index: int | None
    boundaries: tuple[int, ...]


def trailing_mean(series: np.ndarray, width: int = 5) -> np.ndarray:
    """Trailing moving average (n,) -> (n,): point i is the mean of points max(0, i-width+1)..i.

    The first width-1 points average what exists, so the output has the input's length.
    """
    y = np.asarray(series, dtype=np.float64)
    if width < 1:
        raise ValueError("width must be >= 1")
    csum = np.concatenate(([0.0], np.cumsum(y)))
    idx = np.arange(y.size)
    lo = np.maximum(idx - width + 1, 0)
    return (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)


def smoothed_derivative(series: np.ndarray, smooth: int = 5) -> np.ndarray:
    """numpy.gradient of the trailing `smooth`-point mean (n,) -> (n,), per window step.

    Zeros for a series of fewer than 2 points.
    """
    m = trailing_mean(series, smooth)
    if m.size < 2:
        return np.zeros_like(m)
    return np.gradient(m)


def _plateau_around(y: np.ndarray, peak: int, level: float) -> tuple[int, int]:
    """First and last index of the contiguous run of y >= level that contains `peak`."""
    below = y < level
    start = peak
    while start > 0 and not below[start - 1]:
        start -= 1
    end = peak
    while end < y.size - 1 and not below[end + 1]:
        end += 1
    return start, end


def segment_phases(
    series: np.ndarray,
    method: str = "threshold",
    plateau_fraction: float = 0.85,
    tau: float = 1.20,
    smooth: int = 5,
    slope: float = -0.01,
) -> Phases:
    """Label each point of a gap-ratio series (n,) as rise, plateau or collapse.

    method: "peak" | "derivative" | "threshold" (default; the paper's collapse event).
    plateau_fraction: 0.85 (peak, threshold); tau: 1.20 (threshold; the author's segmentation
    script uses 1.30); smooth: 5 points and slope: -0.01 per window (derivative). The peak
    is the first maximum of the series (of the smoothed series for `derivative`). Points
    before the plateau are "rise", from the collapse on "collapse". An empty series gives
    empty labels; a flat series is all plateau; a series that ends at its peak has no
    collapse. Raises ValueError for non-finite values or an unknown method.
    """
    y = _checked(series, method)
    n = y.size
    if n == 0:
        return Phases(method, (), None, None, None, None, ())
    peak, start, collapse = _segment(y, method, plateau_fraction, tau, smooth, slope)
    plateau_end = (collapse - 1) if collapse is not None else n - 1
    labels = tuple(
        "rise" if i < start else "collapse" if collapse is not None and i >= collapse else "plateau"
        for i in range(n)
    )
    boundaries = tuple(b for b in (start if start > 0 else None, collapse) if b is not None)
    return Phases(method, labels, peak, start, plateau_end, collapse, boundaries)


def _checked(series: np.ndarray, method: str) -> np.ndarray:
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("series must be finite")
    if method not in PHASE_METHODS:
        raise ValueError(f"unknown phase method {method!r}; use one of {', '.join(PHASE_METHODS)}")
    return y


def _segment(
    y: np.ndarray, method: str, plateau_fraction: float, tau: float, smooth: int, slope: float
) -> tuple[int, int, int | None]:
    """(peak, plateau start, collapse index or None) of a non-empty checked series."""
    n = y.size
    collapse: int | None
    if method == "derivative":
        smoothed = trailing_mean(y, smooth)
        deriv = smoothed_derivative(y, smooth)
        peak = int(np.argmax(smoothed))
        falling = np.flatnonzero(deriv[peak + 1 :] < slope)
        collapse = peak + 1 + int(falling[0]) if falling.size else None
        start = peak
        while start > 0 and deriv[start - 1] <= -slope:
            start -= 1
    else:
        peak = int(np.argmax(y))
        start, end = _plateau_around(y, peak, plateau_fraction * float(y[peak]))
        if method == "peak":
            collapse = end + 1 if end + 1 < n else None
        else:
            below = np.flatnonzero(y[peak + 1 :] < tau)
            collapse = peak + 1 + int(below[0]) if below.size and y[peak] >= tau else None
    return peak, start, collapse


def current_phase(
    series: np.ndarray,
    method: str = "threshold",
    plateau_fraction: float = 0.85,
    tau: float = 1.20,
    smooth: int = 5,
    slope: float = -0.01,
) -> str | None:
    """Live phase label of the latest point of a series (n,): "rise" | "plateau" | "collapse".

    The label of the last point under `segment_phases` (same parameters and defaults), except
    that a series still climbing at its end (before any collapse, smoothed derivative of the
    last point > -slope, i.e. > +0.01) is "rise": its latest peak is not a plateau yet.
    None for an empty series.
    """
    y = _checked(series, method)
    n = y.size
    if n == 0:
        return None
    _, start, collapse = _segment(y, method, plateau_fraction, tau, smooth, slope)
    # The label segment_phases gives the last point, without labelling the others.
    if n - 1 < start:
        return "rise"
    if collapse is not None and n - 1 >= collapse:
        return "collapse"
    if float(smoothed_derivative(y, smooth)[-1]) > -slope:
        return "rise"
    return "plateau"
