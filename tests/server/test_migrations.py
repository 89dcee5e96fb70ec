"""Migrations: upgrade an empty database to the tables' schema, downgrade to nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sedmon_server import migrations, tables
from sedmon_server.database import make_engine

CORE_TABLES = {"tokens", "runs", "checkpoints", "metrics", "group_state", "spectra", "run_events"}


def _schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, tables.metadata))
    finally:
        engine.dispose()


ALERT_TABLES = {
    "alert_settings",
    "alert_silences",
    "alerts",
    "alert_state",
    "alert_outbox",
    "webhooks",
    "webhook_deliveries",
}
HEAD = "0002"


def _upgrade_down_up(url: str) -> None:
    """Empty -> head, then every downgrade step in turn back to nothing, then head again."""
    engine = make_engine(url)
    try:
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == HEAD
        assert set(inspect(engine).get_table_names()) >= CORE_TABLES | ALERT_TABLES
        migrations.downgrade(engine, "0001")
        assert migrations.current_revision(engine) == "0001"
        names = set(inspect(engine).get_table_names())
        assert names >= CORE_TABLES and not names & ALERT_TABLES
        migrations.downgrade(engine, "base")
        assert migrations.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == HEAD
        assert set(inspect(engine).get_table_names()) >= CORE_TABLES | ALERT_TABLES
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_upgrades_from_empty_and_downgrades_to_nothing(fresh_postgres_url: str) -> None:
    _upgrade_down_up(fresh_postgres_url)


@pytest.mark.postgres
def test_migrated_postgres_schema_equals_the_tables_module(fresh_postgres_url: str) -> None:
    import sedmon_server.alerts.tables  # noqa: F401  (registers the alert tables on metadata)

    engine = make_engine(fresh_postgres_url)
    migrations.upgrade(engine)
    engine.dispose()
    diff = [
        d
        for d in _schema_diff(fresh_postgres_url)
        if not (isinstance(d, tuple) and d[0] == "remove_table")
    ]
    assert diff == []


def test_sqlite_upgrades_from_empty_and_downgrades_to_nothing(tmp_path: Path) -> None:
    _upgrade_down_up(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_processes_starting_together_migrate_once(fresh_postgres_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(fresh_postgres_url)
        try:
            migrations.upgrade(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(fresh_postgres_url)
    assert migrations.current_revision(engine) is not None
    engine.dispose()


def _migrate_in_processes(url: str, n: int = 6) -> None:
    """`sedmon-server migrate` in n processes started together: all succeed, at head."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sedmon_server.cli", "migrate", "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in results]
    assert all(out.strip() == f"database at revision {HEAD}" for out, _ in results)
    engine = make_engine(url)
    try:
        assert migrations.current_revision(engine) == HEAD
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_server_processes_migrating_postgres_together_do_not_race(fresh_postgres_url: str) -> None:
    _migrate_in_processes(fresh_postgres_url)


def test_server_processes_migrating_sqlite_together_do_not_race(tmp_path: Path) -> None:
    _migrate_in_processes(f"sqlite:///{tmp_path / 'race.db'}")


def test_migrations_folder_is_found() -> None:
    assert (migrations.migrations_dir() / "versions" / "0001_initial.py").is_file()


def test_the_server_wheel_ships_the_migrations_and_migrates_from_them(tmp_path: Path) -> None:
    """`sedmon-server migrate` from an install: the wheel carries migrations/ inside the
    package, and the CLI run from the unpacked wheel (no repository beside it) upgrades a
    database with them."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(root / "server"),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("sedmon_server-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for f in ("env.py", "versions/0001_initial.py", "versions/0002_alerts.py"):
        assert f"sedmon_server/migrations/{f}" in names
    db = tmp_path / "from-wheel.db"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = (
        "import sys; from sedmon_server import migrations, cli; "
        "print(migrations.migrations_dir()); sys.argv = ['sedmon-server', 'migrate', "
        f"'--database-url', 'sqlite:///{db}']; cli.main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.splitlines()[0] == str(tmp_path / "site" / "sedmon_server" / "migrations")
    engine = make_engine(f"sqlite:///{db}")
    try:
        assert migrations.current_revision(engine) == HEAD
    finally:
        engine.dispose()
