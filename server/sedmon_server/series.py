"""Stored series of a run, read back as arrays: spectra, metrics, the band of the dot matrix.

Metric alignment (what analyses use): for each checkpoint step s_i, a metric's value is
the one logged at the latest step in (s_{i-1}, s_i] (for the first checkpoint, at or before
s_0); a checkpoint with no such value gets NaN and analyses drop it. So a value logged
between two checkpoints belongs to the later one, and no value is ever used twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from sedmon_server import tables
from sedmon_server.database import rows_binary

SCALAR_FIELDS: tuple[str, ...] = (
    "signal_rank",
    "gap_ratio",
    "additive_gap",
    "edge_strength",
    "total_variance",
    "effective_rank",
    "k95",
    "pc1_share",
    "drift_speed",
)


@dataclass(frozen=True)
class SpectrumSeries:
    """n points of one (run, group, window): steps (n,), sigma (n, W), ratios (n, W-1),
    and each scalar observable (n,) in `scalars`; phase labels (group all only)."""

    window: int
    steps: np.ndarray
    sigma: np.ndarray
    ratios: np.ndarray
    scalars: dict[str, np.ndarray]
    phases: list[str | None]


def spectrum_series(
    conn: Connection, run_id: int, group: str, window: int, since_step: int | None = None
) -> SpectrumSeries:
    """All stored spectra of (run, group, window), in step order (after `since_step`)."""
    s = tables.spectra
    cols = [s.c.step, s.c.sigma, s.c.ratios, *(s.c[f] for f in SCALAR_FIELDS), s.c.phase]
    stmt = select(*cols).where(s.c.run_id == run_id, s.c.group_name == group, s.c.window == window)
    if since_step is not None:
        stmt = stmt.where(s.c.step > since_step)
    rows = rows_binary(conn, stmt.order_by(s.c.step))
    n = len(rows)
    cols_t: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in cols]
    steps = np.asarray(cols_t[0], dtype=np.int64)
    sigma = np.frombuffer(b"".join(cols_t[1]), dtype="<f8").reshape(n, window)
    ratios = np.frombuffer(b"".join(cols_t[2]), dtype="<f8").reshape(n, window - 1)
    scalars = {
        f: np.asarray(cols_t[3 + i], dtype=np.int64 if f in ("signal_rank", "k95") else float)
        for i, f in enumerate(SCALAR_FIELDS)
    }
    return SpectrumSeries(window, steps, sigma, ratios, scalars, list(cols_t[-1]))


def checkpoint_steps(conn: Connection, run_id: int) -> np.ndarray:
    c = tables.checkpoints
    rows = conn.execute(select(c.c.step).where(c.c.run_id == run_id).order_by(c.c.step))
    return np.asarray([r.step for r in rows], dtype=np.int64)


def metric_names(conn: Connection, run_id: int) -> list[str]:
    m = tables.metrics
    rows = conn.execute(select(m.c.name).where(m.c.run_id == run_id).distinct().order_by(m.c.name))
    return [r.name for r in rows]


def metric_series(conn: Connection, run_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric in step order."""
    m = tables.metrics
    rows = conn.execute(
        select(m.c.step, m.c.value).where(m.c.run_id == run_id, m.c.name == name).order_by(m.c.step)
    ).all()
    return (
        np.asarray([r.step for r in rows], dtype=np.int64),
        np.asarray([r.value for r in rows], dtype=np.float64),
    )


def align_metric(
    metric_steps: np.ndarray, metric_values: np.ndarray, checkpoint_steps: np.ndarray
) -> np.ndarray:
    """Metric value per checkpoint step under the rule in the module docstring -> (n,)."""
    out = np.full(checkpoint_steps.shape, np.nan)
    if metric_steps.size == 0:
        return out
    idx = np.searchsorted(metric_steps, checkpoint_steps, side="right") - 1
    for i, j in enumerate(idx):
        if j < 0:
            continue
        lower = checkpoint_steps[i - 1] if i > 0 else None
        if lower is None or metric_steps[j] > lower:
            out[i] = metric_values[j]
    return out


def dot_band(
    conn: Connection, run_id: int, groups: list[str], group: str = "all", last: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """The run's dot matrix of its `last` deltas as far as it is stored (band W_max - 1 wide).

    Returns (steps (N,), dots (N, N)) of one group, "all" being the sum over the run's
    groups: dots[i, j] = <d_i, d_j> for |i - j| <= the lags stored, NaN outside the band.
    steps[i] is the step of the checkpoint that closed delta i. N <= `last` bounds memory
    (N^2 float64).
    """
    c = tables.checkpoints
    rows = conn.execute(
        select(c.c.step, c.c.lags, c.c.dots)
        .where(c.c.run_id == run_id, c.c.dots.is_not(None))
        .order_by(c.c.step.desc())
        .limit(last)
    ).all()[::-1]
    n = len(rows)
    dots = np.full((n, n), np.nan)
    g = len(groups)
    for i, row in enumerate(rows):
        lags = int(row.lags)
        per_group = np.frombuffer(row.dots, dtype="<f8").reshape(g, lags + 1)
        band = per_group[groups.index(group)] if group in groups else per_group.sum(axis=0)
        keep = min(lags, i)  # dots with deltas before the first one read are left out
        dots[i, i - keep : i + 1] = band[lags - keep :]
        dots[i - keep : i + 1, i] = band[lags - keep :]
    return np.asarray([r.step for r in rows], dtype=np.int64), dots
