"""Migration 0002 creates exactly the alert tables of sedmon_server.alerts.tables."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sedmon_server import migrations
from sedmon_server.alerts import tables as alert_tables
from sedmon_server.database import make_engine
from sedmon_server.tables import metadata

ALERT_TABLES = {
    "alerts",
    "alert_state",
    "webhooks",
    "alert_outbox",
    "webhook_deliveries",
    "alert_silences",
    "alert_settings",
}

pytestmark = pytest.mark.postgres


def test_alert_tables_are_the_module_tables() -> None:
    assert {t for t in metadata.tables if t in ALERT_TABLES} == ALERT_TABLES
    assert alert_tables.alerts.metadata is metadata


def test_head_schema_equals_the_tables_and_downgrade_removes_them(fresh_postgres_url: str) -> None:
    engine = make_engine(fresh_postgres_url)
    try:
        migrations.upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
        assert diff == []
        migrations.downgrade(engine, "0001")
        assert not ALERT_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
