"""Synthetic training trajectories with planted events, for the alert tests and bench/alerts.py.

A delta is a low-rank signal plus anisotropic Gaussian noise in `dim` coordinates:
  d_t = a1(t) (1 + 0.3 e_t) u1 + a2(t) s_t (1 + 0.3 f_t) u2 + noise_t,
u1, u2 fixed orthonormal directions (u1 a steady drift: its coefficients keep one sign;
u2 an oscillating direction: random signs s_t), e_t, f_t standard normal, noise
coordinate i with sd proportional to (i + 1)^-0.25 and a norm of about `noise` per delta.
Positions are the cumulative sums of the deltas (what a client sketches with method
"identity"). Families:

- steady: constant signal of rank 2 with a slow trend of every amplitude (a decaying
  learning rate, -40 % over the run): nothing happens;
- drift: one drift direction (rank 1, as small real runs often show) whose amplitude
  grows by 50 % over the run (a slow trend of the gap ratio): nothing happens;
- collapse: rank 2 (sigma2/sigma3 well above 1.5), then u2 fades linearly to 0 over
  `fade` deltas starting at delta `at`: the second direction merges into the noise;
- rank: the signal rank goes 1 -> 2 at delta `at` (u2 switches on);
- switch: a corpus switch at delta `at`: a new drift direction with a transient
  amplitude (decay over ~8 deltas) and 30 % more noise, over a weak drift (rank 1).

Window labels: with W-delta windows over deltas 1..n, the window ending at delta t is
labelled by checkpoint t (positions 0..n); a planted delta index `at` is the checkpoint
index of the first changed delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES: tuple[str, ...] = ("steady", "drift", "collapse", "rank", "switch")
QUIET: tuple[str, ...] = ("steady", "drift")


@dataclass(frozen=True)
class Trajectory:
    family: str
    positions: np.ndarray
    """(n + 1, dim) positions, float64."""
    at: int | None
    """Checkpoint index of the first changed delta (None for steady)."""


def _noise(rng: np.random.Generator, n: int, dim: int, level: float) -> np.ndarray:
    scale = (np.arange(dim) + 1.0) ** -0.25
    scale *= level / np.sqrt(np.sum(scale**2))
    return rng.normal(size=(n, dim)) * scale


def trajectory(
    family: str,
    n: int = 120,
    seed: int = 0,
    noise: float = 1.0,
    dim: int = 100,
    at: int | None = None,
    fade: int = 5,
) -> Trajectory:
    """Positions of a run of n deltas (n + 1 checkpoints) of one family; see the module doc."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 3)))
    u1, u2, u3 = basis.T
    t = np.arange(1, n + 1, dtype=np.float64)
    e = rng.normal(size=n)
    g = rng.choice([-1.0, 1.0], size=n) * (1 + 0.3 * rng.normal(size=n))
    at = at if at is not None else (None if family in QUIET else n // 2)
    a1 = np.full(n, 1.3)
    a2 = np.zeros(n)
    level = np.full(n, noise)
    extra = np.zeros((n, dim))
    if family == "steady":
        decay = 1.0 - 0.4 * t / n
        a1, a2, level = a1 * decay, 1.6 * decay, level * decay
    elif family == "drift":
        a1 = a1 * (1.0 + 0.5 * t / n)
    elif family == "collapse":
        assert at is not None
        a2 = np.clip((at + fade - t) / fade, 0.0, 1.0) * 1.6
    elif family == "rank":
        assert at is not None
        a2 = np.where(t >= at, 1.6, 0.0)
    elif family == "switch":
        assert at is not None
        a1 = np.full(n, 0.3)
        after = t >= at
        level = np.where(after, noise * 1.3, noise)
        transient = np.where(after, 1.2 * np.exp(-(t - at) / 8.0) + 0.3, 0.0)
        extra = (transient * (1 + 0.3 * rng.normal(size=n)))[:, None] * u3[None, :]
        a1 = np.where(after, 0.15, a1)
    else:
        raise ValueError(f"unknown family {family!r}")
    noise_part = _noise(rng, n, dim, 1.0) * level[:, None]
    deltas = (
        (a1 * (1 + 0.3 * e))[:, None] * u1[None, :]
        + (a2 * g)[:, None] * u2[None, :]
        + extra
        + noise_part
    )
    positions = np.vstack([np.zeros(dim), np.cumsum(deltas, axis=0)])
    return Trajectory(family, positions, at)
