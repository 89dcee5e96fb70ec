"""Helpers of the alert tests: a loopback webhook receiver, apps, runs, webhooks, posting
trajectories, reading alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sedmon_server.alerts.runtime import AlertsConfig
from sedmon_server.app import create_app
from sedmon_server.settings import Settings

ADMIN = "alerts-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
BASE_URL = "http://sedmon.example"
FAST = AlertsConfig(
    poll_s=0.05, sweep_interval_s=0.1, base_s=0.05, cap_s=0.4, max_attempts=40, lease_s=5.0
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: records every request; `respond` picks each answer's status."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    respond: Callable[[Received], tuple[int, dict[str, str]]] = lambda r: (200, {})
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def delivered(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.delivered()):
                return
            time.sleep(0.02)
        raise AssertionError(f"receiver: condition not met in {timeout} s; got {self.delivered()}")


def handler(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            rec = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            receiver = receiver_box[0]
            status, headers = receiver.respond(rec)
            with receiver.lock:
                receiver.requests.append(rec)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def make_alerts_app(url: str, home: Path, config: AlertsConfig = FAST) -> FastAPI:
    app = create_app(
        Settings(database_url=url, home=home, admin_token=ADMIN, public_base_url=BASE_URL),
        extensions=("sedmon_server.alerts",),
    )
    app.state.alerts.config = config
    return app


def new_run(client: TestClient, name: str, project: str = "lab", **spec: Any) -> int:
    body: dict[str, Any] = {
        "project": project,
        "name": name,
        "sketch": {"method": "identity", "dim": 1, "seed": 0},
        "windows": [10],
    }
    body.update(spec)
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def add_webhook(client: TestClient, url: str, project: str = "lab", **extra: Any) -> int:
    r = client.post("/api/v1/webhooks", json={"project": project, "url": url, **extra})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def post_positions(
    client: TestClient,
    run_id: int,
    positions: np.ndarray,
    start: int = 0,
    metrics: Callable[[int], dict[str, float]] | None = None,
    batch: int = 1,
) -> None:
    """POST positions[start:] as checkpoints at steps 100 * index (one by one, or in batches)."""
    items = [
        {
            "step": 100 * i,
            "sketch": {"all": positions[i].tolist()},
            "metrics": metrics(i) if metrics else {},
        }
        for i in range(start, positions.shape[0])
    ]
    for j in range(0, len(items), batch):
        chunk = items[j : j + batch]
        if batch == 1:
            r = client.post(f"/api/v1/runs/{run_id}/checkpoints", json=chunk[0])
        else:
            r = client.post(f"/api/v1/runs/{run_id}/checkpoints:batch", json={"checkpoints": chunk})
        assert r.status_code in (200, 201), r.text


def alerts_of(client: TestClient, run_id: int, rule: str | None = None) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/runs/{run_id}/alerts", params={"rule": rule} if rule else {})
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["alerts"]
    return out
