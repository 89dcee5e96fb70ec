"""The client's exceptions: only wrong arguments raise into user code."""

from __future__ import annotations


class SedmonError(Exception):
    """Base class of every error the sedmon client raises."""


class ConfigError(SedmonError, ValueError):
    """A wrong argument to `sedmon.init` (or the CLI); the message says what to change."""


class CheckpointFolderError(SedmonError):
    """A checkpoint folder that cannot be analysed (a key or shape changed, nothing to read)."""
