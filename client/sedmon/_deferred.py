"""Values that an item carries before they are ready: a sketch still on its way from the GPU.

The training thread puts a `Deferred` in an item's body and goes on; the background thread
that first serialises the item (`sedmon._spool.to_json`, to post it or to spool it) calls
`result()`, which waits for the value there. `result()` is thread-safe and computes once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any


class Deferred(ABC):
    """A value computed later, on first `result()`, once, whatever the thread."""

    nbytes: int = 0
    """About how much memory the value takes (for the client's memory bounds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None

    def result(self) -> Any:
        """The value; the first call computes it (and may wait), later ones return it."""
        with self._lock:
            if not self._done:
                self._value = self._compute()
                self._done = True
            return self._value

    @abstractmethod
    def _compute(self) -> Any:
        """Wait for and return the value (called once, under the lock)."""


class Ready(Deferred):
    """A value that is ready already."""

    def __init__(self, value: Any, nbytes: int = 0) -> None:
        super().__init__()
        self._ready = value
        self.nbytes = nbytes

    def _compute(self) -> Any:
        return self._ready
