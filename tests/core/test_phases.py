import numpy as np
import pytest

from sedmon_core.phases import current_phase, segment_phases, trailing_mean

COLLAPSE = 40


def _rise_plateau_collapse(seed: int = 0) -> np.ndarray:
    """Rise 1.0 -> 1.75 over 20 windows, plateau to index 39, sharp collapse at 40."""
    rng = np.random.default_rng(seed)
    rise = np.linspace(1.0, 1.75, 20)
    plateau = np.full(COLLAPSE - 20, 1.75)
    collapse = np.linspace(1.1, 1.0, 20)
    return np.concatenate([rise, plateau, collapse]) + 0.01 * rng.standard_normal(60)


@pytest.mark.parametrize("method", ["peak", "derivative", "threshold"])
def test_collapse_is_found_within_one_index_of_the_planted_point(method: str) -> None:
    phases = segment_phases(_rise_plateau_collapse(), method=method)
    assert phases.collapse_index is not None
    assert abs(phases.collapse_index - COLLAPSE) <= 1


@pytest.mark.parametrize("method", ["peak", "derivative", "threshold"])
def test_labels_run_rise_then_plateau_then_collapse(method: str) -> None:
    labels = segment_phases(_rise_plateau_collapse(), method=method).labels
    assert labels[0] == "rise"
    assert labels[30] == "plateau"
    assert labels[-1] == "collapse"
    order = [lab for i, lab in enumerate(labels) if i == 0 or labels[i - 1] != lab]
    assert order == ["rise", "plateau", "collapse"]


def test_peak_plateau_is_the_region_above_85_percent_of_the_peak() -> None:
    y = np.array([1.0, 1.2, 1.8, 2.0, 1.9, 1.0, 1.0])
    phases = segment_phases(y, method="peak")
    assert (phases.plateau_start, phases.plateau_end, phases.collapse_index) == (2, 4, 5)
    assert phases.boundaries == (2, 5)


def test_threshold_collapse_is_the_first_point_below_tau_after_the_peak() -> None:
    y = np.array([1.0, 1.5, 1.6, 1.4, 1.25, 1.19, 1.3])
    assert segment_phases(y, method="threshold").collapse_index == 5


def test_threshold_finds_no_collapse_when_the_peak_never_reaches_tau() -> None:
    y = np.array([1.10, 1.15, 1.18, 1.12, 1.05, 1.02])
    assert segment_phases(y, method="threshold").collapse_index is None


def test_flat_series_is_all_plateau_without_collapse() -> None:
    for method in ("peak", "derivative", "threshold"):
        phases = segment_phases(np.full(12, 1.4), method=method)
        assert phases.labels == ("plateau",) * 12
        assert phases.collapse_index is None


def test_empty_series_gives_empty_labels() -> None:
    phases = segment_phases(np.array([]), method="derivative")
    assert phases.labels == ()
    assert phases.peak_index is None


@pytest.mark.parametrize("n", [1, 2, 3])
def test_short_series_are_labelled_without_error(n: int) -> None:
    for method in ("peak", "derivative", "threshold"):
        assert len(segment_phases(np.linspace(1.0, 1.5, n), method=method).labels) == n


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown phase method"):
        segment_phases(np.ones(5), method="magic")


def test_trailing_mean_averages_the_point_and_the_previous_ones() -> None:
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])


def test_current_phase_of_a_climbing_series_is_rise() -> None:
    assert current_phase(np.linspace(1.0, 1.6, 15)) == "rise"


def test_current_phase_after_the_collapse_is_collapse() -> None:
    assert current_phase(_rise_plateau_collapse()[:45]) == "collapse"


def test_current_phase_on_the_plateau_is_plateau() -> None:
    assert current_phase(_rise_plateau_collapse()[:35]) == "plateau"


def test_current_phase_of_an_empty_series_is_none() -> None:
    assert current_phase(np.array([])) is None


@pytest.mark.parametrize("method", ["peak", "derivative", "threshold"])
def test_current_phase_is_the_last_label_of_the_segmentation(method: str) -> None:
    for seed in range(3):
        y = _rise_plateau_collapse(seed)
        for n in range(1, y.size + 1):
            last = segment_phases(y[:n], method=method).labels[-1]
            climbing = n > 1 and float(np.gradient(trailing_mean(y[:n], 5))[-1]) > 0.01
            expected = "rise" if last == "plateau" and climbing else last
            assert current_phase(y[:n], method=method) == expected, (seed, n)
