"""Replay a trajectory through the series rules exactly as ingest evaluates them (state kept
as JSON between checkpoints, the same lifecycle, one event one alert), without a server: for
tests that need many runs, and to check that the server does the same."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sedmon_core.spectrum import spectrum_series
from sedmon_server.alerts import rules

W = 10


def alerts_fired(
    positions: np.ndarray, settings: rules.AlertSettings | None = None
) -> dict[str, list[int]]:
    """Checkpoint indices at which each series rule raises an alert (opens firing, pending ->
    firing, reopens; what `rules.fold_event` folds into an event's alert is not raised),
    window W = 10, positions (n, dim) posted one by one from index 0."""
    deltas = np.diff(positions, axis=0)
    settings = settings or rules.AlertSettings()
    states: dict[str, str] = {rule: "{}" for rule in (*rules.SERIES_RULES, rules.EVENT_STATE)}
    open_state: dict[str, str | None] = {rule: None for rule in rules.SERIES_RULES}
    fired: dict[str, list[int]] = {rule: [] for rule in rules.SERIES_RULES}
    for i, spectrum in enumerate(spectrum_series(deltas @ deltas.T, W)):
        obs = rules.Observation.of(i + W, spectrum)
        outcomes = {}
        for rule in rules.SERIES_RULES:
            state: dict[str, Any] = json.loads(states[rule])  # stored as JSON between ingests
            state, outcomes[rule] = rules.evaluate(rule, settings, state, obs)
            states[rule] = json.dumps(state)
        event, outcomes, _ = rules.fold_event(
            settings, W, json.loads(states[rules.EVENT_STATE]), outcomes, open_state, obs.step
        )
        states[rules.EVENT_STATE] = json.dumps(event)
        for rule in rules.SERIES_RULES:
            if rules.advance_open_state(open_state, rule, outcomes[rule]):
                fired[rule].append(i + W)
    return fired
