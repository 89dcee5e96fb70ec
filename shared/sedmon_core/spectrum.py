"""Per-window spectra of parameter deltas: Gram matrix -> singular values -> spectral edge.

A window of size W ending at delta t stacks X = [d_{t-W+1}, ..., d_t] (W x D). Its Gram
G = X X^T (W x W, float64) shares the non-zero spectrum of the D x D covariance, so every
observable below comes from a W x W eigenproblem. Units: sigma is in parameter units
(the norm of a delta); ratios, shares and ranks are dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

RankRule = Literal["half", "noise_edge", "weighted", "all"]
RANK_RULES: tuple[str, ...] = ("half", "noise_edge", "weighted", "all")
RATIO_FLOOR = 1e-15
"""Denominator floor of sigma_j / sigma_{j+1} (PAPER-NOTES.md)."""


@dataclass(frozen=True)
class WindowSpectrum:
    """Every per-window observable of one window (PAPER-NOTES.md, "Per-window observables").

    sigma: (W,) singular values, descending, >= 0. ratios: (W-1,) sigma_j / sigma_{j+1}.
    signal_rank: k*, 1-based, chosen by `rank_rule`. gap_ratio: R_{k*}. additive_gap:
    sigma_{k*} - sigma_{k*+1}. edge_strength: log(R*). total_variance: trace(G).
    pc1_share: percent of total variance in the first mode. k95: modes needed for 95 %.
    effective_rank: exp(entropy of sigma^2 shares). drift_speed: norm of the mean delta.
    """

    sigma: np.ndarray
    ratios: np.ndarray
    signal_rank: int
    gap_ratio: float
    additive_gap: float
    edge_strength: float
    total_variance: float
    pc1_share: float
    k95: int
    effective_rank: float
    drift_speed: float
    rank_rule: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping (lists for arrays), the shape of a spectrum point without step."""
        return {
            "sigma": [float(v) for v in self.sigma],
            "ratios": [float(v) for v in self.ratios],
            "signal_rank": self.signal_rank,
            "gap_ratio": self.gap_ratio,
            "additive_gap": self.additive_gap,
            "edge_strength": self.edge_strength,
            "total_variance": self.total_variance,
            "pc1_share": self.pc1_share,
            "k95": self.k95,
            "effective_rank": self.effective_rank,
            "drift_speed": self.drift_speed,
        }


def gram_of_deltas(deltas: np.ndarray) -> np.ndarray:
    """Gram matrix G[i, j] = <d_i, d_j> of deltas (W, D) -> (W, W), float64."""
    x = np.asarray(deltas, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"deltas must be 2-D (W, D), got shape {x.shape}")
    return x @ x.T


def singular_values(gram: np.ndarray) -> np.ndarray:
    """Singular values of the window from its Gram (W, W): sqrt of eigenvalues, descending.

    Eigenvalues are clamped at 0 (round-off makes tiny ones negative). Returns (W,) float64.
    """
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be square, got shape {g.shape}")
    sym = 0.5 * (g + g.T)
    lam = np.linalg.eigvalsh(sym)[::-1]
    return np.sqrt(np.clip(lam, 0.0, None))


def consecutive_ratios(sigma: np.ndarray) -> np.ndarray:
    """R_j = sigma_j / sigma_{j+1}, j = 1..W-1 -> (W-1,).

    The denominator is floored at 1e-15; a ratio of two zero modes is 1 (no gap where
    nothing moves), so every ratio is finite.
    """
    s = np.asarray(sigma, dtype=np.float64)
    num, den = s[:-1], s[1:]
    out = num / np.maximum(den, RATIO_FLOOR)
    return np.where(num <= RATIO_FLOOR, 1.0, out)


def noise_floor(sigma: np.ndarray, noise_dim: int | None = None) -> float:
    """Estimated lower edge of the noise bulk, in sigma units.

    The bulk of a W x D noise Gram spans D s^2 (1 -+ sqrt(W/D))^2 (Marchenko-Pastur). Its
    scale D s^2 is estimated by the median eigenvalue (robust to a few signal modes), so
    the floor is sqrt(median(lambda)) * (1 - sqrt(W / D)). With D unknown (exact deltas,
    D >> W) the factor is 1: the floor is the median singular value.
    """
    s = np.asarray(sigma, dtype=np.float64)
    w = s.size
    c = 0.0 if not noise_dim else min(w / float(noise_dim), 1.0)
    return float(np.sqrt(np.median(s**2)) * (1.0 - np.sqrt(c)))


