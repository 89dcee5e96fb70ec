"""The alert tables, on the server's `metadata` (migrations/versions/0002_alerts.py creates them).

- alerts: one row per episode of a fingerprint (project, run, rule, window, group):
  pending -> firing -> resolved; a pending one that never fires is deleted.
- alert_state: each fingerprint's rule state (JSON, bounded: at most ~40 values per
  series) and its open alert; rule "stalled" rows also carry `due_at`, when the run
  becomes stalled unless a checkpoint arrives, which the sweep queries.
- webhooks: where messages go; `secret` is write-only in the API.
- alert_outbox: one message for one webhook, written in the transaction that raised its
  alerts; `message_id` is the webhook-id, stable across retries; `body` the exact bytes.
- webhook_deliveries: one row per delivery attempt of an outbox message.
- alert_silences: mute a rule (or every rule) for a run (or a whole project) until a time.
- alert_settings: a project's default alert settings (JSON patch over the built-ins).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from sedmon_server.tables import BigId, metadata

TS = DateTime(timezone=True)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("window", Integer, nullable=True),
    Column("group_name", String(100), nullable=True),
    Column("fingerprint", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("step", BigInteger, nullable=True),
    Column("started_at", TS, nullable=False),
    Column("fired_at", TS, nullable=True),
    Column("resolved_at", TS, nullable=True),
    Column("resolved_step", BigInteger, nullable=True),
    Column("summary", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("acknowledged_at", TS, nullable=True),
    Column("last_notified_at", TS, nullable=True),
    Column("notifications", Integer, nullable=False, default=0),
    Index("ix_alerts_run", "run_id", "id"),
    Index("ix_alerts_fingerprint_state", "fingerprint", "state"),
)

alert_state = Table(
    "alert_state",
    metadata,
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("rule", String(32), primary_key=True),
    Column("window", Integer, primary_key=True),
    Column("group_name", String(100), primary_key=True),
    Column("fingerprint", String(32), nullable=False),
    Column("state", JSON, nullable=False),
    Column("alert_id", BigId, ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
    Column("due_at", TS, nullable=True),
    Column("updated_at", TS, nullable=False),
    Index("ix_alert_state_due", "rule", "due_at"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("format", String(16), nullable=False),
    Column("secret", String(512), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(200), nullable=True),
    Column("created_at", TS, nullable=False),
    Index("ix_webhooks_project", "project"),
)

alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", BigId, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("project", String(64), nullable=False),
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("message_id", String(64), nullable=False),
    Column("notices", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("delivered_at", TS, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    UniqueConstraint("message_id", name="uq_alert_outbox_message_id"),
    Index("ix_alert_outbox_due", "status", "next_attempt_at"),
    Index("ix_alert_outbox_webhook", "webhook_id", "id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("outbox_id", BigId, ForeignKey("alert_outbox.id", ondelete="CASCADE"), nullable=False),
    Column("attempted_at", TS, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_deliveries_outbox", "outbox_id", "id"),
)

alert_silences = Table(
    "alert_silences",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("run_id", BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
    Column("rule", String(32), nullable=True),
    Column("until", TS, nullable=False),
    Column("comment", String(500), nullable=True),
    Column("created_at", TS, nullable=False),
    Index("ix_alert_silences_project", "project", "until"),
)

alert_settings = Table(
    "alert_settings",
    metadata,
    Column("project", String(64), primary_key=True),
    Column("settings", JSON, nullable=False),
    Column("updated_at", TS, nullable=False),
)
