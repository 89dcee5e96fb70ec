"""Noise structure of a window: Marchenko-Pastur prediction and a Gaussian null for the ratios.

Below the spectral edge a window should look like noise. Two yardsticks:

- Marchenko-Pastur (MP): the eigenvalues of the Gram of W pure-noise deltas in D dimensions
  (iid entries of variance s^2; D = sketch dim k after projection) follow, scaled by 1/D, the
  MP law of aspect ratio c = W / D. Its mean is s^2 and its variance c s^4 (for every c > 0,
  counting the W - D zero eigenvalues when c > 1), so the coefficient of variation (std /
  mean) of the eigenvalues is sqrt(c), whatever the noise scale. Real noise below the edge
  is anisotropic, so its CV exceeds this: the excess says how structured the "noise" is.
- A null model: windows of Gaussian deltas in D dims with the same norms as the observed
  deltas. Its 95th percentile of each ratio R_j = sigma_j / sigma_{j+1} is the level a
  ratio must pass to be above noise ("PC2 above the noise null").

Eigenvalues lambda_j = sigma_j^2 are in squared parameter units; CVs and ratios are
dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sedmon_core.spectrum import consecutive_ratios, singular_values


@dataclass(frozen=True)
class NoiseCV:
    """Observed CV of the eigenvalues below the edge against the MP prediction.

    observed_cv: std / mean (ddof 0) of lambda_j = sigma_j^2 for j > signal_rank (nan when
    fewer than 2 such modes or all zero). predicted_cv: `marchenko_pastur_cv` for the
    n_noise_modes modes in `dim` dimensions. excess: observed_cv / predicted_cv (1 = MP).
    """

    observed_cv: float
    predicted_cv: float
    excess: float
    n_noise_modes: int
    dim: int
    finite_size: bool


@dataclass(frozen=True)
class RatioNull:
    """Observed spectrum of one window against the Gaussian equal-norm null.

    null_ratios: (W-1,) the `quantile` of R_j over the null draws. observed_ratios: (W-1,).
    excess: observed / null, per j (> 1: above the null). above: (W-1,) bool, excess > 1.
    null_sigma, observed_sigma: (W,) the same for sigma_j (parameter units); sigma_above:
    (W,) bool. Index j-1 holds mode / ratio j ("PC2 above the null" is `above[1]` for R_2 or
    `sigma_above[1]` for sigma_2).
    """

    null_ratios: np.ndarray
    observed_ratios: np.ndarray
    excess: np.ndarray
    above: np.ndarray
    null_sigma: np.ndarray
    observed_sigma: np.ndarray
    sigma_above: np.ndarray
    quantile: float
    n_draws: int
    dim: int
    seed: int


def marchenko_pastur_moments(aspect_ratio: float, scale: float = 1.0) -> tuple[float, float]:
    """Mean and variance of the Marchenko-Pastur law with aspect ratio c = W / D.

    The law of the eigenvalues of G / D, G = X X^T, X (W, D) with iid entries of variance
    `scale` (= s^2). mean = scale, variance = c * scale^2, for every c > 0 (for c > 1 the
    law includes the atom of mass 1 - 1/c at zero). Units: those of `scale` (squared).
    """
    if aspect_ratio <= 0:
        raise ValueError("aspect_ratio must be > 0")
    return float(scale), float(aspect_ratio * scale**2)


def marchenko_pastur_cv(window: int, dim: int, finite_size: bool = False) -> float:
    """Predicted coefficient of variation (std / mean) of the W eigenvalues of a noise Gram.

    window: W, the number of noise modes; dim: D, the dimension of the deltas (the sketch
    dim k after projection). Default (finite_size=False): the MP value sqrt(W / D). With
    finite_size=True: the exact ratio sqrt(E[var]) / E[mean] for Gaussian entries at this
    (W, D), sqrt((W - 1)(W + 2) / (W D)), which tends to sqrt(W / D) as W, D grow (about
    5 % above it at W = 10). var is the population variance (ddof 0) over the W eigenvalues.
    """
    if window < 1 or dim < 1:
        raise ValueError("window and dim must be >= 1")
    w, d = float(window), float(dim)
    if finite_size:
        return float(np.sqrt((w - 1.0) * (w + 2.0) / (w * d)))
    return float(np.sqrt(w / d))


def noise_eigenvalue_cv(sigma: np.ndarray, signal_rank: int) -> float:
    """CV (std / mean, ddof 0) of the eigenvalues sigma_j^2 below the edge, j > signal_rank.

    sigma: (W,) singular values, descending; signal_rank: k* (1-based). Returns nan when
    fewer than 2 modes lie below the edge or their mean is 0.
    """
    s = np.asarray(sigma, dtype=np.float64)
    if signal_rank < 0:
        raise ValueError("signal_rank must be >= 0")
    lam = s[signal_rank:] ** 2
    if lam.size < 2 or float(lam.mean()) <= 0.0:
        return float("nan")
    return float(lam.std() / lam.mean())


def noise_cv_against_mp(
    sigma: np.ndarray, signal_rank: int, dim: int, finite_size: bool = False
) -> NoiseCV:
    """Observed CV of the modes below the edge against MP for those W - k* modes in D dims.

    sigma: (W,) descending; signal_rank: k* (1-based); dim: D (sketch dim k, or the number
    of parameters for exact deltas). The prediction treats the W - k* modes below the edge
    as a (W - k*) x D noise Gram. finite_size as in `marchenko_pastur_cv` (default False).
    """
    n_noise = int(np.asarray(sigma).size - signal_rank)
    observed = noise_eigenvalue_cv(sigma, signal_rank)
    predicted = marchenko_pastur_cv(max(n_noise, 1), dim, finite_size)
    return NoiseCV(
        observed_cv=observed,
        predicted_cv=predicted,
        excess=observed / predicted,
        n_noise_modes=n_noise,
        dim=dim,
        finite_size=finite_size,
    )


def _noise_grams(norms: np.ndarray, dim: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(n_draws, W, W) Grams of W Gaussian deltas in `dim` dims rescaled to `norms`.

    For dim >= W the Gram of iid N(0, 1) rows is Wishart(dim, I_W), drawn by the Bartlett
    decomposition in O(W^2) per draw whatever dim (exact deltas have dim in the millions).
    """
    w = norms.size
    if dim >= w:
        a = np.zeros((n_draws, w, w))
        rows, cols = np.tril_indices(w, -1)
        a[:, rows, cols] = rng.standard_normal((n_draws, rows.size))
        diag = np.arange(w)
        a[:, diag, diag] = np.sqrt(rng.chisquare(dim - diag, size=(n_draws, w)))
        grams = a @ np.swapaxes(a, 1, 2)
    else:
        x = rng.standard_normal((n_draws, w, dim))
        grams = x @ np.swapaxes(x, 1, 2)
    row_norms = np.sqrt(np.einsum("nii->ni", grams))
    factor = norms[None, :] / np.maximum(row_norms, 1e-300)
    return grams * factor[:, :, None] * factor[:, None, :]


