"""Alerts raised by one ingest go out as one message per webhook (real loopback receiver)."""

from __future__ import annotations

import time

import pytest
from alerttest import Receiver, add_webhook, alerts_of, new_run, post_positions
from fastapi.testclient import TestClient
from synthetic import trajectory

pytestmark = pytest.mark.postgres


def test_alerts_raised_by_one_batch_ingest_go_out_as_one_message_per_webhook(
    client: TestClient, receiver: Receiver
) -> None:
    add_webhook(client, receiver.url, format="generic")
    add_webhook(client, receiver.url.replace("/hook", "/chat"), format="slack")
    # A collapse fires edge_collapse, then the held rank change fires rank_change: several
    # alerts (each its own: refractory_w 0, nothing folded), all in one ingest call.
    run = new_run(client, "one-batch", config={"alerts": {"refractory_w": 0}})
    traj = trajectory("collapse", n=120, seed=0, noise=1.0, at=60)
    post_positions(client, run, traj.positions, batch=traj.positions.shape[0])
    sent = sorted({a["rule"] for a in alerts_of(client, run) if a["state"] != "pending"})
    assert len(sent) >= 2, sent

    receiver.wait_for(lambda got: len(got) >= 2)
    time.sleep(0.3)  # nothing else may arrive
    got = receiver.delivered()
    assert sorted(r.path for r in got) == ["/chat", "/hook"]
    generic = next(r.json() for r in got if r.path == "/hook")
    assert sorted({a["labels"]["alertname"] for a in generic["alerts"]}) == sent
    slack = next(r.json() for r in got if r.path == "/chat")
    text = " ".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section")
    assert "spectral edge collapsed" in text and "signal rank" in text
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
