import numpy as np
import pytest

from sedmon_core.granger import (
    granger,
    granger_multivariate,
    granger_residualised,
    granger_test,
    residualise,
)


def _var_x_drives_y(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x_t = 0.5 x_{t-1} + e; y_t = 0.3 y_{t-1} + 0.8 x_{t-1} + u."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    y = np.zeros(n)
    for t in range(1, n):
        x[t] = 0.5 * x[t - 1] + rng.standard_normal()
        y[t] = 0.3 * y[t - 1] + 0.8 * x[t - 1] + rng.standard_normal()
    return x, y


def test_x_driving_y_is_found_in_that_direction_only() -> None:
    pair = granger(*_var_x_drives_y())
    assert pair.x_to_y.p < 0.01
    assert pair.y_to_x.p > 0.05


def test_chosen_lag_minimises_the_reported_aic() -> None:
    result = granger(*_var_x_drives_y()).x_to_y
    assert len(result.aic) == 2
    assert result.lag == int(np.argmin(result.aic)) + 1


def test_aic_picks_lag_two_when_y_depends_on_x_two_steps_back() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal(200)
    y = np.zeros(200)
    y[2:] = 0.9 * x[:-2] + 0.3 * rng.standard_normal(198)
    assert granger_test(x, y).lag == 2


def test_degrees_of_freedom_and_n_are_reported() -> None:
    result = granger_test(*_var_x_drives_y(n=60), max_lag=1)
    assert (result.lag, result.n, result.df_num, result.df_den) == (1, 59, 1, 56)


def test_r2_gain_is_full_minus_restricted_and_positive_when_x_drives_y() -> None:
    result = granger(*_var_x_drives_y()).x_to_y
    assert result.r2_gain == pytest.approx(result.r2_full - result.r2_restricted)
    assert result.r2_gain > 0.2


def test_f_and_p_match_statsmodels() -> None:
    from statsmodels.tsa.stattools import grangercausalitytests

    x, y = _var_x_drives_y(n=80, seed=1)
    ours = granger_test(x, y, max_lag=1)
    ref = grangercausalitytests(np.column_stack([y, x]), maxlag=[1])
    f, p, df_den, df_num = ref[1][0]["ssr_ftest"]
    assert ours.f == pytest.approx(f) and ours.p == pytest.approx(p)
    assert (ours.df_num, ours.df_den) == (df_num, df_den)


def test_residualised_removes_the_concurrent_metric() -> None:
    rng = np.random.default_rng(2)
    y = rng.standard_normal(50)
    x = 2.0 * y + 1.0 + 0.1 * rng.standard_normal(50)
    res = residualise(x, y)
    assert abs(np.corrcoef(res, y)[0, 1]) < 1e-9
    assert abs(res.mean()) < 1e-9


def test_residualised_test_still_finds_a_lagged_driver() -> None:
    pair = granger_residualised(*_var_x_drives_y(seed=3))
    assert pair.x_to_y.p < 0.01


def test_multivariate_test_counts_every_lag_of_every_series() -> None:
    x, y = _var_x_drives_y(seed=4)
    noise = np.random.default_rng(5).standard_normal(x.size)
    result = granger_multivariate(np.column_stack([x, noise]), y, max_lag=1)
    assert result.df_num == 2 and result.p < 0.01


def test_too_short_series_are_rejected() -> None:
    with pytest.raises(ValueError, match="too few points"):
        granger_test(np.arange(6.0), np.arange(6.0), max_lag=2)
