import numpy as np

from sedmon_core.reliability import split_half_reliability


def _deltas_with_two_drift_directions(n: int, seed: int = 0) -> np.ndarray:
    """n deltas in 300 dims: two strong, unequal drift directions plus isotropic noise."""
    rng = np.random.default_rng(seed)
    d = 0.02 * rng.standard_normal((n, 300))
    d[:, 0] += 1.0 + 0.1 * rng.standard_normal(n)
    d[:, 1] += 0.6 * rng.choice([-1.0, 1.0], size=n)
    return d


def test_a_clear_edge_agrees_in_every_window() -> None:
    d = _deltas_with_two_drift_directions(40)
    result = split_half_reliability(d @ d.T, window=10)
    assert result.agreement == 1.0
    assert result.even_ranks.tolist() == [2] * 11


def test_pure_noise_edges_disagree_often() -> None:
    d = np.random.default_rng(1).standard_normal((60, 300))
    result = split_half_reliability(d @ d.T, window=10)
    assert result.agreement is not None and result.agreement < 0.6


def test_windows_are_paired_and_labelled_by_their_last_delta() -> None:
    d = _deltas_with_two_drift_directions(25)
    result = split_half_reliability(d @ d.T, window=10)
    assert result.even_ranks.size == result.odd_ranks.size == 3
    assert result.last_delta.tolist() == [19, 21, 23]


def test_too_few_deltas_give_no_agreement() -> None:
    d = _deltas_with_two_drift_directions(15)
    result = split_half_reliability(d @ d.T, window=10)
    assert result.agreement is None and result.agree.size == 0
