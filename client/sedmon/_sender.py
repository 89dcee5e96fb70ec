"""The background sender: posts a run's items in order, retries, spools, replays.

The training thread only calls `submit`: a `put_nowait` into a bounded queue, or, when the
queue is full, an append to the spool writer's memory (bounded too; past it the item is
dropped, counted and logged from a background thread). It never does file or network I/O
and never waits on a lock that another thread holds during I/O; `flush` and `close` wait
only on events, within their bounds.

Two daemon threads do the rest. The sender thread owns the network: it creates the run,
posts items with retries (exponential backoff with full jitter, Retry-After honoured on
429/503), and when the server stays unreachable past a retry budget it moves items to the
spool and keeps probing. The spool thread (`SpoolWriter`) owns every write to the spool,
in batches with one fsync each, so a slow disk holds up neither the training thread nor
the network. While the spool holds anything, or the writer still has items to write, new
items go behind them, so the server always sees a run's items in the order they were made.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx

from sedmon._deferred import Deferred
from sedmon._logging import logger, problem
from sedmon._spool import Spool, encode_record, run_folder_name, to_json

API = "/api/v1"
RETRYABLE_4XX = frozenset({408, 429})
RUN_FATAL = frozenset({400, 401, 403, 404, 409, 422})
"""Answers to run creation that no retry can fix: the items wait in the spool for a human."""


@dataclass(frozen=True)
class TransportSettings:
    """Timeouts and retry policy. Each field can be set from the environment (see docs)."""

    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    retry_budget_s: float = 15.0
    """Time spent retrying one item before it goes to the spool and the sender goes offline."""
    base_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    """Cap of one backoff sleep, and of the interval between probes while offline."""
    max_retry_after_s: float = 300.0
    queue_size: int = 1000
    overflow_mb: float = 64.0
    """Items that found the queue full wait in memory for the spool thread, up to this much
    (estimated); past it new items are dropped, counted and logged."""
    spool_wait_s: float = 30.0
    """How long `close` waits, after its own bound, for what is left to be on disk."""
    metrics_batch_points: int = 1000
    """Steps of `run.log` values posted in one batch at most."""
    metrics_interval_s: float = 5.0
    """The longest a logged value waits before its batch is posted."""

    @classmethod
    def from_env(cls) -> TransportSettings:
        """Defaults, overridden by SEDMON_CONNECT_TIMEOUT_S, SEDMON_READ_TIMEOUT_S,
        SEDMON_RETRY_BUDGET_S, SEDMON_BASE_BACKOFF_S, SEDMON_MAX_BACKOFF_S, SEDMON_QUEUE_SIZE,
        SEDMON_OVERFLOW_MB, SEDMON_SPOOL_WAIT_S, SEDMON_METRICS_BATCH_POINTS,
        SEDMON_METRICS_INTERVAL_S."""
        values: dict[str, Any] = {}
        integers = ("queue_size", "metrics_batch_points")
        for field in (
            "connect_timeout_s",
            "read_timeout_s",
            "retry_budget_s",
            "base_backoff_s",
            "max_backoff_s",
            "queue_size",
            "overflow_mb",
            "spool_wait_s",
            "metrics_batch_points",
            "metrics_interval_s",
        ):
            raw = os.environ.get(f"SEDMON_{field.upper()}")
            if raw:
                try:
                    values[field] = int(raw) if field in integers else float(raw)
                except ValueError:
                    logger.warning(
                        "sedmon: ignoring SEDMON_%s=%r (not a number)", field.upper(), raw
                    )
        return cls(**values)


@dataclass(frozen=True)
class Item:
    """One thing to post: a checkpoint, a batch of metrics, or the end of the run."""

    seq: int
    kind: str  # "checkpoint" | "metrics_batch" | "finish"; "metrics" (one step) in old spools
    body: dict[str, Any]


class Outcome(Enum):
    OK = "ok"
    FINAL = "final"  # the server answered and a retry would not change it
    UNREACHABLE = "unreachable"  # retry budget spent: spool and go offline


def dumps(body: dict[str, Any]) -> bytes:
    """JSON with NaN/Infinity allowed: the server answers non-finite sketches with 422."""
    return to_json(body)


def retry_after_s(response: httpx.Response | None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date), if any."""
    if response is None:
        return None
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def item_path(run_id: int, kind: str) -> str:
    return {
        "checkpoint": f"{API}/runs/{run_id}/checkpoints",
        "metrics": f"{API}/runs/{run_id}/metrics",
        "metrics_batch": f"{API}/runs/{run_id}/metrics:batch",
        "finish": f"{API}/runs/{run_id}/finish",
    }[kind]


