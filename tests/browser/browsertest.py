"""Helpers of the browser tests: the live server's admin client and synthetic runs."""

from __future__ import annotations

import json
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
    to a plateau and fading (so the gap ratio rises, holds and falls), and a val loss."""

    n: int
    seed: int = 0
    every: int = 100
    positions: list[dict[str, list[float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        u = {g: rng.normal(size=(2, DIM)) for g in GROUPS}
        pos = {g: rng.normal(scale=100.0, size=DIM) for g in GROUPS}
        for t in range(self.n):
            self.positions.append({g: pos[g].tolist() for g in GROUPS})
            second = 2.0 * np.exp(-(((t - self.n / 2) / (self.n / 5)) ** 2))
            for g in GROUPS:
                delta = u[g][0] + second * rng.normal() * u[g][1]
                pos[g] = pos[g] + delta + rng.normal(scale=1.0, size=DIM)

    def step(self, i: int) -> int:
        return (i + 1) * self.every

    def sketch(self, i: int) -> dict[str, list[float]]:
        return self.positions[i]

    def val_loss(self, i: int) -> float:
        return float(3.0 * np.exp(-i / (self.n / 2)) + 1.0 + 0.02 * np.sin(i))
