"""Split-half reliability of the spectral edge: does the even half of the deltas agree with the odd?

The deltas d_0, d_1, ... (0-based) are split into the even-indexed (d_0, d_2, ...) and the
odd-indexed (d_1, d_3, ...). Each half gets its own spectrum series at the same window W,
from sub-blocks of the precomputed dot matrix (no new D-dimensional products). Window i of
each half spans about the same stretch of training (deltas 2i .. 2i + 2W - 1), so the two
signal ranks k* should agree where the edge is real and not a noise artefact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sedmon_core.spectrum import spectrum_series


@dataclass(frozen=True)
class SplitHalf:
    """Edge agreement of the even and odd halves.

    even_ranks, odd_ranks: (m,) signal ranks k* (1-based) of the paired windows.
    agree: (m,) bool. agreement: fraction of windows that agree, None when m = 0.
    last_delta: (m,) 0-based index, in the full delta sequence, of the last delta of each
    pair (the odd window's last delta), to map a pair to a step.
    """

    window: int
    rank_rule: str
    even_ranks: np.ndarray
    odd_ranks: np.ndarray
    agree: np.ndarray
    agreement: float | None
    last_delta: np.ndarray


def split_half_reliability(
    dots: np.ndarray, window: int = 10, rank_rule: str = "half", noise_dim: int | None = None
) -> SplitHalf:
    """Fraction of windows whose edge position k* agrees between even and odd deltas.

    dots: (N, N), dots[i, j] = <d_i, d_j> (float64). Each half (dots[::2, ::2] and
    dots[1::2, 1::2]) goes through `spectrum_series` with the same window (default 10),
    rank_rule (default "half") and noise_dim; window i of one half is paired with window i of
    the other, m = min of their counts (N // 2 - W + 1 when N // 2 >= W, else 0).
    """
    d = np.asarray(dots, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dots must be square (N, N), got shape {d.shape}")
    even = spectrum_series(d[::2, ::2], window, rank_rule, noise_dim)
    odd = spectrum_series(d[1::2, 1::2], window, rank_rule, noise_dim)
    m = min(len(even), len(odd))
    even_ranks = np.array([s.signal_rank for s in even[:m]], dtype=np.int64)
    odd_ranks = np.array([s.signal_rank for s in odd[:m]], dtype=np.int64)
    agree = even_ranks == odd_ranks
    return SplitHalf(
        window=window,
        rank_rule=rank_rule,
        even_ranks=even_ranks,
        odd_ranks=odd_ranks,
        agree=agree,
        agreement=float(agree.mean()) if m else None,
        last_delta=2 * (np.arange(m, dtype=np.int64) + window - 1) + 1,
    )
