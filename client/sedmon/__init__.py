"""sedmon: the client a training job imports."""

__version__ = "0.1.0"
