"""Rules on the real ingest path (PostgreSQL, HTTP API), messages to a real loopback receiver."""

from __future__ import annotations

import time

import pytest
from alerttest import Receiver, add_webhook, alerts_of, new_run, post_positions
from fastapi.testclient import TestClient
from replay import alerts_fired
from synthetic import trajectory

pytestmark = pytest.mark.postgres

W = 10


def test_fading_second_direction_fires_edge_collapse_once_near_the_planted_index(
    client: TestClient, receiver: Receiver
) -> None:
    add_webhook(client, receiver.url, format="generic")
    traj = trajectory("collapse", n=120, seed=0, noise=1.0, at=60, fade=5)
    # At the defaults: distribution_shift sees the fade first (7 checkpoints in), and
    # edge_collapse, never folded into another rule's event, still raises its own alert.
    run = new_run(client, "collapse")
    post_positions(client, run, traj.positions, metrics=lambda i: {"val_loss": 3.0 + i / 100})

    found = alerts_of(client, run, "edge_collapse")
    assert len(found) == 1
    alert = found[0]
    assert alert["state"] in ("firing", "resolved")
    # Dated at the first window below tau: after the fade starts, before the window flushes it.
    assert 100 * traj.at <= alert["step"] <= 100 * (traj.at + 5 + W)
    assert alert["summary"].startswith("run collapse: spectral edge collapsed at step ")
    assert (
        "sigma2/sigma3 = " in alert["summary"] and "< 1.20, W = 10); val loss" in alert["summary"]
    )
    receiver.wait_for(
        lambda got: any(
            a["labels"]["alertname"] == "edge_collapse" for r in got for a in r.json()["alerts"]
        )
    )


def test_planted_rank_change_fires_distribution_shift_within_a_few_checkpoints(
    client: TestClient,
) -> None:
    run = new_run(client, "rank-change")
    traj = trajectory("rank", n=100, seed=0, noise=1.0, at=60)
    post_positions(client, run, traj.positions)

    shifts = alerts_of(client, run, "distribution_shift")
    assert len(shifts) == 1
    details = shifts[0]["details"]
    detected, change = details["detected_step"] // 100, details["change_step"] // 100
    print(f"distribution_shift: change at {change} (planted {traj.at}), detected at {detected}")
    assert traj.at <= detected <= traj.at + 2  # the paper: within one or two checkpoints
    assert traj.at <= change <= traj.at + 2
    assert details["delay_checkpoints"] == detected - change
    # rank_change sees the same event a hold later: folded into this alert, not raised.
    assert alerts_of(client, run, "rank_change") == []
    (also,) = details["also"]
    assert also["rule"] == "rank_change" and also["facts"]["to_rank"] == 2
    assert detected < also["detected_step"] // 100 <= traj.at + 3 * W


def test_refractory_is_a_run_setting_validated_on_the_project_endpoint(client: TestClient) -> None:
    for bad, message in ((-1, "refractory_w must be >= 0"), ("3", "refractory_w must be a number")):
        r = client.put("/api/v1/projects/lab/alert-settings", json={"refractory_w": bad})
        assert r.status_code == 422 and message in r.text, r.text
    # 0 in a run's config: every rule raises its own alert for the planted rank change.
    run = new_run(client, "rank-unfolded", config={"alerts": {"refractory_w": 0}})
    traj = trajectory("rank", n=100, seed=0, noise=1.0, at=60)
    post_positions(client, run, traj.positions)
    assert sorted(a["rule"] for a in alerts_of(client, run)) == [
        "distribution_shift",
        "rank_change",
    ]