def ratio_null(
    gram: np.ndarray,
    dim: int,
    n_draws: int = 200,
    quantile: float = 0.95,
    seed: int = 0,
) -> RatioNull:
    """Compare one window's ratios and singular values with a Gaussian equal-norm null.

    gram: (W, W) Gram of the observed deltas (float64, their norms are sqrt(diag)); dim: D,
    the dimension of the deltas (sketch dim k, or the parameter count for exact deltas).
    Each of n_draws (default 200) null windows has W Gaussian deltas in D dims, each
    rescaled to the norm of the matching observed delta, drawn from
    numpy.random.default_rng(seed) (default seed 0, so the result is reproducible).
    Reports the `quantile` (default 0.95) of each R_j (W-1,) and sigma_j (W,) over the draws.
    """
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] < 2:
        raise ValueError(f"gram must be square with W >= 2, got shape {g.shape}")
    if dim < 1 or n_draws < 1 or not 0.0 < quantile < 1.0:
        raise ValueError("need dim >= 1, n_draws >= 1 and 0 < quantile < 1")
    norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    grams = _noise_grams(norms, dim, n_draws, np.random.default_rng(seed))
    lam = np.linalg.eigvalsh(0.5 * (grams + np.swapaxes(grams, 1, 2)))[:, ::-1]
    null_sigma_draws = np.sqrt(np.clip(lam, 0.0, None))
    null_ratio_draws = np.stack([consecutive_ratios(s) for s in null_sigma_draws])
    null_ratios = np.quantile(null_ratio_draws, quantile, axis=0)
    null_sigma = np.quantile(null_sigma_draws, quantile, axis=0)
    sigma = singular_values(g)
    ratios = consecutive_ratios(sigma)
    excess = ratios / np.maximum(null_ratios, 1e-300)
    return RatioNull(
        null_ratios=null_ratios,
        observed_ratios=ratios,
        excess=excess,
        above=excess > 1.0,
        null_sigma=null_sigma,
        observed_sigma=sigma,
        sigma_above=sigma > null_sigma,
        quantile=quantile,
        n_draws=n_draws,
        dim=dim,
        seed=seed,
    )
