"""CSV renderings of the series endpoints (`?format=csv`): a header row, one row per point.

Analyses (`analysis_csv`) answer their per-point series: phases and shifts one row per
checkpoint, coupling one per lag, lag-sweep one per window, reliability one per window of
deltas. A null (non-finite) number is an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sedmon_server.series import SCALAR_FIELDS, SpectrumSeries


def spectrum_csv(series: SpectrumSeries) -> str:
    """Columns: step, the scalar observables, phase, sigma_1..sigma_W, ratio_1..ratio_{W-1}."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        ["step", *SCALAR_FIELDS, "phase"]
        + [f"sigma_{j + 1}" for j in range(series.window)]
        + [f"ratio_{j + 1}" for j in range(series.window - 1)]
    )
    sig = series.sigma.tolist()
    rat = series.ratios.tolist()
    scal = [series.scalars[f].tolist() for f in SCALAR_FIELDS]
    for i, step in enumerate(series.steps.tolist()):
        w.writerow([step, *(col[i] for col in scal), series.phases[i] or "", *sig[i], *rat[i]])
    return out.getvalue()


def metrics_csv(series: Sequence[tuple[str, Sequence[int], Sequence[float]]]) -> str:
    """Columns: name, step, value."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["name", "step", "value"])
    for name, steps, values in series:
        for s, v in zip(steps, values, strict=True):
            w.writerow([name, s, v])
    return out.getvalue()


def _table(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(zip(*columns, strict=True))
    return out.getvalue()


def _phases(result: Mapping[str, Any]) -> str:
    """Columns: step, value (the series), phase (rise / plateau / collapse)."""
    return _table(["step", "value", "phase"], [result["steps"], result["values"], result["labels"]])


def _shifts(result: Mapping[str, Any]) -> str:
    """Columns: step, value, then one per detector: `change` at its change point's step,
    `candidate` at its best candidate's when that was not accepted, empty elsewhere."""
    steps = result["steps"]
    marks = []
    for cp in result["change_points"]:
        col = [""] * len(steps)
        if cp["candidate"] is not None:
            col[cp["candidate"]] = "candidate"
        if cp["index"] is not None:
            col[cp["index"]] = "change"
        marks.append(col)
    methods = [cp["method"] for cp in result["change_points"]]
    return _table(["step", "value", *methods], [steps, result["values"], *marks])


def _coupling(result: Mapping[str, Any]) -> str:
    """Columns: lag (positive: the spectral series leads), r, n (pairs at that lag)."""
    xc = result["correlation"]
    return _table(["lag", "r", "n"], [xc["lags"], xc["r"], xc["n"]])


def _lag_sweep(result: Mapping[str, Any]) -> str:
    """Columns: window, peak_lag, peak_r."""
    return _table(
        ["window", "peak_lag", "peak_r"],
        [result["windows"], result["peak_lags"], result["peak_r"]],
    )


def _reliability(result: Mapping[str, Any]) -> str:
    """Columns: last_step (each window's last delta), even_rank, odd_rank, agree (0/1)."""
    return _table(
        ["last_step", "even_rank", "odd_rank", "agree"],
        [
            result["last_step"],
            result["even_ranks"],
            result["odd_ranks"],
            [int(a) for a in result["agree"]],
        ],
    )


ANALYSIS_CSV: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "coupling": _coupling,
    "lag-sweep": _lag_sweep,
    "phases": _phases,
    "shifts": _shifts,
    "reliability": _reliability,
}


def analysis_csv(name: str, result: Mapping[str, Any]) -> str:
    """The series of one analysis result (sedmon_server.analyses) as CSV; see the module doc."""
    return ANALYSIS_CSV[name](result)
