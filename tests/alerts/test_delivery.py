"""Delivery to a real loopback receiver: retries, webhook-id, signatures, 410, restarts, API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from alerttest import AUTH, FAST, Receiver, add_webhook, make_alerts_app, new_run, post_positions
from fastapi.testclient import TestClient
from synthetic import trajectory

from sedmon_server.alerts import signing

pytestmark = pytest.mark.postgres

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def post_nan(client: TestClient, run: int, step: int, dim: int = 100) -> None:
    sketch = ", ".join(["NaN"] + ["0.0"] * (dim - 1))
    r = client.post(
        f"/api/v1/runs/{run}/checkpoints",
        content=f'{{"step": {step}, "sketch": {{"all": [{sketch}]}}}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422


def test_every_event_arrives_after_the_receiver_comes_back_with_stable_ids(
    client: TestClient, receiver: Receiver
) -> None:
    up_at = time.monotonic() + 1.0
    receiver.respond = lambda r: (200, {}) if time.monotonic() > up_at else (503, {})
    add_webhook(client, receiver.url, secret=SECRET)
    runs = [new_run(client, f"broken-{i}") for i in range(3)]
    for run in runs:
        post_positions(client, run, trajectory("steady", n=2, seed=run).positions)
        post_nan(client, run, 300)

    hook = client.get("/api/v1/webhooks").json()["webhooks"][0]["id"]
    deadline = time.monotonic() + 15
    while True:
        deliveries = client.get(f"/api/v1/webhooks/{hook}/deliveries").json()["deliveries"]
        if len(deliveries) == 3 and all(d["status"] == "delivered" for d in deliveries):
            break
        assert time.monotonic() < deadline, deliveries
        time.sleep(0.05)
    time.sleep(0.3)  # nothing else may arrive
    got = receiver.delivered()
    by_id: dict[str, set[bytes]] = {}
    for r in got:
        by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert len(by_id) == 3  # one message per ingest; retries reuse the id and the body
    assert all(len(bodies) == 1 for bodies in by_id.values())
    assert len(got) > 3  # the receiver was down at first: there were retries
    for r in got:
        assert signing.verify(SECRET, r.headers, r.body, now=time.time())
    runs_named = {r.json()["run"]["name"] for r in got}
    assert runs_named == {"broken-0", "broken-1", "broken-2"}


def test_retry_after_is_honoured(client: TestClient, receiver: Receiver) -> None:
    seen: list[float] = []

    def respond(r: object) -> tuple[int, dict[str, str]]:
        seen.append(time.monotonic())
        return (429, {"Retry-After": "1"}) if len(seen) == 1 else (200, {})

    receiver.respond = respond
    add_webhook(client, receiver.url)
    run = new_run(client, "throttled")
    post_positions(client, run, trajectory("steady", n=2, seed=5).positions)
    post_nan(client, run, 300)
    receiver.wait_for(lambda got: len(got) >= 2, timeout=10)
    assert seen[1] - seen[0] >= 0.9  # the backoff alone (0.05 s base) would retry at once


def test_gone_disables_the_webhook_and_failures_show_in_the_api(
    fresh_postgres_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    app = make_alerts_app(fresh_postgres_url, tmp_path, FAST.model_copy(update={"max_attempts": 2}))
    with TestClient(app, headers=AUTH) as client:
        receiver.respond = lambda r: (410, {}) if r.path == "/gone" else (500, {})
        gone = add_webhook(client, receiver.url.replace("/hook", "/gone"))
        failing = add_webhook(client, receiver.url)
        run = new_run(client, "undeliverable")
        post_positions(client, run, trajectory("steady", n=2, seed=6).positions)
        post_nan(client, run, 300)

        def statuses(hook: int) -> list[str]:
            r = client.get(f"/api/v1/webhooks/{hook}/deliveries")
            assert r.status_code == 200
            return [d["status"] for d in r.json()["deliveries"]]

        deadline = time.monotonic() + 10
        while (statuses(gone), statuses(failing)) != (["failed"], ["failed"]):
            assert time.monotonic() < deadline, (statuses(gone), statuses(failing))
            time.sleep(0.05)
        hooks = {h["id"]: h for h in client.get("/api/v1/webhooks").json()["webhooks"]}
        assert hooks[gone]["enabled"] is False and hooks[failing]["enabled"] is True
        (delivery,) = client.get(f"/api/v1/webhooks/{failing}/deliveries").json()["deliveries"]
        assert delivery["attempts"] == 2 and delivery["last_status_code"] == 500
        assert [a["status_code"] for a in delivery["history"]] == [500, 500]
    app.state.engine.dispose()


def test_restarted_server_delivers_the_pending_outbox(
    fresh_postgres_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    first = make_alerts_app(
        fresh_postgres_url, tmp_path, FAST.model_copy(update={"dispatch": False})
    )
    with TestClient(first, headers=AUTH) as client:
        add_webhook(client, receiver.url, format="teams")
        run = new_run(client, "before-restart")
        post_positions(client, run, trajectory("steady", n=2, seed=7).positions)
        post_nan(client, run, 300)
        time.sleep(0.3)
        assert receiver.delivered() == []
    first.state.engine.dispose()

    second = make_alerts_app(fresh_postgres_url, tmp_path)
    with TestClient(second, headers=AUTH):
        receiver.wait_for(lambda got: len(got) == 1)
        card = receiver.delivered()[0].json()["attachments"][0]["content"]
        assert "before-restart" in card["body"][1]["text"]
    second.state.engine.dispose()


def test_secret_is_write_only_and_other_projects_see_nothing(
    client: TestClient, receiver: Receiver
) -> None:
    hook = add_webhook(client, receiver.url, secret=SECRET)
    listed = client.get("/api/v1/webhooks").json()["webhooks"]
    assert listed[0]["has_secret"] is True and "secret" not in listed[0]
    run = new_run(client, "private")
    token = client.post("/api/v1/tokens", json={"project": "other", "scope": "admin"}).json()
    other = {"Authorization": f"Bearer {token['token']}"}
    assert client.get("/api/v1/webhooks", headers=other).json()["webhooks"] == []
    assert client.get(f"/api/v1/webhooks/{hook}/deliveries", headers=other).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{hook}", headers=other).status_code == 404
    assert client.get(f"/api/v1/runs/{run}/alerts", headers=other).status_code == 404
    r = client.post("/api/v1/webhooks", json={"project": "lab", "url": receiver.url}, headers=other)
    assert r.status_code == 403


def test_ack_marks_the_alert_and_an_unknown_id_is_404(client: TestClient) -> None:
    run = new_run(client, "ack-me")
    post_positions(client, run, trajectory("steady", n=2, seed=8).positions)
    post_nan(client, run, 300)
    (alert,) = client.get(f"/api/v1/runs/{run}/alerts").json()["alerts"]
    r = client.post(f"/api/v1/alerts/{alert['id']}/ack")
    assert r.status_code == 200 and r.json()["acknowledged"] is True
    assert client.post("/api/v1/alerts/999999/ack").status_code == 404