def _no_route(response: httpx.Response | None) -> bool:
    """Whether the server answered that it has no such endpoint (not: no such run)."""
    if response is None or response.status_code not in (404, 405):
        return False
    return detail(response) in ("Not Found", "Method Not Allowed")


class Unsendable(Exception):
    """An item's body cannot be serialised: no retry will help."""


class Connection:
    """HTTP to one server with the retry policy; used by the sender thread and `sedmon sync`."""

    def __init__(
        self,
        server: str,
        token: str | None,
        settings: TransportSettings,
        stopped: threading.Event | None = None,
    ) -> None:
        headers = {"content-type": "application/json", "user-agent": "sedmon-client"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(
            settings.read_timeout_s,
            connect=settings.connect_timeout_s,
            pool=settings.connect_timeout_s,
        )
        self.server = server.rstrip("/")
        self.settings = settings
        self.client = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        self._stopped = stopped or threading.Event()
        self.retry_after_hint: float | None = None
        self.refused = False
        """The last attempt could not connect (nothing listens there)."""

    def close(self) -> None:
        self.client.close()

    def post(
        self, path: str, body: dict[str, Any], deadline: float | Callable[[], float]
    ) -> tuple[Outcome, httpx.Response | None]:
        """POST with retries until `deadline` (monotonic seconds, or a function giving it,
        asked again while waiting); one try when it has passed."""
        limit = deadline if callable(deadline) else (lambda: deadline)
        try:
            content = dumps(body)
        except Exception as exc:  # e.g. a sketch that could not be read from the GPU
            raise Unsendable(repr(exc)) from exc
        attempt = 0
        self.retry_after_hint = None
        while True:
            response: httpx.Response | None = None
            self.refused = False
            try:
                response = self.client.post(path, content=content)
            except httpx.HTTPError as exc:
                self.refused = isinstance(exc, httpx.ConnectError)
                problem(logging.WARNING, "net", "sedmon: %s unreachable (%s)", self.server, exc)
            if response is not None:
                code = response.status_code
                if code < 300:
                    return Outcome.OK, response
                if 400 <= code < 500 and code not in RETRYABLE_4XX:
                    return Outcome.FINAL, response
                problem(logging.WARNING, f"http{code}", "sedmon: %s answered %d", path, code)
            asked = retry_after_s(response) if response is not None else None
            if asked is not None:
                delay = min(asked, self.settings.max_retry_after_s)
                self.retry_after_hint = delay
            else:
                cap = min(self.settings.max_backoff_s, self.settings.base_backoff_s * 2**attempt)
                delay = random.uniform(0.0, cap)  # full jitter
            wake = time.monotonic() + delay
            while True:  # sleep in slices, so that finish() can cut the wait short
                now = time.monotonic()
                if self._stopped.is_set() or wake > limit():
                    return Outcome.UNREACHABLE, response
                if now >= wake:
                    break
                self._stopped.wait(min(0.05, wake - now))
            attempt += 1


def detail(response: httpx.Response | None) -> str:
    """The server's {"detail": ...} (or the start of the body), for a log line."""
    if response is None:
        return "no answer"
    try:
        return str(response.json().get("detail", response.text[:200]))
    except (ValueError, AttributeError):
        return response.text[:200]


class SpoolWriter:
    """The thread that writes the spool, so that no other thread ever waits for the disk.

    `offer` (any thread; O(1); it takes only a lock that is never held during I/O) hands an
    item over; the thread writes what it holds in batches, one fsync per batch. What the
    training thread hands over (the send queue was full) is bounded: past `limit_bytes`
    waiting in memory `offer(bounded=True)` refuses. What the sender thread moves here (what
    it cannot post, and the send queue while it replays) is always taken: it moves the
    queue only while the writer is idle, so that is at most one queue's worth at a time.
    """

    def __init__(
        self,
        get_spool: Callable[[], Spool],
        limit_bytes: int,
        on_written: Callable[[], None],
        on_exit: Callable[[], None],
    ) -> None:
        self.limit_bytes = limit_bytes
        self._get_spool = get_spool
        self._on_written = on_written
        self._on_exit = on_exit
        self._cond = threading.Condition()  # guards the fields below; never held during I/O
        self._items: list[tuple[Item, int]] = []
        self._batch: list[tuple[Item, int]] = []  # being written
        self._bytes = 0
        self._closed = False
        self.written = 0
        self.lost = 0
        """Items that could not be written (the disk refused, or the body could not be
        serialised); each loss is logged."""
        self._thread = threading.Thread(target=self._main, name="sedmon-spool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: Item, size: int = 0, bounded: bool = False) -> bool:
        """Take `item` to write it; False when closed, or when `bounded` and `size` more
        bytes would pass the limit (an item alone is always taken)."""
        with self._cond:
            if self._closed:
                return False
            if bounded and self._bytes and self._bytes + size > self.limit_bytes:
                return False
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify()
        return True

    def idle(self) -> bool:
        """Nothing waiting and nothing being written: all it was given is on disk."""
        with self._cond:
            return not self._items and not self._batch

    def held(self) -> int:
        """Items waiting or being written."""
        with self._cond:
            return len(self._items) + len(self._batch)

    def oldest(self) -> int | None:
        """The smallest sequence number of the items waiting or being written."""
        with self._cond:  # a copy under the lock, the scan outside it
            held = [*self._items, *self._batch]
        return min((i.seq for i, _ in held), default=None)

    def finish(self, timeout: float) -> bool:
        """Take nothing more, write what is held, and wait up to `timeout` s for it; True
        when everything it was given has been written (or lost, and logged)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._items or self._batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def _main(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._items and not self._closed:
                        self._cond.wait()
                    if not self._items:
                        return
                    self._batch, self._items = self._items, []
                try:
                    self._write([item for item, _ in self._batch])
                finally:
                    with self._cond:
                        self._bytes -= sum(size for _, size in self._batch)
                        self._batch = []
                        self._cond.notify_all()
                    with contextlib.suppress(Exception):
                        self._on_written()
        finally:
            self._on_exit()

    def _write(self, items: list[Item]) -> None:
        lines = []
        for item in items:
            try:
                record = {"seq": item.seq, "kind": item.kind, "body": item.body}
                lines.append((item.seq, item.kind, encode_record(record)))
            except Exception as exc:  # e.g. a sketch that could not be read from the GPU
                self.lost += 1
                problem(
                    logging.ERROR,
                    "encode",
                    "sedmon: %s at step %s cannot be serialised (%r); dropped",
                    item.kind,
                    item.body.get("step"),
                    exc,
                )
        if not lines:
            return
        try:
            self._get_spool().append_lines(lines)
            self.written += len(lines)
        except Exception as exc:
            self.lost += len(lines)
            problem(
                logging.ERROR,
                "spool",
                "sedmon: cannot write the spool (%r); %d item(s) lost",
                exc,
                len(lines),
            )


def approx_bytes(item: Item) -> int:
    """About the memory an item holds (its sketch, its metric values), for the overflow bound:
    O(points) for a metrics batch, O(groups) for a checkpoint."""
    body = item.body
    size = 256
    sketch = body.get("sketch")
    if isinstance(sketch, Deferred):
        size += sketch.nbytes
    elif isinstance(sketch, dict):
        size += sum(getattr(v, "nbytes", 8 * len(v)) for v in sketch.values())
    metrics = body.get("metrics")
    if isinstance(metrics, dict):
        size += 100 * len(metrics)
    points = body.get("points")
    if isinstance(points, list):
        size += sum(64 + 100 * len(p.get("values", ())) for p in points if isinstance(p, dict))
    return size


class Sender:
    """Posts one run's items from a daemon thread; see the module docstring."""

    def __init__(
        self,
        server: str,
        token: str | None,
        run_spec: dict[str, Any],
        spool_root: Path,
        settings: TransportSettings | None = None,
        on_checkpoint_ack: Callable[[dict[str, Any]], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        spool_type: type[Spool] = Spool,
    ) -> None:
        """on_tick: called from the sender thread between items and at least every 50 ms
        (the run posts metrics that have waited long enough from there). spool_type: the
        spool class (a test hook: a subclass whose `_sync` sleeps is a slow disk)."""
        self.settings = settings or TransportSettings.from_env()
        self.server = server.rstrip("/")
        self.token = token
        self.run_spec = run_spec
        self.spool_root = Path(spool_root)
        self.spool_type = spool_type
        self.run_id: int | None = None
        self.on_checkpoint_ack = on_checkpoint_ack
        self.on_tick = on_tick
        self._server_batches_metrics = True
        self.delivered = 0
        self.rejected = 0
        self.overflowed = 0
        """Items the training thread handed to the spool writer because the queue was full."""
        self.dropped = 0
        """Items refused because the queue was full and the overflow bound was reached."""
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=self.settings.queue_size)
        self._state = threading.RLock()  # in-memory state only: never held during I/O
        self._spool_lock = threading.Lock()  # creating the spool (I/O): background threads only
        self._spool: Spool | None = None
        self._writer = SpoolWriter(
            self._get_spool,
            int(self.settings.overflow_mb * 1024 * 1024),
            on_written=self._after_write,
            on_exit=self._background_exit,
        )
        self._inflight: Item | None = None
        self._abandoned = False
        self._fatal: str | None = None
        self._offline = False
        self._next_probe = 0.0
        self._probe_backoff = self.settings.base_backoff_s
        self._closing = False
        self._running = 0
        self._close_deadline = 0.0
        self._close_probe_done = False
        self._submitted = 0
        self._settled_at = -1
        self._settle = threading.Condition()  # guards _settled_at; never held during I/O
        self._reported = (0, 0)
        self._report_lock = threading.Lock()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._main, name="sedmon-sender", daemon=True)

    # -- training-thread side: no I/O, no lock that is held during I/O ----------------------

    def start(self) -> None:
        self._running = 2
        self._writer.start()
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Queue an item without blocking. When the queue is full the item goes to the spool
        writer's memory (bounded by `overflow_mb`; past it the item is dropped and counted;
        the end of the run is always taken)."""
        with self._state:
            queued = False
            if not self._stopped.is_set():
                try:
                    self._queue.put_nowait(item)
                    queued = True
                except queue.Full:
                    pass
            if not queued:
                bounded = item.kind != "finish"
                size = approx_bytes(item) if bounded else 0
                if self._writer.offer(item, size, bounded=bounded):
                    self.overflowed += 1
                else:
                    self.dropped += 1
            self._submitted += 1
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until everything submitted so far is delivered, refused or
        on disk (the sender thread says so; this thread only waits for its word)."""
        with self._state:
            target = self._submitted
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._settle:
            while self._settled_at < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    break
                self._settle.wait(min(remaining, 0.05))
            return self._settled_at >= target

    def close(self, timeout: float) -> bool:
        """Deliver what is left within `timeout` s; whatever is not delivered goes to the spool
        (written by the spool thread; this waits up to `spool_wait_s` more for the disk).

        Returns True when everything was delivered (nothing left in the spool by this run).
        """
        with self._state:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._next_probe = 0.0  # one more try now, whatever the backoff said
        self._wake.set()
        settled = self.flush(timeout)
        with self._state:
            self._stopped.set()
            self._abandoned = True
            leftover = [self._inflight] if self._inflight is not None else []
            leftover.extend(self._take_queue())
            for item in leftover:
                self._writer.offer(item)
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(0.2)
        on_disk = self._writer.finish(self.settings.spool_wait_s)
        spool = self._spool
        pending = spool.count if spool is not None else 0
        if not on_disk:
            logger.error(
                "sedmon: the disk is slow: %d item(s) are not in the spool yet after %.0f s "
                "(SEDMON_SPOOL_WAIT_S); they are lost if the process exits before",
                self._writer.held(),
                self.settings.spool_wait_s,
            )
        if pending:
            logger.warning(
                "sedmon: %d item(s) not delivered are kept in %s; run `sedmon sync` to send them",
                pending,
                spool.directory if spool else "",
            )
        if self.dropped:
            logger.error(
                "sedmon: %d item(s) were dropped: the send queue was full and %.3g MB "
                "(SEDMON_OVERFLOW_MB) already waited for the disk",
                self.dropped,
                self.settings.overflow_mb,
            )
        return settled and on_disk and not pending

    @property
    def offline(self) -> bool:
        return self._offline

    @property
    def spool(self) -> Spool | None:
        return self._spool

    def _take_queue(self) -> list[Item]:
        items: list[Item] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    # -- background threads -----------------------------------------------------------------

    def _after_write(self) -> None:
        """From the spool thread, after each batch: the sender may go on; and the lines
        about a full queue are written from here too (the sender may be stuck posting)."""
        self._wake.set()
        self._report_overflow()

    def _background_exit(self) -> None:
        """The last of the two threads to end closes the spool (and removes it when empty)."""
        with self._state:
            self._running -= 1
            last = self._running <= 0
        spool = self._spool
        if last and spool is not None:
            with contextlib.suppress(Exception):
                spool.close(remove_if_done=True)

    def _get_spool(self) -> Spool:
        with self._spool_lock:
            if self._spool is None:
                spool = self.spool_type.create(self.spool_root, self.server, self.run_spec)
                if not spool.try_lock():
                    logger.warning("sedmon: spool %s is in use by another process", spool.directory)
                self._spool = spool
            return self._spool

    def _drain_queue_to_spool(self) -> None:
        """Hand the queue to the spool writer, when the writer is idle: one queue's worth in
        its memory at a time (a slow disk leaves the rest in the bounded queue)."""
        with self._state:
            if self._stopped.is_set() or not self._writer.idle():
                return  # close() has taken the queue, or the disk has not caught up
            for item in self._take_queue():
                self._writer.offer(item)

    def _oldest_in_memory(self) -> int | None:
        """The smallest sequence number still in the queue or the spool writer's hands."""
        with self._queue.mutex:  # a copy under the lock, the scan outside it
            items = list(self._queue.queue)
        queued = min((i.seq for i in items), default=None)
        writing = self._writer.oldest()
        return min((s for s in (queued, writing) if s is not None), default=None)

    def _settled(self) -> bool:
        """Nothing queued, in flight or waiting for the disk, and delivered or (offline)
        spooled. The sender thread's view; published to `flush` by `_publish`."""
        if not self._queue.empty() or self._inflight is not None or not self._writer.idle():
            return False
        if self._fatal:
            return True
        if self._offline:  # all is spooled; when closing, after one last probe
            # that was refused, or until finish's bound (a slow server is waited for)
            if not self._closing:
                return True
            refused = self._conn is None or self._conn.refused
            late = time.monotonic() >= self._close_deadline
            return self._close_probe_done and (refused or late)
        spool = self._spool
        return spool is None or not spool.has_pending()

    def _publish(self) -> None:
        with self._state:
            seen = self._submitted  # every item counted here is visible to _settled
        settled = self._settled()
        with self._settle:
            self._settled_at = seen if settled else -1
            self._settle.notify_all()

    def _report_overflow(self) -> None:
        """The training thread only counts; the lines about it are written from here (by
        whichever background thread comes first; rate-limited)."""
        with self._report_lock:
            overflowed, dropped = self.overflowed, self.dropped
            reported, self._reported = self._reported, (overflowed, dropped)
        if (overflowed, dropped) == reported:
            return
        if overflowed != reported[0]:
            problem(
                logging.WARNING,
                "full",
                "sedmon: send queue full (%d items); %d item(s) so far went to the spool instead",
                self.settings.queue_size,
                overflowed,
            )
        if dropped != reported[1]:
            problem(
                logging.ERROR,
                "dropped",
                "sedmon: %d item(s) dropped so far: the send queue is full and %.3g MB "
                "(SEDMON_OVERFLOW_MB) already wait for a slow disk",
                dropped,
                self.settings.overflow_mb,
            )

    def _main(self) -> None:
        try:
            self._conn = Connection(self.server, self.token, self.settings, self._stopped)
            folder = self.spool_root / run_folder_name(
                self.server, self.run_spec["project"], self.run_spec["name"]
            )
            if (folder / "run.json").exists():  # a previous process left items: replay first
                self._get_spool()
            while not self._stopped.is_set():
                self._tick()
                worked = self._step()
                self._report_overflow()
                self._publish()
                if not worked:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except Exception as exc:  # the sender must never take the process down
            logger.error("sedmon: sender stopped by an unexpected error: %r", exc)
            self._fatal = f"sender error: {exc!r}"
            with contextlib.suppress(Exception):
                self._drain_queue_to_spool()
        finally:
            if self._conn is not None:
                self._conn.close()
            with contextlib.suppress(Exception):
                self._publish()
            self._background_exit()

    def _tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick()
        except Exception as exc:
            problem(logging.WARNING, "tick", "sedmon: periodic metrics flush failed: %r", exc)

    def _step(self) -> bool:
        """Do one unit of work; False when there was nothing to do.

        Items are posted directly only while nothing older can be elsewhere: the spool
        writer idle (checked first: what it wrote is in the spool's index by then) and the
        spool empty. Otherwise the queue goes to the spool too, and the spool is replayed
        in sequence order: its head is posted once nothing older is still in memory (on its
        way to the disk).
        """
        if self._fatal:
            self._drain_queue_to_spool()
            return False
        writing = not self._writer.idle()
        spool = self._spool
        if self._offline or writing or (spool is not None and spool.has_pending()):
            self._drain_queue_to_spool()
            if self._offline and time.monotonic() < self._next_probe:
                return False
            try:
                spool = self._get_spool()
            except OSError as exc:
                problem(logging.ERROR, "spool", "sedmon: cannot open the spool (%s)", exc)
                return False
            head, oldest = spool.head(), self._oldest_in_memory()
            if oldest is not None and (head is None or oldest < head.seq):
                return False  # the writer wakes this thread when its batch is on disk
            return self._replay_one(spool)
        with self._state:
            if self._stopped.is_set():
                return False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            self._inflight = item
        outcome = self._deliver(item)
        with self._state:
            self._inflight = None
            spooled = outcome is Outcome.UNREACHABLE and not self._abandoned
            if spooled:
                self._writer.offer(item)
        if spooled:
            self._go_offline()
        return True

    def _replay_one(self, spool: Spool) -> bool:
        entry = spool.head()
        if entry is None:
            self._offline = False
            return False
        try:
            body = spool.read(entry)
        except (OSError, ValueError) as exc:
            problem(logging.ERROR, "spoolread", "sedmon: skipping unreadable spool record: %s", exc)
            spool.ack(entry.seq)
            return True
        outcome = self._deliver(Item(entry.seq, entry.kind, body))
        if self._closing:
            self._close_probe_done = True
        if outcome is Outcome.UNREACHABLE:
            self._go_offline()
        else:
            spool.ack(entry.seq)
            if self._offline:
                logger.info("sedmon: server reachable again; replaying the spool")
            self._offline = False
            self._probe_backoff = self.settings.base_backoff_s
        return True

    def _go_offline(self) -> None:
        if not self._offline:
            problem(
                logging.WARNING,
                "offline",
                "sedmon: %s unreachable; spooling to disk and retrying in the background",
                self.server,
            )
        self._offline = True
        hint = self._conn.retry_after_hint if self._conn else None
        wait = hint if hint is not None else random.uniform(0.5, 1.0) * self._probe_backoff
        self._next_probe = time.monotonic() + (min(wait, 0.5) if self._closing else wait)
        self._probe_backoff = min(self.settings.max_backoff_s, self._probe_backoff * 2)

    def _deadline(self) -> Callable[[], float]:
        """When to stop retrying the item about to be posted, asked again while waiting.

        Offline probes are single tries. Once finish() waits, its bound caps the retries,
        and a server that refuses connections is not waited for at all.
        """
        start = time.monotonic()
        offline = self._offline

        def limit() -> float:
            if offline:
                return start
            end = start + self.settings.retry_budget_s
            if self._closing:
                if self._conn is not None and self._conn.refused:
                    return start
                end = min(end, self._close_deadline)
            return end

        return limit

    def _ensure_run(self) -> bool:
        if self.run_id is not None:
            return True
        assert self._conn is not None
        outcome, response = self._conn.post(f"{API}/runs", self.run_spec, self._deadline())
        if outcome is Outcome.OK and response is not None:
            self.run_id = int(response.json()["id"])
            logger.info("sedmon: run %s/%s is id %d", *self._names(), self.run_id)
            return True
        if outcome is Outcome.FINAL and response is not None:
            code = response.status_code
            if code in RUN_FATAL:
                self._fatal = f"{code}: {detail(response)}"
                hint = {
                    401: "check token= or SEDMON_TOKEN",
                    403: "the token lacks the ingest scope for this project",
                    409: "a run with this name exists with another spec; choose another name=",
                }.get(code, "")
                logger.error(
                    "sedmon: the server refused to create run %s/%s (%s)%s; checkpoints are kept "
                    "in the spool for `sedmon sync`",
                    *self._names(),
                    self._fatal,
                    f": {hint}" if hint else "",
                )
        return False

    def _names(self) -> tuple[str, str]:
        return str(self.run_spec["project"]), str(self.run_spec["name"])

    def _deliver(self, item: Item) -> Outcome:
        try:
            return self._post_item(item)
        except Unsendable as exc:
            self.rejected += 1
            problem(
                logging.ERROR,
                "unsendable",
                "sedmon: %s at step %s cannot be serialised (%s); dropped",
                item.kind,
                item.body.get("step"),
                exc,
            )
            return Outcome.FINAL

    def _post_item(self, item: Item) -> Outcome:
        if not self._ensure_run():
            return Outcome.UNREACHABLE
        assert self._conn is not None and self.run_id is not None
        if item.kind == "metrics_batch" and not self._server_batches_metrics:
            return self._deliver_points_one_by_one(item)
        outcome, response = self._conn.post(
            item_path(self.run_id, item.kind), item.body, self._deadline()
        )
        if item.kind == "metrics_batch" and outcome is Outcome.FINAL and _no_route(response):
            logger.info("sedmon: the server has no metrics batch endpoint; posting step by step")
            self._server_batches_metrics = False
            return self._deliver_points_one_by_one(item)
        if outcome is Outcome.OK:
            self.delivered += 1
            if item.kind == "checkpoint" and response is not None and self.on_checkpoint_ack:
                try:
                    self.on_checkpoint_ack(response.json())
                except Exception as exc:
                    problem(logging.WARNING, "ack", "sedmon: unreadable checkpoint ack: %r", exc)
        elif outcome is Outcome.FINAL:
            self.rejected += 1
            self._report_final(item, response)
        return outcome

    def _deliver_points_one_by_one(self, item: Item) -> Outcome:
        """A batch to a server older than `POST /metrics:batch`: one post per step. When the
        server becomes unreachable half way the whole batch is retried later (idempotent)."""
        assert self._conn is not None and self.run_id is not None
        for point in item.body.get("points", []):
            single = Item(item.seq, "metrics", point)
            outcome, response = self._conn.post(
                item_path(self.run_id, "metrics"), point, self._deadline()
            )
            if outcome is Outcome.UNREACHABLE:
                return outcome
            if outcome is Outcome.FINAL:
                self.rejected += 1
                self._report_final(single, response)
        self.delivered += 1
        return Outcome.OK

    def _report_final(self, item: Item, response: httpx.Response | None) -> None:
        code = response.status_code if response is not None else 0
        step = item.body.get("step")
        points = item.body.get("points")
        if item.kind == "metrics_batch" and isinstance(points, list) and points:
            steps = [
                p["step"] for p in points if isinstance(p, dict) and isinstance(p.get("step"), int)
            ]
            step = f"{min(steps)}..{max(steps)}" if steps else "?"
        if item.kind == "metrics_batch":
            msg = f"sedmon: metrics of steps %s refused ({code}: %s); that batch is dropped"
        elif item.kind == "checkpoint" and code == 409:
            msg = (
                "sedmon: checkpoint at step %s refused (409: %s): "
                "the run already has this step or a later one"
            )
        elif item.kind == "checkpoint" and code == 422:
            msg = "sedmon: checkpoint at step %s refused (422: %s)"
        else:
            msg = f"sedmon: {item.kind} at step %s refused ({code}: %s)"
        problem(logging.WARNING, f"final{item.kind}{code}", msg, step, detail(response))
