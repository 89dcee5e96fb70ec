"""The `sedmon-server` command line: migrate and tokens (serve is exercised over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sedmon_server.app import create_app
from sedmon_server.cli import build_parser, main
from sedmon_server.settings import Settings


def test_serve_accepts_the_documented_flags() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--database-url",
            "sqlite:///x.db",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--workers",
            "3",
        ]
    )
    assert (args.database_url, args.host, args.port, args.workers) == (
        "sqlite:///x.db",
        "0.0.0.0",
        9000,
        3,
    )


def test_migrate_then_token_create_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.delenv("SEDMON_DATABASE_URL", raising=False)
    assert main(["migrate", "--database-url", url]) == 0
    assert "revision" in capsys.readouterr().out
    assert (
        main(["token", "--database-url", url, "create", "--project", "lm", "--scope", "read"]) == 0
    )
    tok = capsys.readouterr().out.strip()
    assert tok.startswith("sedmon_")
    # No token cache: a revocation by another process counts at the next request.
    app = create_app(
        Settings(database_url=url, home=tmp_path, token_cache_seconds=0), extensions=()
    )
    reader = TestClient(app, headers={"Authorization": f"Bearer {tok}"})
    assert reader.get("/api/v1/runs").status_code == 200
    assert main(["token", "--database-url", url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "\tlm\tread\tactive" in listing and tok not in listing
    token_id = int(listing.split("\t")[0])
    assert main(["token", "--database-url", url, "revoke", str(token_id)]) == 0
    assert reader.get("/api/v1/runs").status_code == 401
    assert main(["token", "--database-url", url, "revoke", str(token_id)]) == 1
    app.state.engine.dispose()


def test_token_create_needs_a_project_below_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEDMON_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["token", "--database-url", url, "create", "--scope", "ingest"]) == 2
