"""Two dispatcher loops on one PostgreSQL outbox (`FOR UPDATE SKIP LOCKED`), delivering to a
real loopback receiver: every message exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from alerttest import AUTH, FAST, Received, Receiver, add_webhook, make_alerts_app, new_run
from alerttest import post_positions as post
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from synthetic import trajectory

from sedmon_server.alerts.dispatcher import DeliveryPolicy, Dispatcher
from sedmon_server.alerts.tables import alert_outbox, webhook_deliveries
from sedmon_server.database import make_engine

pytestmark = pytest.mark.postgres

MESSAGES = 40


def test_two_dispatchers_on_one_outbox_deliver_every_message_exactly_once(
    fresh_postgres_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # A server process that only writes the outbox: delivery is the two loops' job below.
    app = make_alerts_app(fresh_postgres_url, tmp_path, FAST.model_copy(update={"dispatch": False}))
    with TestClient(app, headers=AUTH) as client:
        hook = add_webhook(client, receiver.url)
        queued = {
            client.post(f"/api/v1/webhooks/{hook}/test").json()["message_id"]
            for _ in range(MESSAGES - 2)
        }
        for name in ("nan-a", "nan-b"):  # and two real alert messages, written by ingest
            run = new_run(client, name)
            post(client, run, trajectory("steady", n=2, seed=1).positions)
            sketch = ", ".join(["NaN"] + ["0.0"] * 99)
            r = client.post(
                f"/api/v1/runs/{run}/checkpoints",
                content=f'{{"step": 300, "sketch": {{"all": [{sketch}]}}}}',
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422
    app.state.engine.dispose()

    def slow(r: Received) -> tuple[int, dict[str, str]]:
        time.sleep(0.02)  # deliveries overlap the other loop's claims
        return 200, {}

    receiver.respond = slow
    # Small batches and two workers each: many claims, racing each other.
    policy = DeliveryPolicy(batch=3, workers=2, lease_s=60.0, timeout_s=5.0)
    engines = [make_engine(fresh_postgres_url) for _ in range(2)]
    dispatchers = [Dispatcher(engine, policy, poll_s=0.01) for engine in engines]
    handled = [0, 0]
    start = threading.Barrier(2)

    def loop(k: int) -> None:
        start.wait()
        deadline = time.monotonic() + 20
        while sum(handled) < MESSAGES and time.monotonic() < deadline:
            handled[k] += dispatchers[k].run_once()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    time.sleep(0.2)  # nothing else may arrive
    try:
        got = receiver.delivered()
        ids = [r.headers["webhook-id"] for r in got]
        assert len(ids) == MESSAGES and len(set(ids)) == MESSAGES, sorted(ids)
        assert queued <= set(ids)
        assert handled[0] > 0 and handled[1] > 0 and sum(handled) == MESSAGES, handled
        with engines[0].connect() as conn:
            rows = conn.execute(select(alert_outbox.c.status, alert_outbox.c.attempts)).all()
            attempts = conn.execute(select(func.count()).select_from(webhook_deliveries))
            assert sorted(set(rows)) == [("delivered", 1)] and len(rows) == MESSAGES
            assert attempts.scalar_one() == MESSAGES
    finally:
        for d in dispatchers:
            d.stop()
        for engine in engines:
            engine.dispose()
