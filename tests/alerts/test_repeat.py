"""A firing alert is sent again after the repeat interval, not before, and not once
acknowledged; one that fired while silenced goes out at the first evaluation after the
silence ends. The engine's clock is set by the test (the engine takes a clock for this);
the sweep is the real one, called directly; delivery goes to a real loopback receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alerttest import AUTH, FAST, Receiver, add_webhook, alerts_of, make_alerts_app, new_run
from fastapi import FastAPI
from fastapi.testclient import TestClient

pytestmark = pytest.mark.postgres

INTERVAL = 3600.0


def stalled_messages(receiver: Receiver) -> list[dict[str, object]]:
    return [
        a
        for r in receiver.delivered()
        for a in r.json()["alerts"]
        if a["labels"]["alertname"] == "stalled"
    ]


def test_still_firing_alert_is_repeated_after_the_interval_not_before(
    fresh_postgres_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # No sweep thread: the test runs the sweep itself, so it knows when one has run.
    app = make_alerts_app(fresh_postgres_url, tmp_path, FAST.model_copy(update={"sweep": False}))
    service = app.state.alerts
    # A clock well in the past: messages it dates are due for the dispatcher at once.
    now = [time.time() - 100_000.0]
    service.engine.clock = lambda: now[0]
    with TestClient(app, headers=AUTH) as client:
        r = client.put(
            "/api/v1/projects/lab/alert-settings",
            json={"repeat_interval_s": INTERVAL, "stalled": {"floor_s": 600.0}},
        )
        assert r.status_code == 200, r.text
        add_webhook(client, receiver.url)
        run = new_run(client, "goes-quiet", sketch={"method": "identity", "dim": 3, "seed": 0})
        for i in range(5):
            now[0] += 60.0
            body = {"step": 100 * i, "sketch": {"all": [float(i), 0.0, 1.0]}}
            assert client.post(f"/api/v1/runs/{run}/checkpoints", json=body).status_code == 201

        def sweep_and_settle(expect: int) -> None:
            service.sweep_once()
            receiver.wait_for(lambda got: len(stalled_messages(receiver)) >= expect, timeout=10)
            time.sleep(0.3)  # and nothing more arrives (the dispatcher polls every 0.05 s)

        now[0] += 601.0  # past max(5 x 60 s, 600 s) of silence
        sweep_and_settle(1)
        first = stalled_messages(receiver)
        assert [(m["status"], m["repeat"]) for m in first] == [("firing", False)]

        now[0] += INTERVAL - 1.0  # still firing, one second short of the interval
        sweep_and_settle(1)
        assert len(stalled_messages(receiver)) == 1

        now[0] += 2.0  # the interval has passed
        sweep_and_settle(2)
        again = stalled_messages(receiver)
        assert [(m["status"], m["repeat"]) for m in again] == [
            ("firing", False),
            ("firing", True),
        ]
        assert again[1]["fingerprint"] == again[0]["fingerprint"]

        (alert,) = alerts_of(client, run, "stalled")
        assert client.post(f"/api/v1/alerts/{alert['id']}/ack").status_code == 200
        now[0] += 3 * INTERVAL  # acknowledged: no more repeats
        sweep_and_settle(2)
        assert len(stalled_messages(receiver)) == 2
        (alert,) = alerts_of(client, run, "stalled")
        assert alert["state"] == "firing" and alert["acknowledged"] is True
    app.state.engine.dispose()


def quiet_run(client: TestClient, now: list[float], name: str) -> int:
    """A run of five checkpoints a minute apart (engine clock), then silence."""
    run = new_run(client, name, sketch={"method": "identity", "dim": 3, "seed": 0})
    for i in range(5):
        now[0] += 60.0
        body = {"step": 100 * i, "sketch": {"all": [float(i), 0.0, 1.0]}}
        assert client.post(f"/api/v1/runs/{run}/checkpoints", json=body).status_code == 201
    return run


def sweeper(app: FastAPI, receiver: Receiver) -> Callable[[int], None]:
    def sweep_and_settle(expect: int) -> None:
        app.state.alerts.sweep_once()
        receiver.wait_for(lambda got: len(stalled_messages(receiver)) >= expect, timeout=10)
        time.sleep(0.3)

    return sweep_and_settle


def test_alert_that_fired_while_silenced_goes_out_once_the_silence_ends(
    fresh_postgres_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    app = make_alerts_app(fresh_postgres_url, tmp_path, FAST.model_copy(update={"sweep": False}))
    now = [time.time() - 100_000.0]
    app.state.alerts.engine.clock = lambda: now[0]
    sweep_and_settle = sweeper(app, receiver)
    with TestClient(app, headers=AUTH) as client:
        add_webhook(client, receiver.url)
        run = quiet_run(client, now, "muted-then-not")
        until = now[0] + 2000.0
        r = client.post(
            "/api/v1/silences",
            json={
                "project": "lab",
                "run_id": run,
                "rule": "stalled",
                "until": datetime.fromtimestamp(until, UTC).isoformat(),
            },
        )
        assert r.status_code == 201, r.text

        now[0] += 601.0  # stalled, silenced: recorded, not sent
        sweep_and_settle(0)
        assert [a["state"] for a in alerts_of(client, run, "stalled")] == ["firing"]
        assert stalled_messages(receiver) == []

        now[0] = until - 1.0  # still silenced
        sweep_and_settle(0)
        assert stalled_messages(receiver) == []

        now[0] = until + 1.0  # the silence ended, the alert still fires: it goes out now
        sweep_and_settle(1)
        assert [(m["status"], m["repeat"]) for m in stalled_messages(receiver)] == [
            ("firing", False)
        ]
    app.state.engine.dispose()
