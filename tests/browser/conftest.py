"""A real server on 127.0.0.1 (uvicorn in a thread, PostgreSQL) and headless Debian Chromium."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sedmon_server.app import create_app
from sedmon_server.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))

from browsertest import ADMIN, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LiveServer


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(app: FastAPI) -> Iterator[LiveServer]:
    """Runs the app under uvicorn on a free 127.0.0.1 port in a thread, for the block."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            yield LiveServer(base_url=base, api=api)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.engine.dispose()


def _settings(postgres_url: str, home: Path) -> Settings:
    return Settings(database_url=postgres_url, home=home, admin_token=ADMIN)


@pytest.fixture(scope="session")
def live_server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The server as shipped (every extension: alerts, dashboard)."""
    with serving(create_app(_settings(postgres_url, tmp_path_factory.mktemp("home")))) as live:
        yield live


@pytest.fixture(scope="session")
def bare_server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, live_server: LiveServer
) -> Iterator[LiveServer]:
    """The same database served without the alerts extension (no /alerts route)."""
    app = create_app(
        _settings(postgres_url, tmp_path_factory.mktemp("bare")),
        extensions=("sedmon_server.dashboard",),
    )
    with serving(app) as live:
        yield live


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
