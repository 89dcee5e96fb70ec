"""Delivery of outbox messages to webhooks: at least once, with retries.

A message is claimed in a short transaction (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
several server processes share the outbox without delivering one message twice at
once; SQLite: one process) by pushing its `next_attempt_at` a lease ahead; it is then
POSTed outside any transaction, and the result recorded. A process that dies mid-send
leaves the message due again when the lease ends: at least once, never lost.

Outcomes: 2xx delivered. 410 Gone: the webhook is disabled, the message failed and the
webhook's other pending messages cancelled. Anything else (other status, timeout,
refused connection) retries after min(cap, base x 2^(attempt-1)) x U(0.5, 1) seconds
(exponential backoff, "equal jitter"), or after Retry-After when that is longer (capped
at retry_after_cap_s); after max_attempts the message is failed. Every attempt is a
`webhook_deliveries` row. The body and the webhook-id are the same on every attempt;
webhook-timestamp and webhook-signature are those of the attempt (Standard Webhooks).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select, update

from sedmon_server.alerts.signing import signed_headers
from sedmon_server.alerts.tables import alert_outbox, webhook_deliveries, webhooks

log = logging.getLogger(__name__)

USER_AGENT = "sedmon-alerts/0.1"


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retry schedule and timing of delivery; defaults documented in docs/alerts.md."""

    base_s: float = 2.0
    cap_s: float = 3600.0
    max_attempts: int = 15
    retry_after_cap_s: float = 6 * 3600.0
    timeout_s: float = 10.0
    lease_s: float = 60.0
    batch: int = 50
    workers: int = 4


def backoff_s(
    policy: DeliveryPolicy, attempt: int, retry_after_s: float | None, rng: random.Random
) -> float:
    """Delay before the next attempt after `attempt` failed ones (attempt >= 1)."""
    delay = min(policy.cap_s, policy.base_s * 2.0 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.retry_after_cap_s))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass(frozen=True)
class _Claimed:
    id: int
    webhook_id: int
    message_id: str
    body: bytes
    attempts: int
    url: str
    secret: str | None
    enabled: bool


@dataclass(frozen=True)
class _Result:
    status_code: int | None
    error: str | None
    retry_after_s: float | None
    duration_ms: int


class Dispatcher:
    """Delivers due outbox messages; `start()` runs it in a daemon thread until `stop()`."""

    def __init__(
        self,
        engine: Engine,
        policy: DeliveryPolicy | None = None,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy or DeliveryPolicy()
        self.poll_s = poll_s
        self.clock = clock
        self._rng = random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(
            timeout=self.policy.timeout_s, transport=transport, headers={"user-agent": USER_AGENT}
        )
        self._pool = ThreadPoolExecutor(
            max_workers=self.policy.workers, thread_name_prefix="sedmon-webhook"
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sedmon-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._pool.shutdown(wait=True)
        self._client.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:
                log.exception("webhook dispatcher pass failed")
                handled = 0
            if handled == 0:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    # -- one pass --------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim due messages, deliver them, record the outcomes; returns how many."""
        claimed = self._claim()
        if not claimed:
            return 0
        results = list(self._pool.map(self._deliver, claimed))
        for item, result in zip(claimed, results, strict=True):
            self._record(item, result)
        return len(claimed)

    def _claim(self) -> list[_Claimed]:
        now = self.clock()
        o, w = alert_outbox, webhooks
        with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
            q = (
                select(
                    o.c.id,
                    o.c.webhook_id,
                    o.c.message_id,
                    o.c.body,
                    o.c.attempts,
                    w.c.url,
                    w.c.secret,
                    w.c.enabled,
                )
                .join(w, w.c.id == o.c.webhook_id)
                .where(o.c.status == "pending", o.c.next_attempt_at <= _utc(now))
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(self.policy.batch)
            )
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(of=o, skip_locked=True)
            rows = conn.execute(q).all()
            if not rows:
                return []
            conn.execute(
                update(o)
                .where(o.c.id.in_([r.id for r in rows]))
                .values(next_attempt_at=_utc(now + self.policy.lease_s))
            )
        return [
            _Claimed(
                int(r.id),
                int(r.webhook_id),
                str(r.message_id),
                bytes(r.body),
                int(r.attempts),
                str(r.url),
                r.secret,
                bool(r.enabled),
            )
            for r in rows
        ]

    def _deliver(self, item: _Claimed) -> _Result:
        if not item.enabled:
            return _Result(None, "webhook disabled", None, 0)
        started = time.perf_counter()
        timestamp = int(self.clock())
        headers: dict[str, Any] = {
            "content-type": "application/json",
            **signed_headers(item.secret, item.message_id, timestamp, item.body),
        }
        try:
            response = self._client.post(item.url, content=item.body, headers=headers)
        except httpx.HTTPError as exc:
            ms = int(1000 * (time.perf_counter() - started))
            return _Result(None, f"{type(exc).__name__}: {exc}"[:500], None, ms)
        ms = int(1000 * (time.perf_counter() - started))
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        error = (
            None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"
        )
        return _Result(response.status_code, error, retry_after, ms)

    def _record(self, item: _Claimed, result: _Result) -> None:
        now = self.clock()
        o = alert_outbox
        attempts = item.attempts + (1 if item.enabled else 0)
        code = result.status_code
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_status_code": code,
            "last_error": result.error,
        }
        if not item.enabled:
            values.update(status="cancelled")
        elif code is not None and 200 <= code < 300:
            values.update(status="delivered", delivered_at=_utc(now))
        elif code == 410 or attempts >= self.policy.max_attempts:
            values.update(status="failed")
        else:
            delay = backoff_s(self.policy, attempts, result.retry_after_s, self._rng)
            values.update(next_attempt_at=_utc(now + delay))
        with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
            if item.enabled:
                conn.execute(
                    insert(webhook_deliveries).values(
                        outbox_id=item.id,
                        attempted_at=_utc(now),
                        status_code=code,
                        error=result.error,
                        duration_ms=result.duration_ms,
                    )
                )
            conn.execute(
                update(o).where(o.c.id == item.id, o.c.status == "pending").values(**values)
            )
            if code == 410:
                conn.execute(
                    update(webhooks)
                    .where(webhooks.c.id == item.webhook_id)
                    .values(enabled=False, disabled_reason="410 Gone from the receiver")
                )
                conn.execute(
                    update(o)
                    .where(
                        o.c.webhook_id == item.webhook_id,
                        o.c.status == "pending",
                        o.c.id != item.id,
                    )
                    .values(status="cancelled", last_error="webhook disabled (410 Gone)")
                )
        if code == 410:
            log.warning("webhook %s answered 410 Gone: disabled", item.webhook_id)
