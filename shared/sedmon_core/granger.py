"""Granger causality between a spectral series and a metric: nested OLS F-tests.

"x Granger-causes y" at lag order p: adding x_{t-1..t-p} to an autoregression of y on
y_{t-1..t-p} (with intercept) lowers the residual sum of squares more than chance would.
restricted: y_t = a + sum_i b_i y_{t-i};  full: ... + sum_i c_i x_{t-i} (for every x).
F = ((RSS_r - RSS_f) / q) / (RSS_f / (n - k_f)), q = p * (number of x series), k_f the full
model's coefficients; df = (q, n - k_f). The lag order p in 1..max_lag (default 2) minimises
the full model's AIC, n log(RSS / n) + 2 k, on the common sample t >= max_lag; the test at
the chosen p then uses every t >= p. With few checkpoints (N of 50-60) these tests have
little power: every result carries n and the degrees of freedom. Series: (n,) on the same
evenly spaced checkpoints, oldest first, finite. Needs scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GrangerResult:
    """One nested F-test. f, p: the statistic and its upper-tail p-value (nan when the full
    model fits exactly). df_num, df_den: its degrees of freedom. r2_restricted, r2_full,
    r2_gain (= full - restricted): R^2 of y over the test sample. n: observations in the
    test; lag: the chosen order; aic: the full model's AIC per order tried (1..max_lag)."""

    direction: str
    lag: int
    f: float
    p: float
    df_num: int
    df_den: int
    r2_restricted: float
    r2_full: float
    r2_gain: float
    n: int
    aic: tuple[float, ...]


@dataclass(frozen=True)
class GrangerPair:
    """Both directions: x -> y (spectral series to metric) and y -> x."""

    x_to_y: GrangerResult
    y_to_x: GrangerResult


def _lagged(series: np.ndarray, lag: int, start: int) -> np.ndarray:
    """(n - start, lag) design block: column i holds series[t - i - 1] for t = start..n-1."""
    n = series.size
    return np.column_stack([series[start - i - 1 : n - i - 1] for i in range(lag)])


def _rss(design: np.ndarray, target: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    return float(resid @ resid)


def _models(y: np.ndarray, xs: np.ndarray, lag: int, start: int) -> tuple[float, float, int, int]:
    """RSS of the restricted and full models over t = start..n-1, k_full and the sample size."""
    target = y[start:]
    ones = np.ones((target.size, 1))
    restricted = np.hstack([ones, _lagged(y, lag, start)])
    full = np.hstack([restricted, *[_lagged(x, lag, start) for x in xs.T]])
    return _rss(restricted, target), _rss(full, target), full.shape[1], target.size


def _as_inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    xs = xs[:, None] if xs.ndim == 1 else xs
    if ys.ndim != 1 or xs.ndim != 2 or xs.shape[0] != ys.size:
        raise ValueError(f"need x (n,) or (n, m) and y (n,), got {xs.shape} and {ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("series must be finite")
    return xs, ys


def granger_test(
    x: np.ndarray, y: np.ndarray, max_lag: int = 2, direction: str = "x->y"
) -> GrangerResult:
    """Does x Granger-cause y? x: (n,) or (n, m) for m series tested jointly; y: (n,).

    Lag order 1..max_lag (default 2) by AIC, then the nested F-test (module docstring).
    Raises ValueError when the series are too short for the full model at max_lag
    (n - max_lag must exceed its 1 + (m + 1) max_lag coefficients by at least 2).
    """
    from scipy import stats

    xs, ys = _as_inputs(x, y)
    if max_lag < 1:
        raise ValueError("max_lag must be >= 1")
    m = xs.shape[1]
    if ys.size - max_lag < 1 + (m + 1) * max_lag + 2:
        raise ValueError(
            f"too few points for Granger at max_lag={max_lag} with {m} series: n={ys.size}"
        )
    aic = []
    for lag in range(1, max_lag + 1):
        _, rss_f, k_f, n_common = _models(ys, xs, lag, max_lag)
        aic.append(n_common * np.log(max(rss_f, 1e-300) / n_common) + 2.0 * k_f)
    lag = int(np.argmin(aic)) + 1
    rss_r, rss_f, k_f, n = _models(ys, xs, lag, lag)
    df_num, df_den = m * lag, n - k_f
    target = ys[lag:]
    tss = float(np.sum((target - target.mean()) ** 2))
    if rss_f > 0.0:
        f = (rss_r - rss_f) / df_num / (rss_f / df_den)
        p = float(stats.f.sf(f, df_num, df_den))
    else:
        f, p = float("nan"), float("nan")
    r2_r = 1.0 - rss_r / tss if tss > 0 else float("nan")
    r2_f = 1.0 - rss_f / tss if tss > 0 else float("nan")
    return GrangerResult(
        direction=direction,
        lag=lag,
        f=float(f),
        p=p,
        df_num=df_num,
        df_den=df_den,
        r2_restricted=r2_r,
        r2_full=r2_f,
        r2_gain=r2_f - r2_r,
        n=n,
        aic=tuple(float(a) for a in aic),
    )


def granger(x: np.ndarray, y: np.ndarray, max_lag: int = 2) -> GrangerPair:
    """Granger tests in both directions between a spectral series x (n,) and a metric y (n,).

    Each direction picks its own lag order by AIC (1..max_lag, default 2).
    """
    return GrangerPair(
        x_to_y=granger_test(x, y, max_lag, "x->y"),
        y_to_x=granger_test(y, x, max_lag, "y->x"),
    )


def residualise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals (n,) of the OLS regression of x on y (with intercept): x with y taken out."""
    xs, ys = _as_inputs(x, y)
    design = np.column_stack([np.ones(ys.size), ys])
    coef, *_ = np.linalg.lstsq(design, xs[:, 0], rcond=None)
    return xs[:, 0] - design @ coef


def granger_residualised(x: np.ndarray, y: np.ndarray, max_lag: int = 2) -> GrangerPair:
    """Both directions after regressing the metric y (n,) out of the spectral series x (n,).

    Tests whether the part of x not explained by the concurrent y still leads y (and back).
    """
    return granger(residualise(x, y), y, max_lag)


def granger_multivariate(xs: np.ndarray, y: np.ndarray, max_lag: int = 2) -> GrangerResult:
    """Do several spectral series jointly Granger-cause y? xs: (n, m), y: (n,).

    One F-test that all m * p lag coefficients of the x series are zero (df_num = m * p).
    """
    x_arr = np.asarray(xs, dtype=np.float64)
    if x_arr.ndim != 2:
        raise ValueError(f"xs must be (n, m), got shape {x_arr.shape}")
    return granger_test(x_arr, y, max_lag, "xs->y")
