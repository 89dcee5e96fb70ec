"""Alert test fixtures: a real HTTP webhook receiver on loopback, and apps with the alerts
extension on a fresh PostgreSQL database, with fast delivery and sweep timings."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from alerttest import AUTH, Receiver, handler, make_alerts_app


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(box))
    rec = Receiver(server)
    box.append(rec)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture()
def alerts_app(fresh_postgres_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    app = make_alerts_app(fresh_postgres_url, tmp_path)
    yield app
    app.state.engine.dispose()


@pytest.fixture()
def client(alerts_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(alerts_app, headers=AUTH) as c:
        yield c
