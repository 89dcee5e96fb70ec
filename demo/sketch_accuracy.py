"""How far a sketched spectral edge is from the exact one, on the deltas of a real run.

The error of one window is |R*_sketch - R*_exact| / R*_exact, each gap ratio R* taken with
its own signal rank (what a sketched run would report against what the exact run would).

The Gaussian baseline here is a dense N(0, 1/k) matrix from numpy's generator, applied to
the deltas as one matrix product: the same distribution as the product's `gaussian`
method (the paper's dense JL), whose counter-based generator costs O(k D) hashes per
checkpoint (about 35 ms per row at 0.6 M parameters on one core, so 35 s per checkpoint at
k = 1,000): too slow to sweep k = 50..1,000 over three seeds. The rows are nested: the
sketch at k uses the first k rows of one matrix per seed, so each k is a valid JL on its
own and the sweep costs the largest k once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sedmon_core.spectrum import spectrum_series

CHUNK_ROWS = 50
"""Rows of the Gaussian matrix drawn at a time (50 x D float32: 128 MB at D = 0.64 M)."""


def dense_gaussian_dots(
    deltas: np.ndarray, dims: Sequence[int], seed: int
) -> dict[int, np.ndarray]:
    """{k: (N, N) dots of the Gaussian-sketched deltas} for each k in dims.

    deltas: (N, D) (float32 is enough: errors of 1e-7 against the JL's percent level).
    The sketch of d is R d / sqrt(k), R (k, D) iid N(0, 1) from default_rng(seed), nested
    over k (see the module docstring). Work: max(dims) x D normals and as many x N MACs.
    """
    x = np.asarray(deltas, dtype=np.float32)
    k_max = max(dims)
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for start in range(0, k_max, CHUNK_ROWS):
        r = rng.standard_normal((min(CHUNK_ROWS, k_max - start), x.shape[1]), dtype=np.float32)
        rows.append((r @ x.T).astype(np.float64))
    projected = np.concatenate(rows, axis=0)  # (k_max, N)
    out: dict[int, np.ndarray] = {}
    for k in dims:
        y = projected[:k] / np.sqrt(k)
        out[k] = y.T @ y
    return out


@dataclass(frozen=True)
class GapRatioError:
    """Per-window comparison of a sketched spectrum with the exact one (W fixed).

    relative_error: (n,) |R*_sketch - R*_exact| / R*_exact; rank_agreement: fraction of
    windows whose signal rank agrees; mean / p90 / worst: of relative_error.
    """

    relative_error: np.ndarray
    rank_agreement: float
    mean: float
    p90: float
    worst: float


def gap_ratio_error(
    exact_dots: np.ndarray,
    sketch_dots: np.ndarray,
    window: int = 10,
    rank_rule: str = "half",
    sketch_dim: int | None = None,
) -> GapRatioError:
    """Gap-ratio error of every window of size W: sketched dots against exact dots (N, N)."""
    exact = spectrum_series(exact_dots, window, rank_rule)
    sketched = spectrum_series(sketch_dots, window, rank_rule, sketch_dim)
    r_exact = np.array([s.gap_ratio for s in exact])
    r_sketch = np.array([s.gap_ratio for s in sketched])
    err = np.abs(r_sketch - r_exact) / r_exact
    agree = np.mean([a.signal_rank == b.signal_rank for a, b in zip(exact, sketched, strict=True)])
    return GapRatioError(
        relative_error=err,
        rank_agreement=float(agree),
        mean=float(err.mean()),
        p90=float(np.quantile(err, 0.9)),
        worst=float(err.max()),
    )