def test_nan_checkpoint_fires_non_finite_at_once_and_a_finite_one_resolves_it(
    client: TestClient, receiver: Receiver
) -> None:
    add_webhook(client, receiver.url, format="slack")
    run = new_run(client, "nan-run")
    traj = trajectory("steady", n=5, seed=1)
    post_positions(client, run, traj.positions)
    bad = traj.positions[5].tolist()
    bad[3] = float("nan")
    r = client.post(
        f"/api/v1/runs/{run}/checkpoints",
        content=f'{{"step": 600, "sketch": {{"all": {bad}}}}}'.replace("nan", "NaN"),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    (alert,) = alerts_of(client, run, "non_finite")
    assert alert["state"] == "firing" and alert["step"] == 600
    assert "NaN/inf in parameters of group all" in alert["summary"]
    receiver.wait_for(lambda got: any("NaN/inf" in r.json()["text"] for r in got))

    post_positions(client, run, trajectory("steady", n=6, seed=1).positions, start=6)
    (alert,) = alerts_of(client, run, "non_finite")
    assert alert["state"] == "resolved"


def test_run_that_stops_posting_is_stalled_then_resolved_when_it_resumes(
    client: TestClient, receiver: Receiver
) -> None:
    add_webhook(client, receiver.url, format="discord")
    config = {"alerts": {"stalled": {"floor_s": 0.6, "multiple": 3.0}}}
    run = new_run(client, "stops", config=config)
    traj = trajectory("steady", n=10, seed=2)
    post_positions(client, run, traj.positions[:5])
    deadline = time.monotonic() + 10
    while not alerts_of(client, run, "stalled") and time.monotonic() < deadline:
        time.sleep(0.05)
    (alert,) = alerts_of(client, run, "stalled")
    assert alert["state"] == "firing"
    assert alert["summary"].startswith("run stops: no checkpoint for ")
    receiver.wait_for(lambda got: any("no checkpoint for" in r.json()["content"] for r in got))

    post_positions(client, run, traj.positions, start=5)
    (alert,) = alerts_of(client, run, "stalled")
    assert alert["state"] == "resolved"
    receiver.wait_for(lambda got: any("checkpoints resumed" in r.json()["content"] for r in got))


def test_steady_noisy_run_of_1000_checkpoints_raises_at_most_one_alert_as_replayed(
    client: TestClient,
) -> None:
    run = new_run(client, "steady-1000")
    traj = trajectory("steady", n=999, seed=5, noise=1.0)
    post_positions(client, run, traj.positions, batch=100)
    found = [a for a in alerts_of(client, run) if a["state"] != "pending"]
    assert len(found) <= 1, [a["summary"] for a in found]
    # The server fires what the offline replay (test_storm.py, bench/alerts.py) fires.
    replayed = alerts_fired(traj.positions)
    assert [a["rule"] for a in found] == [r for r, at in replayed.items() for _ in at]
    assert [a["details"]["detected_step"] for a in found] == [
        100 * c for at in replayed.values() for c in at
    ]


def test_silenced_rule_is_recorded_but_not_sent(client: TestClient, receiver: Receiver) -> None:
    add_webhook(client, receiver.url)
    run = new_run(client, "muted")
    r = client.post(
        "/api/v1/silences",
        json={
            "project": "lab",
            "run_id": run,
            "rule": "non_finite",
            "until": "2999-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201, r.text
    traj = trajectory("steady", n=3, seed=4)
    post_positions(client, run, traj.positions)
    bad = traj.positions[3].tolist()
    r = client.post(
        f"/api/v1/runs/{run}/checkpoints",
        content=f'{{"step": 400, "sketch": {{"all": {bad}}}, "metrics": {{"loss": Infinity}}}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert [a["rule"] for a in alerts_of(client, run)] == ["non_finite"]
    # The test message is queued after the alert: once it arrives, the alert would have too.
    hook = client.get("/api/v1/webhooks").json()["webhooks"][0]["id"]
    client.post(f"/api/v1/webhooks/{hook}/test")
    receiver.wait_for(lambda got: len(got) >= 1)
    time.sleep(0.2)
    assert [r.json()["alerts"][0]["labels"]["alertname"] for r in receiver.delivered()] == ["test"]


def test_a_run_that_ended_failed_is_not_reported_stalled(client: TestClient) -> None:
    config = {"alerts": {"stalled": {"floor_s": 0.6, "multiple": 3.0}}}
    traj = trajectory("steady", n=5, seed=5)
    failed, silent = (
        new_run(client, "ended-failed", config=config),
        new_run(client, "silent", config=config),
    )
    post_positions(client, failed, traj.positions)
    post_positions(client, silent, traj.positions)
    r = client.post(f"/api/v1/runs/{failed}/finish", json={"state": "failed"})
    assert r.status_code == 200 and r.json()["state"] == "failed"
    deadline = time.monotonic() + 10
    while not alerts_of(client, silent, "stalled") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [a["state"] for a in alerts_of(client, silent, "stalled")] == ["firing"]
    assert alerts_of(client, failed, "stalled") == []
