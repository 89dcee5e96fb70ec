"""The metrics buffer: `run.log` values gathered on the training thread, posted in batches.

Values logged for one step are merged (a name logged twice keeps its latest value); the step
closes when a value for another step arrives. Closed steps wait in a list until the run
takes them all as one batch (`POST /metrics:batch`): when the buffer is full (points or
values), when its oldest value has waited `interval_s`, before a checkpoint, at flush and
at finish. Every operation on the training thread is O(1) per value: no copy, no JSON.
Not thread-safe: the run's lock guards it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sedmon_core.schemas import MAX_METRIC_POINTS

MAX_VALUES = 100_000
"""Values in one batch at most (a few MB of JSON, far below the server's body limit)."""


class MetricsBuffer:
    """Points `{"step": s, "values": {name: value}}` not yet handed to the sender."""

    def __init__(
        self, max_points: int = 1000, interval_s: float = 5.0, max_values: int = MAX_VALUES
    ) -> None:
        self.max_points = max(1, min(int(max_points), MAX_METRIC_POINTS))
        self.interval_s = float(interval_s)
        self.max_values = max(1, int(max_values))
        self.since: float | None = None
        """Monotonic time of the oldest value in the buffer (None when empty)."""
        self._points: list[dict[str, Any]] = []
        self._open_step: int | None = None
        self._open: dict[str, float] = {}
        self._values = 0

    def add(self, step: int, values: Mapping[str, float]) -> bool:
        """Merge values into `step`'s point; True when the buffer is full (take it now)."""
        if self._open_step is not None and step != self._open_step:
            self._close()
        if self.since is None:
            self.since = time.monotonic()
        self._open_step = step
        before = len(self._open)
        self._open.update(values)
        self._values += len(self._open) - before
        return len(self._points) + 1 >= self.max_points or self._values >= self.max_values

    def due(self, now: float) -> bool:
        """Whether the oldest value has waited `interval_s` at monotonic time `now`."""
        since = self.since
        return since is not None and now - since >= self.interval_s

    def take_step(self, step: int) -> dict[str, float]:
        """The values of `step` when it is the open (latest) step, removed; else {}."""
        if self._open_step != step:
            return {}
        values, self._open, self._open_step = self._open, {}, None
        self._values -= len(values)
        if not self._points:
            self.since = None
        return values

    def take(self) -> list[dict[str, Any]]:
        """Every point, oldest step first as logged, and an empty buffer."""
        self._close()
        points, self._points = self._points, []
        self._values = 0
        self.since = None
        return points

    def _close(self) -> None:
        if self._open and self._open_step is not None:
            self._points.append({"step": self._open_step, "values": self._open})
        self._open, self._open_step = {}, None
