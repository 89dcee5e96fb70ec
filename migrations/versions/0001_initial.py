"""Initial schema: tokens, runs, checkpoints, metrics, group_state, spectra, run_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_table(
        "runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sketch_method", sa.String(16), nullable=False),
        sa.Column("sketch_dim", sa.Integer(), nullable=False),
        sa.Column("sketch_seed", sa.BigInteger(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("windows", sa.JSON(), nullable=False),
        sa.Column("rank_rule", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("last_checkpoint_at", TS, nullable=True),
        sa.Column("num_checkpoints", sa.Integer(), nullable=False),
        sa.Column("group_dims", sa.JSON(), nullable=True),
        sa.Column("edge_series", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("project", "name", name="uq_runs_project_name"),
    )
    op.create_index("ix_runs_project_created", "runs", ["project", "created_at"])
    op.create_table(
        "checkpoints",
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.Column("lags", sa.Integer(), nullable=False),
        sa.Column("dots", sa.LargeBinary(), nullable=True),
    )
    op.create_table(
        "metrics",
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("value", sa.Double(), nullable=False),
    )
    op.create_table(
        "group_state",
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("position", sa.LargeBinary(), nullable=False),
        sa.Column("deltas", sa.LargeBinary(), nullable=False),
        sa.Column("gram", sa.LargeBinary(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "spectra",
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("window", sa.Integer(), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("sigma", sa.LargeBinary(), nullable=False),
        sa.Column("ratios", sa.LargeBinary(), nullable=False),
        sa.Column("signal_rank", sa.Integer(), nullable=False),
        sa.Column("gap_ratio", sa.Double(), nullable=False),
        sa.Column("additive_gap", sa.Double(), nullable=False),
        sa.Column("edge_strength", sa.Double(), nullable=False),
        sa.Column("total_variance", sa.Double(), nullable=False),
        sa.Column("effective_rank", sa.Double(), nullable=False),
        sa.Column("k95", sa.Integer(), nullable=False),
        sa.Column("pc1_share", sa.Double(), nullable=False),
        sa.Column("drift_speed", sa.Double(), nullable=False),
        sa.Column("phase", sa.String(16), nullable=True),
    )
    op.create_table(
        "run_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_run_events_run", "run_events", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_run_events_run", table_name="run_events")
    op.drop_table("run_events")
    op.drop_table("spectra")
    op.drop_table("group_state")
    op.drop_table("metrics")
    op.drop_table("checkpoints")
    op.drop_index("ix_runs_project_created", table_name="runs")
    op.drop_table("runs")
    op.drop_table("tokens")
