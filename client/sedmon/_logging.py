"""The "sedmon" logger and a rate limit, so a failing server costs one line, not thousands."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("sedmon")

RATE_LIMIT_S = 30.0
"""At most one line per kind of problem in this many seconds (the rest are counted)."""


class RateLimitedLog:
    """Log a message at most once per `interval` seconds per key; report what was dropped."""

    def __init__(self, interval: float = RATE_LIMIT_S) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._dropped[key] = self._dropped.get(key, 0) + 1
                return
            dropped = self._dropped.pop(key, 0)
            self._last[key] = now
        if dropped:
            msg = f"{msg} ({dropped} similar messages suppressed)"
        logger.log(level, msg, *args)


problem = RateLimitedLog()
"""The shared rate-limited logger for things that go wrong inside the client."""
