"""Alerts: alerts, alert_state, webhooks, alert_outbox, webhook_deliveries, silences, settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("window", sa.Integer(), nullable=True),
        sa.Column("group_name", sa.String(100), nullable=True),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("fired_at", TS, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_step", sa.BigInteger(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("last_notified_at", TS, nullable=True),
        sa.Column("notifications", sa.Integer(), nullable=False),
    )
    op.create_index("ix_alerts_run", "alerts", ["run_id", "id"])
    op.create_index("ix_alerts_fingerprint_state", "alerts", ["fingerprint", "state"])
    op.create_table(
        "alert_state",
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rule", sa.String(32), primary_key=True),
        sa.Column("window", sa.Integer(), primary_key=True),
        sa.Column("group_name", sa.String(100), primary_key=True),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column(
            "alert_id", BigId, sa.ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_alert_state_due", "alert_state", ["rule", "due_at"])
    op.create_table(
        "webhooks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("secret", sa.String(512), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_webhooks_project", "webhooks", ["project"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "webhook_id", BigId, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("notices", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.UniqueConstraint("message_id", name="uq_alert_outbox_message_id"),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_alert_outbox_webhook", "alert_outbox", ["webhook_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "outbox_id", BigId, sa.ForeignKey("alert_outbox.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempted_at", TS, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_outbox", "webhook_deliveries", ["outbox_id", "id"])
    op.create_table(
        "alert_silences",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
        sa.Column("rule", sa.String(32), nullable=True),
        sa.Column("until", TS, nullable=False),
        sa.Column("comment", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_alert_silences_project", "alert_silences", ["project", "until"])
    op.create_table(
        "alert_settings",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_settings")
    op.drop_index("ix_alert_silences_project", table_name="alert_silences")
    op.drop_table("alert_silences")
    op.drop_index("ix_webhook_deliveries_outbox", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_alert_outbox_webhook", table_name="alert_outbox")
    op.drop_index("ix_alert_outbox_due", table_name="alert_outbox")
    op.drop_table("alert_outbox")
    op.drop_index("ix_webhooks_project", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("ix_alert_state_due", table_name="alert_state")
    op.drop_table("alert_state")
    op.drop_index("ix_alerts_fingerprint_state", table_name="alerts")
    op.drop_index("ix_alerts_run", table_name="alerts")
    op.drop_table("alerts")
