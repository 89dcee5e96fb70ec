"""The sender thread against a scripted HTTP server on loopback: retries, spool, order, and
a slow or hung disk that never holds up the training thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import pytest
from scripted import Scripted, ok

from sedmon._logging import problem
from sedmon._sender import Item, Sender, TransportSettings, retry_after_s
from sedmon._spool import Spool

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


@pytest.fixture(autouse=True)
def fresh_log_limits() -> None:
    """Each test sees its own first line of each kind (the limiter is process-wide)."""
    problem._last.clear()
    problem._dropped.clear()


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


def _big_checkpoint(seq: int) -> Item:
    """A checkpoint of about 8 KB in memory (1000 sketch numbers)."""
    return Item(seq, "checkpoint", {"step": seq, "sketch": {"all": np.zeros(1000)}, "metrics": {}})


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


class SlowSpool(Spool):
    """A spool on a slow disk: every flush + fsync (records, the acked file) takes DELAY_S
    longer. Records which threads waited for it."""

    DELAY_S = 0.02
    threads: ClassVar[set[int]] = set()

    def _sync(self, f: IO[bytes]) -> None:
        SlowSpool.threads.add(threading.get_ident())
        time.sleep(self.DELAY_S)
        super()._sync(f)


class HungSpool(Spool):
    """A spool on a disk that hangs until `disk` is set (then writes for real)."""

    disk = threading.Event()

    def _sync(self, f: IO[bytes]) -> None:
        if not HungSpool.disk.wait(30):
            raise OSError("the test never released the disk")
        super()._sync(f)


def _timed_submits(sender: Sender, items: list[Item]) -> list[float]:
    took = []
    for item in items:
        t0 = time.perf_counter()
        sender.submit(item)
        took.append(time.perf_counter() - t0)
    return took


def test_a_full_queue_on_a_slow_disk_never_holds_up_submit_and_every_item_arrives_once(
    tmp_path: Path, started: list[Sender]
) -> None:
    SlowSpool.threads.clear()
    server = Scripted(ok)
    try:
        settings = TransportSettings(queue_size=4, retry_budget_s=5, read_timeout_s=5)
        sender = Sender(server.url, "tok", SPEC, tmp_path, settings, spool_type=SlowSpool)
        sender.start()
        started.append(sender)
        took: list[float] = []
        n, burst = 200, 50
        for first in range(0, n, burst):  # bursts: the queue (4) fills at once each time
            took += _timed_submits(sender, [_checkpoint(s) for s in range(first, first + burst)])
            time.sleep(0.05)
        assert sender.flush(60)
        steps = [b["step"] for b in server.posted("/checkpoints")]
        assert steps == list(range(n))  # every item, once, in order
        assert sender.overflowed > 0 and sender.dropped == 0
        assert SlowSpool.threads and threading.get_ident() not in SlowSpool.threads
        took.sort()
        print(
            f"submit: median {took[n // 2] * 1e6:.0f} us, p99 {took[int(n * 0.99)] * 1e6:.0f} us,"
            f" max {took[-1] * 1e6:.0f} us over {n} calls; {sender.overflowed} via the spool"
            f" (each fsync +{SlowSpool.DELAY_S * 1e3:.0f} ms)"
        )
        assert took[-1] < 0.005
        assert sender.close(5)
    finally:
        server.close()


def test_past_the_overflow_bound_items_are_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    HungSpool.disk.clear()
    listener = socket.socket()  # completes TCP handshakes, never answers: the sender hangs
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    items = [_big_checkpoint(s) for s in range(10)]
    settings = TransportSettings(queue_size=2, overflow_mb=20_000 / 2**20, read_timeout_s=30)
    sender = Sender(url, "tok", SPEC, tmp_path, settings, spool_type=HungSpool)
    sender.start()
    try:
        took = _timed_submits(sender, items[:1])
        deadline = time.monotonic() + 5
        while sender._inflight is None and time.monotonic() < deadline:  # stuck posting it
            time.sleep(0.005)
        took += _timed_submits(sender, [*items[1:], Item(10, "finish", {"state": "finished"})])
        assert max(took) < 0.005
        # queue: 1, 2; the writer's memory: 3, 4 (about 16 KB of 20 KB); 5..9 refused;
        # the end of the run is always taken
        assert (sender.overflowed, sender.dropped) == (3, 5)
        HungSpool.disk.set()
        deadline = time.monotonic() + 5
        while not sender._writer.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not sender.close(0.3)
    finally:
        HungSpool.disk.set()
        listener.close()
    dropped = [r for r in caplog.records if "dropped so far" in r.getMessage()]
    assert len(dropped) == 1 and "5 item(s) dropped" in dropped[0].getMessage()
    spool = Spool(Spool.folders(tmp_path)[0])
    assert [e.seq for e in spool.pending()] == [0, 1, 2, 3, 4, 10]


def test_flush_and_close_keep_their_bounds_while_the_disk_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    HungSpool.disk.clear()
    settings = TransportSettings(
        retry_budget_s=0.1, base_backoff_s=0.02, max_backoff_s=0.1, spool_wait_s=0.3
    )
    sender = Sender(f"http://127.0.0.1:{_free_port()}", "tok", SPEC, tmp_path, settings,
                    spool_type=HungSpool)  # fmt: skip
    sender.start()
    try:
        for seq in range(5):
            sender.submit(_checkpoint(seq))
        deadline = time.monotonic() + 5
        while not sender.offline and time.monotonic() < deadline:  # nothing listens there
            time.sleep(0.01)
        assert sender.offline and not sender._writer.idle()  # the spool write hangs
        t0 = time.perf_counter()
        assert not sender.flush(0.2)
        flushed = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert not sender.close(0.2)
        closed = time.perf_counter() - t0
        assert flushed < 0.4 and closed < 0.2 + 0.2 + 0.3 + 0.3, (flushed, closed)
        assert "not in the spool yet" in caplog.text
    finally:
        HungSpool.disk.set()  # the disk comes back: nothing was lost while the process lives
    deadline = time.monotonic() + 5
    while sender._writer.held() and time.monotonic() < deadline:
        time.sleep(0.01)
    spool = Spool(Spool.folders(tmp_path)[0])
    assert [e.seq for e in spool.pending()] == [0, 1, 2, 3, 4]


def test_a_hung_disk_and_a_dead_server_keep_memory_at_the_queue_and_the_bound(
    tmp_path: Path,
) -> None:
    HungSpool.disk.clear()
    settings = TransportSettings(
        queue_size=4, overflow_mb=20_000 / 2**20, retry_budget_s=0.1, base_backoff_s=0.02,
        max_backoff_s=0.1, spool_wait_s=5,
    )  # fmt: skip
    sender = Sender(f"http://127.0.0.1:{_free_port()}", "tok", SPEC, tmp_path, settings,
                    spool_type=HungSpool)  # fmt: skip
    sender.start()
    items = [_big_checkpoint(s) for s in range(200)]
    try:
        took = _timed_submits(sender, items[:1])
        deadline = time.monotonic() + 5
        while not sender.offline and time.monotonic() < deadline:  # item 0 is on its way to
            time.sleep(0.01)  # the spool, whose write hangs
        assert sender.offline
        for item in items[1:]:
            took += _timed_submits(sender, [item])
            time.sleep(0.001)  # time enough for the sender to move the queue, if it would
        in_memory = sender._writer.held() + sender._queue.qsize()
        # item 0, the queue (1..4), and 5, 6 (about 16 KB of the 20 KB bound): no more
        assert in_memory == 7 and (sender.overflowed, sender.dropped) == (2, 193)
        assert max(took) < 0.005
        HungSpool.disk.set()
        assert not sender.close(0.5)  # the server is down: all 7 are kept in the spool
    finally:
        HungSpool.disk.set()
    spool = Spool(Spool.folders(tmp_path)[0])
    assert [e.seq for e in spool.pending()] == list(range(7))
