"""No alert storm: 1,000 checkpoints of a steady noisy run give at most one alert. Steady
runs of several seeds and noise levels, the series rules evaluated exactly as ingest
evaluates them (state, lifecycle, one event one alert), without a server
(test_rules_on_ingest.py runs one such run through the real server; bench/alerts.py counts
50 seeds per noise level, docs/alerts.md)."""

from __future__ import annotations

import pytest
from replay import alerts_fired
from synthetic import trajectory

SEEDS = range(24)


@pytest.mark.parametrize("noise", [0.7, 1.0, 1.4])
def test_every_steady_noisy_run_of_1000_checkpoints_gives_at_most_one_alert(noise: float) -> None:
    per_run = {}
    for seed in SEEDS:
        traj = trajectory("steady", n=999, seed=seed, noise=noise)
        assert traj.positions.shape[0] == 1000
        per_run[seed] = alerts_fired(traj.positions)
    storms = {
        seed: fired for seed, fired in per_run.items() if sum(len(at) for at in fired.values()) > 1
    }
    assert storms == {}, storms
