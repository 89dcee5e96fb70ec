import numpy as np
import pytest

from sedmon_core.coupling import (
    cubic_detrend,
    key_edge,
    lag_sweep,
    lagged_correlation,
    modal_signal_rank,
    pearson,
    phase_correlation,
    sliding_correlation,
)


def _leading_pair(lag: int, n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x white noise; y(t) = x(t - lag) + small noise, so x leads y by `lag` checkpoints."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n + 10)
    y = np.roll(x, lag) + 0.1 * rng.standard_normal(n + 10)
    return x[10:], y[10:]


def test_series_that_leads_by_two_peaks_at_plus_two() -> None:
    result = lagged_correlation(*_leading_pair(2))
    assert result.peak_lag == 2
    assert result.peak_r > 0.95


def test_series_that_lags_by_three_peaks_at_minus_three() -> None:
    x, y = _leading_pair(3)
    result = lagged_correlation(y, x)
    assert result.peak_lag == -3


def test_anticorrelated_lead_peaks_by_absolute_r() -> None:
    x, y = _leading_pair(1)
    result = lagged_correlation(x, -y)
    assert result.peak_lag == 1 and result.peak_r < -0.95


def test_pairs_per_lag_shrink_with_the_lag() -> None:
    result = lagged_correlation(*_leading_pair(1, n=30), lags=[-2, 0, 4])
    assert result.n.tolist() == [28, 30, 26]


def test_cubic_detrend_removes_a_cubic_exactly() -> None:
    t = np.arange(20.0)
    np.testing.assert_allclose(cubic_detrend(0.01 * t**3 - t + 4.0), 0.0, atol=1e-9)


def test_shared_cubic_trend_is_not_coupling_after_detrending() -> None:
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 1.0, 60)
    trend = 5.0 * t**3 - 2.0 * t
    x = trend + 0.05 * rng.standard_normal(60)
    y = trend + 0.05 * rng.standard_normal(60)
    assert abs(lagged_correlation(x, y, lags=[0]).r[0]) < 0.3
    assert lagged_correlation(x, y, lags=[0], detrend=False).r[0] > 0.99


def test_missing_values_are_skipped_pairwise() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([2.0, 4.0, 6.0, 8.0, np.nan])
    assert pearson(x, y) == (pytest.approx(1.0), 3)


def test_constant_series_has_undefined_r_and_no_peak() -> None:
    result = lagged_correlation(np.ones(20), np.arange(20.0), detrend=False)
    assert np.all(np.isnan(result.r)) and result.peak_lag is None


def test_lag_sweep_flags_a_flip_from_metric_leading_to_series_leading() -> None:
    x1, y1 = _leading_pair(1, seed=2)
    x2, y2 = _leading_pair(1, seed=3)
    sweep = lag_sweep({20: (x2, y2), 10: (y1, x1)})
    assert sweep.windows == (10, 20)
    assert sweep.peak_lags == (-1, 1)
    assert sweep.lag_flip


def test_lag_sweep_without_sign_change_is_no_flip() -> None:
    sweep = lag_sweep({10: _leading_pair(1, seed=4), 20: _leading_pair(2, seed=5)})
    assert sweep.peak_lags == (1, 2) and not sweep.lag_flip


def test_key_edge_picks_the_ratio_coupled_to_the_metric() -> None:
    rng = np.random.default_rng(6)
    ratios = 1.0 + 0.1 * rng.standard_normal((60, 9))
    metric = np.roll(ratios[:, 2], 1) + 0.01 * rng.standard_normal(60)  # R_3 leads by 1
    ranks = np.array([3] * 40 + [1] * 20)
    labels = ["rise"] * 10 + ["plateau"] * 30 + ["collapse"] * 20
    edge = key_edge(ratios, metric, signal_ranks=ranks, labels=labels)
    assert edge.j == 3
    assert edge.ranking[0].peak_lag == 1
    assert len(edge.ranking) == 4
    assert edge.plateau_signal_rank == 3


def test_key_edge_skips_candidates_beyond_the_window() -> None:
    rng = np.random.default_rng(7)
    edge = key_edge(rng.standard_normal((30, 2)), rng.standard_normal(30))
    assert sorted(c.j for c in edge.ranking) == [1, 2]


def test_modal_signal_rank_breaks_ties_towards_the_smaller_rank() -> None:
    assert modal_signal_rank(np.array([2, 3, 3, 2, 1])) == 2


def test_phase_correlation_reports_r_p_and_n_per_phase() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    y = np.array([1.0, 2.0, 3.1, 9.0, 8.0, 7.0, 6.0])
    labels = ["rise"] * 3 + ["plateau"] * 4
    result = phase_correlation(x, y, labels)
    assert list(result) == ["rise", "plateau"]
    assert result["plateau"].r == pytest.approx(-1.0)
    assert result["plateau"].n == 4
    assert result["plateau"].p < 1e-6
    assert result["rise"].r > 0.99


def test_phase_correlation_p_matches_scipy_pearsonr() -> None:
    from scipy import stats

    rng = np.random.default_rng(8)
    x, y = rng.standard_normal(12), rng.standard_normal(12)
    ours = phase_correlation(x, y, ["plateau"] * 12)["plateau"]
    ref = stats.pearsonr(x, y)
    assert ours.r == pytest.approx(ref.statistic) and ours.p == pytest.approx(ref.pvalue)


def test_sliding_correlation_is_right_aligned_and_tracks_a_sign_change() -> None:
    t = np.arange(30.0)
    x = np.sin(t)
    y = np.where(t < 15, x, -x)
    r = sliding_correlation(x, y, window=9)
    assert np.all(np.isnan(r[:8]))
    assert r[14] == pytest.approx(1.0)
    assert r[23] == pytest.approx(-1.0)
