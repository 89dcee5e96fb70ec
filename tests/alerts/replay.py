"""Replay a trajectory through the series rules exactly as ingest evaluates them (state kept
as JSON between checkpoints, the same lifecycle), without a server: for tests that need many
runs, and to check that the server does the same."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sedmon_core.spectrum import spectrum_series
from sedmon_server.alerts import rules

W = 10


def alerts_fired(positions: np.ndarray) -> dict[str, list[int]]:
    """Checkpoint indices at which each series rule fires (opens firing, pending -> firing,
    reopens), window W = 10, positions (n, dim) posted one by one from index 0."""
    deltas = np.diff(positions, axis=0)
    settings = rules.AlertSettings()
    states: dict[str, str] = {rule: "{}" for rule in rules.SERIES_RULES}
    open_state: dict[str, str | None] = {rule: None for rule in rules.SERIES_RULES}
    fired: dict[str, list[int]] = {rule: [] for rule in rules.SERIES_RULES}
    for i, spectrum in enumerate(spectrum_series(deltas @ deltas.T, W)):
        obs = rules.Observation.of(i + W, spectrum)
        for rule in rules.SERIES_RULES:
            state: dict[str, Any] = json.loads(states[rule])  # stored as JSON between ingests
            state, outcome = rules.evaluate(rule, settings, state, obs)
            states[rule] = json.dumps(state)
            action = rules.lifecycle(open_state[rule], outcome)
            if action in ("open_firing", "fire", "reopen"):
                fired[rule].append(i + W)
            if action == "open_pending":
                open_state[rule] = "pending"
            elif action in ("open_firing", "fire", "reopen"):
                open_state[rule] = "firing"
            elif action in ("resolve", "drop"):
                open_state[rule] = None
    return fired
