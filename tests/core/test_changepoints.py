from collections.abc import Callable

import numpy as np
import pytest

from sedmon_core.changepoints import (
    ChangePoint,
    IncrementTrack,
    cusum_change,
    max_derivative_change,
    noise_scale,
    online_shift,
    standardised_increments,
    track_increment,
    ttest_change,
    windowed_glr,
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


def test_online_on_the_last_41_values_fires_at_the_switch() -> None:
    # 20 reference differences, 10 kept out of the reference, then the switch.
    result = online_shift(_gap_ratio_switch()[CHANGE - 40 : CHANGE + 1])
    assert result.alarm and result.alarm_index == 40 and result.change_index == 40


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


def test_online_needs_more_than_the_reference_and_the_span() -> None:
    result = online_shift(np.linspace(1.0, 2.0, 31))
    assert not result.alarm and result.n_tested == 0


def test_online_fires_downwards_on_a_drop_after_a_flat_series() -> None:
    y = np.concatenate([np.full(40, 1.5), np.full(5, 1.0)])
    result = online_shift(y)
    assert (result.alarm_index, result.change_index, result.direction) == (40, 40, "down")


def test_standardised_increments_are_zero_on_an_exact_line() -> None:
    z = standardised_increments(np.linspace(0.0, 3.0, 30), trailing=20)
    assert np.all(np.isnan(z[:21]))
    np.testing.assert_allclose(z[21:], 0.0, atol=1e-9)


def _increments_one_by_one(y: np.ndarray, trailing: int) -> np.ndarray:
    """The definition, point by point: (d_t - median(past)) / robust scale of past."""
    out = np.full(y.size, np.nan)
    d = np.diff(y)
    for t in range(trailing + 1, y.size):
        past = d[t - 1 - trailing : t - 1]
        med = float(np.median(past))
        dev = np.abs(past - med)
        scale = 1.4826 * float(np.median(dev))
        if scale <= 0.0:
            scale = 1.2533 * float(dev.mean())
        scale = max(scale, 1e-12 * max(1.0, float(np.max(np.abs(past)))))
        out[t] = (d[t - 1] - med) / scale
    return out


@pytest.mark.parametrize("trailing", [2, 5, 20])
def test_standardised_increments_equal_the_point_by_point_definition(trailing: int) -> None:
    rng = np.random.default_rng(trailing)
    series = [
        np.cumsum(rng.normal(size=60)),
        _step(),
        # Mostly equal increments: a zero MAD, so the mean-deviation fallback and the floor.
        np.concatenate([np.arange(30.0), 29.0 + 2.0 * np.arange(1, 11), np.full(8, 49.0)]),
        np.full(25, 3.0),
    ]
    for y in series:
        np.testing.assert_array_equal(
            standardised_increments(y, trailing), _increments_one_by_one(y, trailing)
        )


def test_standardised_increments_are_all_nan_without_enough_history() -> None:
    assert np.all(np.isnan(standardised_increments(np.arange(21.0), trailing=20)))


def test_noise_scale_recovers_white_noise_sd_despite_a_step() -> None:
    assert noise_scale(_step(size=10.0, n=2000)) == pytest.approx(1.0, rel=0.08)


def test_detectors_report_their_parameters() -> None:
    assert cusum_change(_step()).params == {"reference": 20, "k": 1.0, "h": 6.0}
    assert online_shift(_step()).params == {
        "trailing": 20,
        "span": 10,
        "h": 9.0,
        "floor": 0.85,
        "alpha": 0.05,
        "min_run": 1,
    }


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


def test_windowed_glr_takes_the_best_run_length() -> None:
    # m = 1: 3; m = 2: 6 / sqrt(2) = 4.243; m = 3: 6 / sqrt(3); m = 4: 6 / 2.
    statistic, m, total = windowed_glr([0.0, 0.0, 3.0, 3.0])
    assert (m, total) == (2, 6.0) and statistic == pytest.approx(6.0 / np.sqrt(2.0))
    statistic, m, total = windowed_glr([0.0, 0.0, 3.0, 3.0], min_run=3)
    assert (m, total) == (3, 6.0) and statistic == pytest.approx(6.0 / np.sqrt(3.0))
    assert windowed_glr([5.0], min_run=2) == (0.0, 0, 0.0)


def test_windowed_glr_is_signed_by_the_run_that_wins() -> None:
    statistic, m, total = windowed_glr([1.0, -4.0, -4.0])
    assert (m, total) == (2, -8.0) and statistic == pytest.approx(8.0 / np.sqrt(2.0))


def _noise_then(diffs: list[float], n: int = 60, seed: int = 5) -> np.ndarray:
    """A series whose first n differences are unit white noise, then the given differences."""
    d = np.concatenate([np.random.default_rng(seed).standard_normal(n), diffs])
    return np.concatenate([[0.0], np.cumsum(d)])


def test_online_fires_on_a_shift_spread_over_several_points() -> None:
    # Five differences of +5 sd each: no single one passes h = 9, their run does (5 sqrt(4) = 10).
    y = _noise_then([5.0] * 5 + [0.0] * 5)
    result = online_shift(y)
    assert result.alarm and result.direction == "up"
    assert result.change_index is not None and abs(result.change_index - 61) <= 1
    assert result.alarm_index is not None and 61 <= result.alarm_index <= 64


def test_min_run_two_asks_a_lone_jump_to_be_sqrt2_larger() -> None:
    # 11 sd alone passes h = 9; paired with a neighbour of 0 it is 11 / sqrt(2) = 7.8.
    y = _noise_then([0.0, 11.0] + [0.0] * 5)
    assert online_shift(y).alarm
    assert not online_shift(y, min_run=2).alarm


def test_min_run_two_fires_on_a_jump_that_holds_and_dates_it_at_the_jump() -> None:
    result = online_shift(_noise_then([20.0] + [0.0] * 5), min_run=2)
    assert (result.alarm_index, result.change_index) == (61, 61)


def test_the_running_scale_floor_keeps_a_quiet_stretch_from_firing() -> None:
    # Differences of +-1 (scale 1.48), then 40 of +-0.05: the trailing MAD falls to 0.074 and
    # an ordinary difference of 2 would be 27 sd; the floor keeps the scale near 0.85 x its
    # running average.
    loud = [1.0, -1.0] * 30
    quiet = [0.05, -0.05] * 20
    d = np.array([*loud, *quiet, 2.0, 0.0])
    y = np.concatenate([[0.0], np.cumsum(d)])
    assert online_shift(y, floor=0.0).alarm
    assert not online_shift(y).alarm


def test_track_increment_one_point_at_a_time_matches_the_series_detector() -> None:
    y = _noise_then([4.0] * 6, seed=9)
    track, first_alarm = IncrementTrack(), None
    for i, value in enumerate(y):
        track, reading = track_increment(track, float(value))
        if reading is not None and reading.statistic > 9.0 and first_alarm is None:
            first_alarm = (i, i - reading.span + 1, reading.direction)
    result = online_shift(y)
    assert first_alarm == (result.alarm_index, result.change_index, result.direction)
    assert len(track.past) == 30 and len(track.z) == 10 and track.last == y[-1]


def test_a_restarted_track_keeps_only_its_running_scale() -> None:
    track = IncrementTrack()
    for value in _noise_then([], n=40):
        track, _ = track_increment(track, float(value))
    assert track.scale is not None
    assert track.restarted() == IncrementTrack(scale=track.scale)
