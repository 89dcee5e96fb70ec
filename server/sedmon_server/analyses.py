"""Run-level analyses over stored series, computed on request with sedmon_core.

Each function reads the run's stored spectra (and metrics, aligned to checkpoints by the
rule in sedmon_server.series) and calls the sedmon_core analysis; sedmon_core's analysis
modules (scipy, statsmodels) are imported inside the functions so the server starts, and
ingests, without loading them. Results are plain JSON: dataclasses become objects, arrays
lists, non-finite floats null. A spectral series is named by `series`: one of the stored
scalars (gap_ratio, edge_strength, total_variance, ...) or `ratio_j` (R_j, e.g. ratio_2
for sigma_2 / sigma_3, the tracked key edge).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import Connection

from sedmon_server.series import (
    SCALAR_FIELDS,
    SpectrumSeries,
    align_metric,
    checkpoint_steps,
    dot_band,
    metric_series,
    spectrum_series,
)


class AnalysisName(enum.StrEnum):
    """The analyses the server implements (the `{name}` of /runs/{id}/analysis/{name})."""

    coupling = "coupling"
    lag_sweep = "lag-sweep"
    phases = "phases"
    shifts = "shifts"
    reliability = "reliability"


ANALYSES: tuple[str, ...] = tuple(a.value for a in AnalysisName)
SHIFT_METHODS: tuple[str, ...] = ("max_derivative", "cusum", "ttest", "all")


class AnalysisError(ValueError):
    """The analysis cannot run on these parameters or this data (answered 422)."""


def jsonable(obj: Any) -> Any:
    """Plain JSON of sedmon_core results: dataclasses, arrays, tuples; NaN/inf -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def pick_series(spec: SpectrumSeries, name: str) -> np.ndarray:
    """The spectral series called `name` (see the module docstring) -> (n,) float64."""
    if name in SCALAR_FIELDS:
        return spec.scalars[name].astype(np.float64)
    if name.startswith("ratio_"):
        try:
            j = int(name.removeprefix("ratio_"))
        except ValueError:
            j = 0
        if 1 <= j <= spec.window - 1:
            return spec.ratios[:, j - 1].copy()
    raise AnalysisError(
        f"series must be one of {', '.join(SCALAR_FIELDS)} or ratio_j with j in "
        f"1..{spec.window - 1}"
    )


def aligned_metric(conn: Connection, run_id: int, metric: str, steps: np.ndarray) -> np.ndarray:
    """The metric on the given checkpoint steps (NaN where none was logged for a step)."""
    m_steps, m_values = metric_series(conn, run_id, metric)
    if m_steps.size == 0:
        raise AnalysisError(f"no metric {metric!r} was logged for this run")
    all_steps = checkpoint_steps(conn, run_id)
    per_checkpoint = dict(
        zip(all_steps.tolist(), align_metric(m_steps, m_values, all_steps), strict=True)
    )
    return np.array([per_checkpoint.get(int(s), np.nan) for s in steps], dtype=np.float64)


def _spectrum(conn: Connection, run_id: int, group: str, window: int) -> SpectrumSeries:
    spec = spectrum_series(conn, run_id, group, window)
    if spec.steps.size == 0:
        raise AnalysisError(f"no spectra yet for window {window} (group {group})")
    return spec


def run_key_edge(
    spec: SpectrumSeries, metric: np.ndarray, keep: np.ndarray, lags: list[int]
) -> Any:
    """sedmon_core's key edge on the points `keep` (where the metric exists), its plateau
    rank taken over the points the default (threshold) segmentation of the whole gap-ratio
    series labels plateau, or over all kept points when none is."""
    from sedmon_core.coupling import key_edge
    from sedmon_core.phases import segment_phases

    every = segment_phases(spec.scalars["gap_ratio"]).labels
    labels = [lab for lab, k in zip(every, keep, strict=True) if k]
    return key_edge(
        spec.ratios[keep],
        metric[keep],
        lags=lags,
        signal_ranks=spec.scalars["signal_rank"][keep],
        labels=labels if "plateau" in labels else None,
    )


def coupling(
    conn: Connection,
    run_id: int,
    group: str,
    window: int,
    metric: str,
    series: str,
    max_lag: int,
    detrend: bool,
) -> tuple[int, dict[str, Any]]:
    """Cross-correlation by lag (peak lag; positive: the spectral series leads) and Granger
    tests both ways (lag order 1..2 by AIC) on the checkpoints where the metric exists.
    The key edge's plateau rank is the modal k* over the points the default (threshold)
    segmentation of the gap ratio labels plateau, or over all points when none is."""
    from sedmon_core.coupling import lagged_correlation
    from sedmon_core.granger import granger

    spec = _spectrum(conn, run_id, group, window)
    x = pick_series(spec, series)
    y = aligned_metric(conn, run_id, metric, spec.steps)
    lags = list(range(-max_lag, max_lag + 1))
    xc = lagged_correlation(x, y, lags=lags, detrend=detrend)
    both = np.isfinite(x) & np.isfinite(y)
    result: dict[str, Any] = {
        "series": series,
        "steps": spec.steps.tolist(),
        "correlation": jsonable(xc),
    }
    try:
        result["granger"] = jsonable(granger(x[both], y[both]))
    except (ValueError, np.linalg.LinAlgError) as exc:
        result["granger"] = None
        result["granger_error"] = str(exc)
    try:
        result["key_edge"] = jsonable(run_key_edge(spec, y, both, lags))
    except ValueError as exc:
        result["key_edge"] = None
        result["key_edge_error"] = str(exc)
    return int(both.sum()), result


