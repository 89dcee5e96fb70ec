"""CSV renderings of the series endpoints (`?format=csv`): a header row, one row per point."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

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
