"""The sender thread against a scripted HTTP server on loopback: retries, spool, order."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted import Scripted, ok

from sedmon._sender import Item, Sender, TransportSettings, retry_after_s

SPEC = {
    "project": "p",
    "name": "r",
    "sketch": {"method": "countsketch", "dim": 2, "seed": 0},
    "groups": ["all"],
    "windows": [10],
    "rank_rule": "half",
    "config": {},
}
FAST = TransportSettings(
    retry_budget_s=1.0, base_backoff_s=0.05, max_backoff_s=0.2, read_timeout_s=2
)


@pytest.fixture()
def started() -> Iterator[list[Sender]]:
    senders: list[Sender] = []
    yield senders
    for s in senders:
        s.close(0.5)


def _sender(url: str, tmp_path: Path, started: list[Sender]) -> Sender:
    sender = Sender(url, "tok", SPEC, tmp_path, FAST)
    sender.start()
    started.append(sender)
    return sender


def _checkpoint(seq: int) -> Item:
    return Item(seq, "checkpoint", {"step": seq, "sketch": {"all": [1.0, 2.0]}, "metrics": {}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retry_after_is_read_as_seconds_or_http_date() -> None:
    import httpx

    assert retry_after_s(httpx.Response(429, headers={"retry-after": "3"})) == 3.0
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 50 < (retry_after_s(httpx.Response(503, headers={"retry-after": when})) or 0) <= 60


def test_429_with_retry_after_is_honoured(tmp_path: Path, started: list[Sender]) -> None:
    calls = {"n": 0}

    def throttled(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.endswith("/checkpoints"):
            calls["n"] += 1
            if calls["n"] == 1:
                return 429, {"retry-after": "1"}, {"detail": "slow down"}
        return ok(path, body)

    server = Scripted(throttled)
    try:
        sender = Sender(server.url, "tok", SPEC, tmp_path, TransportSettings(retry_budget_s=5))
        sender.start()
        started.append(sender)
        sender.submit(_checkpoint(1))
        assert sender.flush(5) and sender.delivered == 1
        times = [t for t, p, _ in server.requests if p.endswith("/checkpoints")]
        assert len(times) == 2
        assert times[1] - times[0] >= 0.95
    finally:
        server.close()


def test_a_422_is_final_and_not_retried(tmp_path: Path, started: list[Sender]) -> None:
    def refuse(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.endswith("/checkpoints"):
            return 422, {}, {"detail": "non-finite numbers in the sketch"}
        return ok(path, body)

    server = Scripted(refuse)
    try:
        sender = _sender(server.url, tmp_path, started)
        sender.submit(_checkpoint(1))
        sender.submit(_checkpoint(2))
        assert sender.flush(5)
        assert [b["step"] for b in server.posted("/checkpoints")] == [1, 2]
        assert sender.rejected == 2 and not sender.offline
    finally:
        server.close()


def test_a_503_is_retried_until_it_succeeds(tmp_path: Path, started: list[Sender]) -> None:
    calls = {"n": 0}

    def flaky(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] <= 2:
            return 503, {}, {"detail": "busy"}
        return ok(path, body)

    server = Scripted(flaky)
    try:
        sender = _sender(server.url, tmp_path, started)
        sender.submit(_checkpoint(1))
        assert sender.flush(5)
        assert sender.delivered == 1 and len(server.posted("/checkpoints")) == 1
    finally:
        server.close()


def test_spooled_items_replay_in_order_before_newer_ones(
    tmp_path: Path, started: list[Sender]
) -> None:
    port = _free_port()
    sender = _sender(f"http://127.0.0.1:{port}", tmp_path, started)
    for seq in (1, 2, 3):
        sender.submit(_checkpoint(seq))
    deadline = time.monotonic() + 5
    while not (sender.spool and len(sender.spool.pending()) == 3) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sender.offline and sender.spool is not None and len(sender.spool.pending()) == 3
    server = Scripted(ok, port)
    try:
        sender.submit(_checkpoint(4))
        deadline = time.monotonic() + 5
        while len(server.posted("/checkpoints")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [b["step"] for b in server.posted("/checkpoints")] == [1, 2, 3, 4]
        assert sender.flush(2) and sender.spool.pending() == []
    finally:
        server.close()


def test_a_full_queue_spills_to_the_spool_without_blocking(
    tmp_path: Path, started: list[Sender]
) -> None:
    sender = Sender("http://127.0.0.1:9", "tok", SPEC, tmp_path, TransportSettings(queue_size=2))
    # not started: the queue fills at once
    t0 = time.perf_counter()
    for seq in range(1, 6):
        sender.submit(_checkpoint(seq))
    assert time.perf_counter() - t0 < 0.5
    assert sender.spool is not None and [e.seq for e in sender.spool.pending()] == [3, 4, 5]
    sender.spool.close()