def signal_rank(
    sigma: np.ndarray,
    ratios: np.ndarray,
    rule: str = "half",
    noise_dim: int | None = None,
) -> int:
    """k*: the 1-based index j of the spectral edge R_j under a named rule.

    - half (default): argmax R_j over j = 1..floor(W/2), away from the noise tail;
    - noise_edge: argmax over j whose both modes sigma_j, sigma_{j+1} lie above the
      estimated noise floor (`noise_floor`; noise_dim = sketch dim k, None for exact);
      falls back to `half` when no ratio qualifies;
    - weighted: argmax of (sigma_j / sum sigma) * R_j (the author's grokking code);
    - all: argmax over j = 1..W-1, the paper's literal definition.
    """
    r = np.asarray(ratios, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    w = s.size
    if w < 2:
        raise ValueError("a window needs at least 2 deltas")
    if rule == "half":
        return int(np.argmax(r[: max(1, w // 2)])) + 1
    if rule == "all":
        return int(np.argmax(r)) + 1
    if rule == "weighted":
        total = float(s.sum())
        score = (s[:-1] / total) * r if total > 0 else r
        return int(np.argmax(score)) + 1
    if rule == "noise_edge":
        floor = noise_floor(s, noise_dim)
        allowed = np.flatnonzero(s[1:] >= floor)
        if allowed.size == 0 or floor <= 0:
            return signal_rank(s, r, "half")
        return int(allowed[np.argmax(r[allowed])]) + 1
    raise ValueError(f"unknown rank rule {rule!r}; use one of {', '.join(RANK_RULES)}")


def window_spectrum(
    gram: np.ndarray, rank_rule: str = "half", noise_dim: int | None = None
) -> WindowSpectrum:
    """Every per-window observable from one W x W Gram of deltas (float64)."""
    g = np.asarray(gram, dtype=np.float64)
    sigma = singular_values(g)
    ratios = consecutive_ratios(sigma)
    k = signal_rank(sigma, ratios, rank_rule, noise_dim)
    lam = sigma**2
    total = float(lam.sum())
    if total > 0:
        share = lam / total
        cum = np.cumsum(share)
        k95 = int(np.searchsorted(cum, 0.95 - 1e-12) + 1)
        nz = share[share > 0]
        effective_rank = float(np.exp(-np.sum(nz * np.log(nz))))
        pc1 = float(100.0 * share[0])
    else:
        k95, effective_rank, pc1 = 0, 0.0, 0.0
    gap = float(ratios[k - 1])
    w = sigma.size
    return WindowSpectrum(
        sigma=sigma,
        ratios=ratios,
        signal_rank=k,
        gap_ratio=gap,
        additive_gap=float(sigma[k - 1] - sigma[k]),
        edge_strength=float(np.log(gap)) if gap > 0 else 0.0,
        total_variance=total,
        pc1_share=pc1,
        k95=min(k95, w),
        effective_rank=effective_rank,
        drift_speed=float(np.sqrt(max(float(g.sum()), 0.0)) / w),
        rank_rule=rank_rule,
    )


def spectrum_series(
    dots: np.ndarray, window: int, rank_rule: str = "half", noise_dim: int | None = None
) -> list[WindowSpectrum]:
    """Spectra of every window of size W from a precomputed dot matrix of N deltas.

    dots: (N, N), dots[i, j] = <d_i, d_j>. Windows are right-aligned: entry i of the
    result is the window of deltas i .. i + W - 1, labelled by its last delta i + W - 1,
    that is by the step of its last checkpoint (`window_steps` gives those steps).
    Returns N - W + 1 spectra (none when N < W).
    """
    d = np.asarray(dots, dtype=np.float64)
    n = d.shape[0]
    if window < 2:
        raise ValueError("window must be >= 2")
    return [
        window_spectrum(d[i : i + window, i : i + window], rank_rule, noise_dim)
        for i in range(n - window + 1)
    ]


def window_steps(checkpoint_steps: np.ndarray, window: int) -> np.ndarray:
    """The step labelling each window of `spectrum_series`: the step of its last checkpoint.

    checkpoint_steps: (N + 1,) training steps of the checkpoints, ascending; delta i is
    theta(step i + 1) - theta(step i), so the window of deltas i .. i + W - 1 ends at
    checkpoint i + W. Returns (N - W + 1,) int64 steps, entry i for window i (empty when
    N < W).
    """
    steps = np.asarray(checkpoint_steps, dtype=np.int64)
    if steps.ndim != 1:
        raise ValueError(f"checkpoint_steps must be 1-D, got shape {steps.shape}")
    if window < 2:
        raise ValueError("window must be >= 2")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("checkpoint_steps must be strictly increasing")
    return steps[window:].copy()


def roll_gram(
    gram: np.ndarray, new_dots: np.ndarray, new_sq_norm: float, capacity: int
) -> np.ndarray:
    """Append one delta to the rolling Gram of the last m deltas, dropping the oldest past capacity.

    gram: (m, m) of the last m deltas, oldest first; new_dots: (m,), <d_new, d_i> for those
    deltas; new_sq_norm: <d_new, d_new>. Returns the (min(m + 1, capacity),)^2 Gram with
    the new delta last. O(m^2) copying, no D-dimensional work.
    """
    g = np.asarray(gram, dtype=np.float64)
    m = g.shape[0]
    v = np.asarray(new_dots, dtype=np.float64)
    if v.shape != (m,):
        raise ValueError(f"new_dots must have shape ({m},), got {v.shape}")
    out = np.empty((m + 1, m + 1), dtype=np.float64)
    out[:m, :m] = g
    out[m, :m] = v
    out[:m, m] = v
    out[m, m] = new_sq_norm
    return out[-capacity:, -capacity:] if m + 1 > capacity else out


def window_spectra(
    gram: np.ndarray,
    windows: list[int] | tuple[int, ...],
    rank_rule: str = "half",
    noise_dim: int | None = None,
) -> dict[int, WindowSpectrum]:
    """Spectra of the newest window of each size W from a rolling Gram (m, m), newest last.

    The window of size W is the trailing W x W block; sizes larger than m are left out.
    This is the incremental form: with `roll_gram`, each new delta costs its m dot
    products and one W x W eigenproblem per window.
    """
    g = np.asarray(gram, dtype=np.float64)
    m = g.shape[0]
    return {
        w: window_spectrum(g[m - w :, m - w :], rank_rule, noise_dim)
        for w in sorted(set(windows))
        if 2 <= w <= m
    }
