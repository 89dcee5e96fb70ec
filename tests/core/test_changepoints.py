from collections.abc import Callable

import numpy as np
import pytest

from sedmon_core.changepoints import (
    ChangePoint,
    cusum_change,
    max_derivative_change,
    noise_scale,
    online_shift,
    standardised_increments,
    ttest_change,
)

CHANGE = 50


def _step(size: float = 6.0, n: int = 80, seed: int = 1) -> np.ndarray:
    """Unit-sd white noise around 0 that steps up by `size` at index CHANGE."""
    y = np.random.default_rng(seed).standard_normal(n)
    y[CHANGE:] += size
    return y


def _gap_ratio_switch(seed: int = 0) -> np.ndarray:
    """Gap ratio near 1.15 that jumps to 1.5 at CHANGE and decays back over ten windows."""
    rng = np.random.default_rng(seed)
    y = 1.15 + 0.01 * np.cumsum(rng.standard_normal(70)) * 0.3 + 0.01 * rng.standard_normal(70)
    t = np.arange(70) - CHANGE
    y[CHANGE:] += 0.35 * np.exp(-t[CHANGE:] / 10.0)
    return y


def test_max_derivative_finds_a_planted_step_within_one_index() -> None:
    found = max_derivative_change(_step())
    assert found.index is not None and abs(found.index - CHANGE) <= 1


def test_cusum_finds_a_planted_step_within_one_index() -> None:
    found = cusum_change(_step())
    assert found.index is not None and abs(found.index - CHANGE) <= 1


def test_ttest_finds_a_planted_step_within_one_index() -> None:
    found = ttest_change(_step())
    assert found.index is not None and abs(found.index - CHANGE) <= 1


def test_online_finds_a_gap_ratio_switch_within_one_index_and_fires_within_two() -> None:
    result = online_shift(_gap_ratio_switch())
    assert result.alarm and result.direction == "up"
    assert result.change_index is not None and abs(result.change_index - CHANGE) <= 1
    assert result.alarm_index is not None and CHANGE <= result.alarm_index <= CHANGE + 1


def test_online_on_the_last_40_values_fires_at_the_switch() -> None:
    result = online_shift(_gap_ratio_switch()[CHANGE - 30 : CHANGE + 1])
    assert result.alarm and result.alarm_index == 30 and result.change_index == 30


@pytest.mark.parametrize("detector", [max_derivative_change, cusum_change, ttest_change])
@pytest.mark.parametrize("seed", range(5))
def test_steady_noisy_series_has_no_change_point_offline(
    detector: Callable[[np.ndarray], ChangePoint], seed: int
) -> None:
    y = 1.3 + 0.05 * np.random.default_rng(100 + seed).standard_normal(120)
    assert detector(y).index is None


@pytest.mark.parametrize("seed", range(5))
def test_online_raises_no_alarm_on_steady_noise(seed: int) -> None:
    y = 1.3 + 0.05 * np.random.default_rng(200 + seed).standard_normal(120)
    assert not online_shift(y).alarm


@pytest.mark.parametrize("seed", range(5))
def test_online_raises_no_alarm_on_a_slow_linear_trend_with_noise(seed: int) -> None:
    t = np.arange(150)
    y = 1.1 + 0.004 * t + 0.02 * np.random.default_rng(300 + seed).standard_normal(150)
    assert not online_shift(y).alarm


def test_fixed_reference_cusum_alarms_on_the_same_slow_trend() -> None:
    t = np.arange(150)
    y = 1.1 + 0.004 * t + 0.02 * np.random.default_rng(300).standard_normal(150)
    assert cusum_change(y).index is not None


def test_online_needs_more_than_the_trailing_window() -> None:
    result = online_shift(np.linspace(1.0, 2.0, 21))
    assert not result.alarm and result.n_tested == 0


def test_online_fires_downwards_on_a_drop_after_a_flat_series() -> None:
    y = np.concatenate([np.full(30, 1.5), np.full(5, 1.0)])
    result = online_shift(y)
    assert (result.alarm_index, result.change_index, result.direction) == (30, 30, "down")


def test_standardised_increments_are_zero_on_an_exact_line() -> None:
    z = standardised_increments(np.linspace(0.0, 3.0, 30), trailing=20)
    assert np.all(np.isnan(z[:21]))
    np.testing.assert_allclose(z[21:], 0.0, atol=1e-9)


def test_noise_scale_recovers_white_noise_sd_despite_a_step() -> None:
    assert noise_scale(_step(size=10.0, n=2000)) == pytest.approx(1.0, rel=0.08)


def test_detectors_report_their_parameters() -> None:
    assert cusum_change(_step()).params == {"reference": 20, "k": 1.0, "h": 6.0}
    assert online_shift(_step()).params == {"trailing": 20, "k": 1.5, "h": 5.0}


def test_uncorrected_ttest_scan_finds_a_change_in_pure_noise() -> None:
    # Why the default is Bonferroni: the smallest raw p of many scanned splits is often < 0.05.
    y = np.random.default_rng(7).standard_normal(120)
    hits = [
        ttest_change(y[i : i + 60], correction="none").index is not None for i in range(0, 60, 6)
    ]
    assert any(hits)


def test_short_series_give_no_change_point() -> None:
    y = np.array([1.0, 2.0, 3.0])
    assert max_derivative_change(y).index is None
    assert cusum_change(y).index is None
    assert ttest_change(y).index is None
