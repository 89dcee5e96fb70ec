"""The server's schema as SQLAlchemy Core tables (migrations/versions/0001 creates them).

Arrays are stored as raw little-endian float64 bytes (`numpy.ndarray.tobytes`), never as
JSON: a 10,000-checkpoint spectrum reads back in one pass of `numpy.frombuffer`.

- tokens: API tokens, sha256-hashed; project NULL means every project (admin only).
- runs: one training run; `group_dims` holds each group's sketch length (learned at the
  first checkpoint for `identity`); `edge_series` the recent gap ratios of group "all"
  per window (float64, windows x <= PHASE_HISTORY) that the live phase is computed from.
- checkpoints: one accepted checkpoint; `digest` makes a re-sent one idempotent; `sketch`
  the positions of all groups concatenated in group order; `dots` per group the new
  delta's dot products with the previous `lags` deltas, oldest first, then its squared
  norm (groups x (lags + 1)): the band of the run's dot matrix, for split-half analyses.
- metrics: one value per (run, name, step), at checkpoint steps or in between.
- group_state: the O(W_max k) state ingest needs per (run, group): the last position,
  the last W_max - 1 deltas (oldest first) and the Gram of the last W_max deltas.
- spectra: every observable of each (run, group, window) at each checkpoint step.
- run_events: things that happened to a run outside accepted data (a rejected
  non-finite checkpoint); alert rules read them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

BigId = BigInteger().with_variant(Integer, "sqlite")

tokens = Table(
    "tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("project", String(64), nullable=True),
    Column("scope", String(16), nullable=False),
    Column("label", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("sketch_method", String(16), nullable=False),
    Column("sketch_dim", Integer, nullable=False),
    Column("sketch_seed", BigInteger, nullable=False),
    Column("groups", JSON, nullable=False),
    Column("windows", JSON, nullable=False),
    Column("rank_rule", String(16), nullable=False),
    Column("config", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("last_checkpoint_at", DateTime(timezone=True), nullable=True),
    Column("num_checkpoints", Integer, nullable=False),
    Column("group_dims", JSON, nullable=True),
    Column("edge_series", LargeBinary, nullable=True),
    UniqueConstraint("project", "name", name="uq_runs_project_name"),
    Index("ix_runs_project_created", "project", "created_at"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("sketch", LargeBinary, nullable=False),
    Column("lags", Integer, nullable=False),
    Column("dots", LargeBinary, nullable=True),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("value", Double, nullable=False),
)

group_state = Table(
    "group_state",
    metadata,
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("group_name", String(100), primary_key=True),
    Column("position", LargeBinary, nullable=False),
    Column("deltas", LargeBinary, nullable=False),
    Column("gram", LargeBinary, nullable=False),
    Column("count", Integer, nullable=False),
)

spectra = Table(
    "spectra",
    metadata,
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("group_name", String(100), primary_key=True),
    Column("window", Integer, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("sigma", LargeBinary, nullable=False),
    Column("ratios", LargeBinary, nullable=False),
    Column("signal_rank", Integer, nullable=False),
    Column("gap_ratio", Double, nullable=False),
    Column("additive_gap", Double, nullable=False),
    Column("edge_strength", Double, nullable=False),
    Column("total_variance", Double, nullable=False),
    Column("effective_rank", Double, nullable=False),
    Column("k95", Integer, nullable=False),
    Column("pc1_share", Double, nullable=False),
    Column("drift_speed", Double, nullable=False),
    Column("phase", String(16), nullable=True),
)

run_events = Table(
    "run_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("step", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_run_events_run", "run_id", "id"),
)
