"""Per-window spectra: closed forms, rank rules, and the batch/incremental equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from sedmon_core import (
    RANK_RULES,
    consecutive_ratios,
    gram_of_deltas,
    roll_gram,
    signal_rank,
    singular_values,
    spectrum_series,
    window_spectra,
    window_spectrum,
    window_steps,
)

# The paper's published TinyStories spectrum at step 2000, W = 10 (PAPER-NOTES.md).
PAPER_SIGMA = np.array([198.58, 169.08, 122.47, 110.73, 106.22, 92.66, 78.30, 61.27, 44.58, 22.79])


def planted_deltas(rank: int, w: int = 10, d: int = 2000, seed: int = 0) -> np.ndarray:
    """W deltas: `rank` strong orthogonal directions with decaying scales plus weak noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, rank)))
    coeff = rng.normal(size=(w, rank)) * np.linspace(40.0, 25.0, rank)
    return coeff @ basis.T + rng.normal(size=(w, d)) * 0.05


def test_paper_spectrum_gives_rank_two_under_half_rule() -> None:
    assert signal_rank(PAPER_SIGMA, consecutive_ratios(PAPER_SIGMA), "half") == 2


def test_paper_spectrum_gives_rank_nine_under_all_rule() -> None:
    assert signal_rank(PAPER_SIGMA, consecutive_ratios(PAPER_SIGMA), "all") == 9


def test_paper_spectrum_gives_rank_two_under_noise_edge_rule() -> None:
    r = consecutive_ratios(PAPER_SIGMA)
    assert signal_rank(PAPER_SIGMA, r, "noise_edge", noise_dim=100) == 2


def test_ratios_match_hand_computation() -> None:
    r = consecutive_ratios(PAPER_SIGMA)
    expected = [198.58 / 169.08, 169.08 / 122.47, 44.58 / 22.79]
    np.testing.assert_allclose([r[0], r[1], r[8]], expected, rtol=1e-12, atol=0)


def test_window_spectrum_observables_from_diagonal_gram() -> None:
    lam = np.array([16.0, 4.0, 1.0, 1.0])
    spec = window_spectrum(np.diag(lam))
    np.testing.assert_allclose(spec.sigma, [4.0, 2.0, 1.0, 1.0], rtol=1e-12)
    assert spec.signal_rank == 1
    assert spec.gap_ratio == pytest.approx(2.0, rel=1e-12)
    assert spec.additive_gap == pytest.approx(2.0, rel=1e-12)
    assert spec.edge_strength == pytest.approx(np.log(2.0), rel=1e-12)
    assert spec.total_variance == pytest.approx(22.0, rel=1e-12)
    assert spec.pc1_share == pytest.approx(100 * 16 / 22, rel=1e-12)
    assert spec.k95 == 3  # 16 + 4 = 20 / 22 = 0.909 < 0.95; + 1 -> 0.955
    p = lam / lam.sum()
    assert spec.effective_rank == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-12)
    assert spec.drift_speed == pytest.approx(np.sqrt(22.0) / 4, rel=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("rule", ["half", "noise_edge", "weighted", "all"])
def test_planted_rank_spike_is_found(rank: int, rule: str) -> None:
    g = gram_of_deltas(planted_deltas(rank))
    assert window_spectrum(g, rule, noise_dim=2000).signal_rank == rank


def test_zero_window_has_finite_observables() -> None:
    spec = window_spectrum(np.zeros((5, 5)))
    assert np.all(spec.ratios == 1.0)
    assert spec.total_variance == 0.0
    assert np.isfinite(spec.edge_strength)


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown rank rule"):
        window_spectrum(np.eye(4), "largest")


def test_singular_values_equal_svd_of_deltas() -> None:
    x = np.random.default_rng(3).normal(size=(10, 500))
    np.testing.assert_allclose(
        singular_values(gram_of_deltas(x)), np.linalg.svd(x, compute_uv=False), rtol=1e-10
    )


def test_dot_matrix_series_equals_recomputing_each_window() -> None:
    rng = np.random.default_rng(7)
    deltas = rng.normal(size=(25, 300)) * np.linspace(1, 3, 25)[:, None]
    series = spectrum_series(gram_of_deltas(deltas), 10)
    assert len(series) == 16
    for i, spec in enumerate(series):
        direct = window_spectrum(gram_of_deltas(deltas[i : i + 10]))
        np.testing.assert_allclose(spec.sigma, direct.sigma, rtol=1e-12, atol=1e-12)
        assert spec.signal_rank == direct.signal_rank


@pytest.mark.parametrize("rule", RANK_RULES)
def test_incremental_rolling_gram_equals_batch(rule: str) -> None:
    rng = np.random.default_rng(11)
    deltas = rng.normal(size=(40, 200)) + rng.normal(size=(1, 200)) * 3
    windows = [10, 15, 20]
    capacity = max(windows)
    batch = {w: spectrum_series(gram_of_deltas(deltas), w, rule, noise_dim=200) for w in windows}
    state = np.zeros((0, 0))  # Gram of the last capacity - 1 deltas, as the server keeps it
    kept: list[np.ndarray] = []
    for t, d in enumerate(deltas):
        dots = np.array([float(d @ p) for p in kept])
        gram = roll_gram(state, dots, float(d @ d), capacity)
        kept = [*kept, d][-(capacity - 1) :]
        state = gram[1:, 1:] if gram.shape[0] == capacity else gram
        for w, spec in window_spectra(gram, windows, rule, noise_dim=200).items():
            ref = batch[w][t - w + 1]
            np.testing.assert_allclose(spec.sigma, ref.sigma, rtol=1e-12, atol=1e-12)
            assert spec.signal_rank == ref.signal_rank
    assert gram.shape == (capacity, capacity)


def test_window_spectra_leaves_out_windows_longer_than_history() -> None:
    g = gram_of_deltas(np.random.default_rng(0).normal(size=(12, 50)))
    assert sorted(window_spectra(g, [10, 15])) == [10]


def test_each_window_is_labelled_by_the_step_of_its_last_checkpoint() -> None:
    checkpoint_steps = np.arange(0, 130, 10)  # 13 checkpoints, 12 deltas
    deltas = np.random.default_rng(5).normal(size=(12, 40))
    series = spectrum_series(gram_of_deltas(deltas), 10)
    steps = window_steps(checkpoint_steps, 10)
    assert steps.tolist() == [100, 110, 120]
    assert len(steps) == len(series)
    # Window 0 holds deltas 0..9: theta(10) - theta(0) .. theta(100) - theta(90).
    direct = window_spectrum(gram_of_deltas(deltas[:10]))
    np.testing.assert_allclose(series[0].sigma, direct.sigma, rtol=1e-12)


def test_window_steps_of_a_short_run_are_empty() -> None:
    assert window_steps(np.array([0, 5, 10]), 3).tolist() == []


def test_window_steps_need_increasing_steps() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        window_steps(np.array([0, 10, 10, 20]), 2)
