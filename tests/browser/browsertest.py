"""Helpers of the browser tests: the live server's admin client and synthetic runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ADMIN = "browser-test-admin-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class LiveServer:
    base_url: str
    api: httpx.Client  # admin-authenticated

    def token(self, project: str, scope: str = "read") -> str:
        r = self.api.post("/api/v1/tokens", json={"project": project, "scope": scope})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def create_run(self, project: str, name: str, **spec: Any) -> int:
        body: dict[str, Any] = {
            "project": project,
            "name": name,
            "sketch": {"method": "external", "dim": DIM, "seed": 0},
            "groups": list(GROUPS),
            "windows": [5, 10],
        }
        body.update(spec)
        r = self.api.post("/api/v1/runs", json=body)
        assert r.status_code in (200, 201), r.text
        return int(r.json()["id"])

    def post_checkpoints(self, run_id: int, trajectory: Trajectory, steps: range) -> None:
        for i in steps:
            r = self.api.post(
                f"/api/v1/runs/{run_id}/checkpoints",
                json={
                    "step": trajectory.step(i),
                    "sketch": trajectory.sketch(i),
                    "metrics": {"val_loss": trajectory.val_loss(i)},
                },
            )
            assert r.status_code == 201, r.text

    def post_non_finite(self, run_id: int, trajectory: Trajectory, i: int) -> int:
        """Posts checkpoint i with a NaN in its sketch (as Python's JSON writes it); the status."""
        sketch = {g: list(v) for g, v in trajectory.sketch(i).items()}
        sketch[GROUPS[0]][0] = float("nan")
        r = self.api.post(
            f"/api/v1/runs/{run_id}/checkpoints",
            content=json.dumps({"step": trajectory.step(i), "sketch": sketch, "metrics": {}}),
            headers={"Content-Type": "application/json"},
        )
        return r.status_code


DIM = 48
GROUPS = ("attn", "mlp")


@dataclass
class Trajectory:
    """Synthetic sketched positions: two drift directions over noise, the second one rising
    to a plateau and fading (so the gap ratio rises, holds and falls), and a val loss.
    With `shift_at`, the deltas from that checkpoint on drift 5x faster along the first
    direction (a distribution shift: the gap ratio and total variance jump)."""

    n: int
    seed: int = 0
    every: int = 100
    shift_at: int | None = None
    positions: list[dict[str, list[float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        u = {g: rng.normal(size=(2, DIM)) for g in GROUPS}
        pos = {g: rng.normal(scale=100.0, size=DIM) for g in GROUPS}
        for t in range(self.n):
            self.positions.append({g: pos[g].tolist() for g in GROUPS})
            second = 2.0 * np.exp(-(((t - self.n / 2) / (self.n / 5)) ** 2))
            drift = 5.0 if self.shift_at is not None and t + 1 >= self.shift_at else 1.0
            for g in GROUPS:
                delta = drift * u[g][0] + second * rng.normal() * u[g][1]
                pos[g] = pos[g] + delta + rng.normal(scale=1.0, size=DIM)

    def step(self, i: int) -> int:
        return (i + 1) * self.every

    def sketch(self, i: int) -> dict[str, list[float]]:
        return self.positions[i]

    def val_loss(self, i: int) -> float:
        return float(3.0 * np.exp(-i / (self.n / 2)) + 1.0 + 0.02 * np.sin(i))


class Tab:
    """A page that records every console error, uncaught exception and failed request."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.urls: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", self._response)
        page.on("request", lambda r: self.urls.append(r.url))

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning"):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def login(self, token: str) -> None:
        """Signs in on the login page and waits for the runs page it leads to."""
        self.page.goto(f"{self.base_url}/dashboard/login")
        self.page.fill("#token", token)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        if "/dashboard/login" not in self.page.url:
            self.wait_ready()

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base_url}{path}")
        self.wait_ready()

    def wait_ready(self) -> None:
        """Waits for the page's script to finish its first load; its problems if it does not."""
        try:
            self.page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        except Exception as exc:
            status = self.page.locator("#status").all_inner_texts()
            raise AssertionError(f"page never ready: {self.problems} {status}") from exc

    def series_lengths(self, chart_id: str) -> list[int]:
        return list(
            self.page.evaluate(
                """id => document.getElementById(id).uplot.data.map(
                       s => s.filter(v => v !== null && v !== undefined).length)""",
                chart_id,
            )
        )

    def wait_for_lengths(self, chart_id: str, index: int, length: int, timeout_s: float) -> None:
        """Polls from Python: the pages' CSP (rightly) forbids wait_for_function's eval."""
        deadline = time.monotonic() + timeout_s
        while True:
            lengths = self.series_lengths(chart_id)
            if len(lengths) > index and lengths[index] == length:
                return
            assert time.monotonic() < deadline, f"{chart_id} series {index}: {lengths}"
            self.page.wait_for_timeout(200)

    def shoot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def wait_until(tab: Tab, condition: Any, timeout_s: float = 10.0) -> None:
    """Polls from Python: the pages' CSP (rightly) forbids wait_for_function's eval."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        tab.page.wait_for_timeout(100)
