"""Wiring of the alerts into the app: settings, the observer, the background threads.

`install(app)` (called by `create_app` for the `sedmon_server.alerts` extension) puts an
`AlertsService` on `app.state.alerts`, appends its engine to `app.state.observers`, sets
`app.state.firing_alerts`, mounts the routers and wraps the app's lifespan so the
dispatcher and the stalled sweep run while the app serves. Tests may replace
`app.state.alerts.config` (or set SEDMON_ALERTS_* variables) before the app starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from sedmon_server.alerts.dispatcher import DeliveryPolicy, Dispatcher
from sedmon_server.alerts.engine import AlertEngine, firing_counts
from sedmon_server.alerts.sweep import sweep_stalled

log = logging.getLogger(__name__)


class AlertsConfig(BaseSettings):
    """Environment: SEDMON_ALERTS_DISPATCH, SEDMON_ALERTS_SWEEP_INTERVAL_S, ..."""

    model_config = SettingsConfigDict(env_prefix="SEDMON_ALERTS_", extra="ignore")

    dispatch: bool = True
    """Run the dispatcher in this process (every process may: the outbox is shared safely)."""
    poll_s: float = Field(default=1.0, gt=0)
    sweep: bool = True
    sweep_interval_s: float = Field(default=30.0, gt=0)
    base_s: float = Field(default=2.0, gt=0)
    cap_s: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=15, ge=1)
    retry_after_cap_s: float = Field(default=6 * 3600.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)

    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            base_s=self.base_s,
            cap_s=self.cap_s,
            max_attempts=self.max_attempts,
            retry_after_cap_s=self.retry_after_cap_s,
            timeout_s=self.timeout_s,
            lease_s=self.lease_s,
        )


class _Sweeper:
    def __init__(self, run: Callable[[], Any], interval_s: float) -> None:
        self.run = run
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sedmon-stalled-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run()
            except Exception:
                log.exception("stalled sweep failed")


class AlertsService:
    """The engine (observer), and the dispatcher and sweep threads while the app runs."""

    def __init__(
        self,
        engine: Engine,
        base_url: str,
        config: AlertsConfig | None = None,
        record: Callable[[str, str], None] | None = None,
    ) -> None:
        self.db = engine
        self.config = config or AlertsConfig()
        self.engine = AlertEngine(base_url, wake=self._wake, record=record)
        self.dispatcher: Dispatcher | None = None
        self.sweeper: _Sweeper | None = None

    def _wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def new_dispatcher(self) -> Dispatcher:
        return Dispatcher(self.db, self.config.policy(), self.config.poll_s)

    def start(self) -> None:
        if self.config.dispatch and self.dispatcher is None:
            self.dispatcher = self.new_dispatcher()
            self.dispatcher.start()
        if self.config.sweep and self.sweeper is None:
            self.sweeper = _Sweeper(self.sweep_once, self.config.sweep_interval_s)
            self.sweeper.start()

    def stop(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
            self.sweeper = None
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher = None

    def sweep_once(self) -> int:
        return sweep_stalled(self.db, self.engine)


def install(app: FastAPI) -> None:
    """Hook the alerts into an app made by sedmon_server.app.create_app."""
    from sedmon_server.alerts import api

    state: Any = app.state
    observability = getattr(state, "observability", None)
    record = getattr(observability, "record_alert", None)
    service = AlertsService(state.engine, state.settings.public_base_url, record=record)
    state.alerts = service
    state.observers.append(service.engine)
    state.firing_alerts = firing_counts
    for router in api.routers:
        app.include_router(router)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        service.start()
        try:
            async with inner(application) as value:
                yield value
        finally:
            service.stop()

    app.router.lifespan_context = lifespan
