"""The zero-setup default: alerts and delivery on the embedded SQLite file (one process)."""

from __future__ import annotations

from pathlib import Path

from alerttest import (
    AUTH,
    Received,
    Receiver,
    add_webhook,
    make_alerts_app,
    new_run,
    post_positions,
)
from fastapi.testclient import TestClient
from synthetic import trajectory


def test_sqlite_server_fires_and_delivers(tmp_path: Path, receiver: Receiver) -> None:
    app = make_alerts_app(f"sqlite:///{tmp_path / 'sedmon.db'}", tmp_path)
    with TestClient(app, headers=AUTH) as client:
        add_webhook(client, receiver.url)
        run = new_run(client, "lite")
        traj = trajectory("collapse", n=90, seed=0, noise=1.0, at=60)
        post_positions(client, run, traj.positions, batch=30)
        rules = [a["rule"] for a in client.get(f"/api/v1/runs/{run}/alerts").json()["alerts"]]
        assert "edge_collapse" in rules

        def names(got: list[Received]) -> set[str]:
            return {a["labels"]["alertname"] for r in got for a in r.json()["alerts"]}

        receiver.wait_for(lambda got: "edge_collapse" in names(got))
    app.state.engine.dispose()
