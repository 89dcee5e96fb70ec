"""Server test fixtures: one app on the session's PostgreSQL database, a client, its engine."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).parent))

from servertest import AUTH, make_app


@pytest.fixture(scope="session")
def pg_app(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = make_app(postgres_url, tmp_path_factory.mktemp("home"), max_body_bytes=1_000_000)
    yield app
    app.state.engine.dispose()


@pytest.fixture()
def client(pg_app: FastAPI) -> TestClient:
    return TestClient(pg_app, headers=AUTH)


@pytest.fixture()
def engine(pg_app: FastAPI) -> Engine:
    e: Engine = pg_app.state.engine
    return e
