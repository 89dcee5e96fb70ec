"""Server configuration: one pydantic-settings class, read from SEDMON_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""32 MiB: an identity sketch at the 1,048,576-float cap is about 20 MB of JSON."""


class Settings(BaseSettings):
    """Every knob of the server. Environment: SEDMON_DATABASE_URL, SEDMON_HOME, ...

    database_url: SQLAlchemy URL; empty means the embedded SQLite file
    $SEDMON_HOME/sedmon.db. admin_token: bootstrap admin token for every project (empty:
    none). max_body_bytes: larger request bodies get 413. public_base_url: how links to the
    server are written (alerts, dashboard). No CORS: the dashboard is served by the server.
    """

    model_config = SettingsConfigDict(env_prefix="SEDMON_", extra="ignore")

    database_url: str = ""
    home: Path = Path("./.sedmon")
    admin_token: str = ""
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    public_base_url: str = "http://127.0.0.1:8000"
    pool_size: int = Field(default=8, ge=1)
    """Pooled database connections per process. Ingest holds one while PostgreSQL flushes its
    commit, so fewer leave the cores idle: on two cores 8 ingested 5-21 % more checkpoints/s
    than 5 and 12 about as many as 8 (bench/ingest.py, docs/benchmarks.md)."""
    pool_max_overflow: int = Field(default=10, ge=0)
    ingest_concurrency: int = Field(default=0, ge=0)
    """Checkpoint posts a process works on at once (0: pool_size); the others wait their
    turn in the process. Past the pool size they would open and close overflow
    connections."""
    migrate_on_start: bool = True
    active_run_seconds: float = Field(default=3600.0, gt=0)
    """A run with no checkpoint for this long drops out of the per-run Prometheus gauges."""
    max_gauge_runs: int = Field(default=1000, ge=1)
    """Cap on the number of runs the per-run gauges report (the most recently active)."""
    token_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a process trusts a stored token it looked up (0: every request asks the
    database): the longest a token revoked elsewhere keeps working in this process."""

    def resolved_database_url(self) -> str:
        """The URL to connect to: the configured one, or the SQLite file under home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'sedmon.db').resolve()}"