def lag_sweep(
    conn: Connection,
    run_id: int,
    group: str,
    windows: list[int],
    metric: str,
    series: str,
    max_lag: int,
    detrend: bool,
) -> tuple[int, dict[str, Any]]:
    """Peak lag of the cross-correlation for each window: the "lag flip"."""
    from sedmon_core.coupling import lag_sweep as sweep

    pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    n = 0
    for w in windows:
        spec = spectrum_series(conn, run_id, group, w)
        if spec.steps.size == 0:
            continue
        y = aligned_metric(conn, run_id, metric, spec.steps)
        pairs[w] = (pick_series(spec, series), y)
        n = max(n, int(np.isfinite(y).sum()))
    if not pairs:
        raise AnalysisError("no window has spectra yet")
    res = sweep(pairs, lags=list(range(-max_lag, max_lag + 1)), detrend=detrend)
    return n, {"series": series, **jsonable(res)}


def phases(
    conn: Connection,
    run_id: int,
    group: str,
    window: int,
    method: str,
    series: str,
    metric: str | None,
) -> tuple[int, dict[str, Any]]:
    """Rise / plateau / collapse of the series by method; per-phase correlation with a metric."""
    from sedmon_core.phases import PHASE_METHODS, segment_phases

    if method not in PHASE_METHODS:
        raise AnalysisError(f"method must be one of {', '.join(PHASE_METHODS)}")
    spec = _spectrum(conn, run_id, group, window)
    x = pick_series(spec, series)
    seg = segment_phases(x, method)
    steps = spec.steps.tolist()

    def at(i: int | None) -> int | None:
        return None if i is None else steps[i]

    result: dict[str, Any] = {
        "series": series,
        "steps": steps,
        "values": jsonable(x),
        **jsonable(seg),
        "peak_step": at(seg.peak_index),
        "plateau_start_step": at(seg.plateau_start),
        "plateau_end_step": at(seg.plateau_end),
        "collapse_step": at(seg.collapse_index),
    }
    if metric is not None:
        from sedmon_core.coupling import phase_correlation

        y = aligned_metric(conn, run_id, metric, spec.steps)
        result["phase_correlation"] = jsonable(phase_correlation(x, y, seg.labels))
    return len(steps), result


def shifts(
    conn: Connection, run_id: int, group: str, window: int, method: str, series: str
) -> tuple[int, dict[str, Any]]:
    """Change points (distribution shift) of the series by method, with their steps."""
    from sedmon_core.changepoints import cusum_change, max_derivative_change, ttest_change

    detectors: dict[str, Callable[[np.ndarray], Any]] = {
        "max_derivative": max_derivative_change,
        "cusum": cusum_change,
        "ttest": ttest_change,
    }
    if method not in SHIFT_METHODS:
        raise AnalysisError(f"method must be one of {', '.join(SHIFT_METHODS)}")
    spec = _spectrum(conn, run_id, group, window)
    x = pick_series(spec, series)
    steps = spec.steps.tolist()
    chosen = list(detectors) if method == "all" else [method]
    found = []
    for name in chosen:
        cp = detectors[name](x)
        found.append(
            {
                **jsonable(cp),
                "change_step": None if cp.index is None else steps[cp.index],
                "candidate_step": None if cp.candidate is None else steps[cp.candidate],
            }
        )
    return len(steps), {
        "series": series,
        "steps": steps,
        "values": jsonable(x),
        "change_points": found,
    }


def reliability(
    conn: Connection,
    run_id: int,
    group: str,
    groups: list[str],
    window: int,
    w_max: int,
    rank_rule: str,
    noise_dim: int | None,
    last: int = 2000,
) -> tuple[int, dict[str, Any]]:
    """Split-half reliability of k*: even vs odd deltas, from the stored dot band.

    A half's window of W deltas spans 2(W - 1) lags of the full sequence; the server keeps
    W_max - 1 lags per delta, so W is limited to (W_max + 1) // 2.
    """
    from sedmon_core.reliability import split_half_reliability

    if 2 * (window - 1) > w_max - 1:
        raise AnalysisError(
            f"split-half needs 2(W-1) <= W_max-1 stored lags; window must be <= "
            f"{(w_max + 1) // 2} for this run (W_max = {w_max})"
        )
    steps, dots = dot_band(conn, run_id, groups, group, last)
    res = split_half_reliability(dots, window, rank_rule, noise_dim)
    last_steps = [int(steps[i]) for i in res.last_delta.tolist()]
    return int(steps.size), {**jsonable(res), "last_step": last_steps}
