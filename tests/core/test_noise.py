import numpy as np
import pytest

from sedmon_core.noise import (
    marchenko_pastur_cv,
    marchenko_pastur_moments,
    noise_cv_against_mp,
    noise_eigenvalue_cv,
    ratio_null,
)


def _pooled_noise_cv(window: int, dim: int, draws: int, seed: int) -> float:
    """sqrt(mean variance) / mean of the eigenvalues of simulated W x D Gaussian noise Grams."""
    x = np.random.default_rng(seed).standard_normal((draws, window, dim))
    lam = np.linalg.eigvalsh(x @ np.swapaxes(x, 1, 2))
    return float(np.sqrt(lam.var(axis=1).mean()) / lam.mean())


def test_mp_moments_are_mean_scale_and_variance_c_scale_squared() -> None:
    assert marchenko_pastur_moments(0.25, scale=2.0) == (2.0, 1.0)


def test_mp_cv_is_sqrt_of_aspect_ratio() -> None:
    assert marchenko_pastur_cv(10, 1000) == pytest.approx(0.1)


def test_mp_cv_matches_simulation_within_two_percent_for_a_large_window() -> None:
    simulated = _pooled_noise_cv(50, 500, draws=200, seed=1)
    assert simulated == pytest.approx(marchenko_pastur_cv(50, 500), rel=0.02)


def test_finite_size_cv_matches_simulation_within_two_percent_at_w10() -> None:
    simulated = _pooled_noise_cv(10, 100, draws=2000, seed=2)
    assert simulated == pytest.approx(marchenko_pastur_cv(10, 100, finite_size=True), rel=0.02)


def test_noise_cv_uses_only_modes_below_the_edge() -> None:
    sigma = np.sqrt(np.array([100.0, 3.0, 1.0, 2.0]))
    lam = np.array([3.0, 1.0, 2.0])
    assert noise_eigenvalue_cv(sigma, 1) == pytest.approx(lam.std() / lam.mean())


def test_noise_cv_is_nan_with_a_single_mode_below_the_edge() -> None:
    assert np.isnan(noise_eigenvalue_cv(np.array([2.0, 1.0]), 1))


def test_isotropic_noise_has_no_cv_excess_over_mp() -> None:
    x = np.random.default_rng(3).standard_normal((40, 4000))
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(x @ x.T)[::-1], 0.0, None))
    result = noise_cv_against_mp(sigma, signal_rank=0, dim=4000)
    assert result.excess == pytest.approx(1.0, abs=0.15)


def _window_with_signal(strength: float, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, dim))
    x[:, 0] += strength * np.sqrt(dim)
    return x @ x.T


def test_a_strong_drift_direction_puts_r1_above_the_null() -> None:
    result = ratio_null(_window_with_signal(1.0, 200, seed=4), dim=200)
    assert bool(result.above[0])


def test_pure_noise_stays_below_the_null_at_the_edge() -> None:
    result = ratio_null(_window_with_signal(0.0, 200, seed=5), dim=200)
    assert not bool(result.above[0])


def test_null_is_reproducible_for_a_seed() -> None:
    gram = _window_with_signal(0.5, 200, seed=6)
    a = ratio_null(gram, dim=200, seed=7).null_ratios
    b = ratio_null(gram, dim=200, seed=7).null_ratios
    np.testing.assert_array_equal(a, b)


def test_null_ratios_approach_one_for_a_huge_dimension() -> None:
    # Drawn in O(W^2) per draw, never as 10**7-long vectors; R_1 stays within 1 % of 1.
    gram = np.diag(np.full(10, 4.0))
    result = ratio_null(gram, dim=10**7, n_draws=100)
    assert result.null_ratios.shape == (9,)
    assert float(result.null_ratios[0]) < 1.01


def test_null_matches_direct_simulation_below_the_window_size() -> None:
    norms = np.linspace(1.0, 2.0, 12)
    gram = np.diag(norms**2)
    result = ratio_null(gram, dim=6, n_draws=2000, seed=8)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2000, 12, 6))
    x *= (norms / np.linalg.norm(x, axis=2))[:, :, None]
    s = np.sqrt(np.clip(np.linalg.eigvalsh(x @ np.swapaxes(x, 1, 2))[:, ::-1], 0.0, None))
    expected = np.quantile(s[:, :5] / s[:, 1:6], 0.95, axis=0)
    np.testing.assert_allclose(result.null_ratios[:5], expected, rtol=0.05)


def test_null_bartlett_draw_matches_direct_simulation() -> None:
    norms = np.linspace(1.0, 3.0, 10)
    result = ratio_null(np.diag(norms**2), dim=200, n_draws=3000, seed=10)
    x = np.random.default_rng(11).standard_normal((3000, 10, 200))
    x *= (norms / np.linalg.norm(x, axis=2))[:, :, None]
    s = np.sqrt(np.clip(np.linalg.eigvalsh(x @ np.swapaxes(x, 1, 2))[:, ::-1], 0.0, None))
    expected = np.quantile(s[:, :-1] / s[:, 1:], 0.95, axis=0)
    np.testing.assert_allclose(result.null_ratios, expected, rtol=0.01)
