"""Prometheus metrics of one server process (GET /metrics, text format).

Each process keeps its own registry; scrape every replica (the compose file's proxy
balances API traffic, Prometheus should scrape the replicas directly). Per-run gauges are
bounded: only runs this process ingested within `active_run_seconds`, at most
`max_gauge_runs` of them (the most recent), are reported; older ones are dropped.

Hook for the alerts engine: `app.state.observability.record_alert(rule, state)` counts
alert transitions in `sedmon_alerts_total{rule, state}`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass
class _RunEdge:
    project: str
    name: str
    gap_ratio: float
    signal_rank: int
    seen: float


class _RunGauges(Collector):
    def __init__(self, owner: Observability) -> None:
        self.owner = owner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["run_id", "project", "run"]
        gap = GaugeMetricFamily(
            "sedmon_run_gap_ratio", "Latest gap ratio (group all, smallest window)", labels=labels
        )
        rank = GaugeMetricFamily(
            "sedmon_run_signal_rank",
            "Latest signal rank (group all, smallest window)",
            labels=labels,
        )
        active = GaugeMetricFamily("sedmon_active_runs", "Runs reported by the per-run gauges")
        runs = self.owner.active_runs()
        for run_id, edge in runs:
            lv = [str(run_id), edge.project, edge.name]
            gap.add_metric(lv, edge.gap_ratio)
            rank.add_metric(lv, edge.signal_rank)
        active.add_metric([], len(runs))
        yield gap
        yield rank
        yield active


class Observability:
    """The metrics of one app: counters, the ingest latency histogram, per-run gauges."""

    def __init__(self, active_run_seconds: float = 3600.0, max_runs: int = 1000) -> None:
        self.registry = CollectorRegistry()
        self.active_run_seconds = active_run_seconds
        self.max_runs = max_runs
        self._edges: dict[int, _RunEdge] = {}
        self._lock = threading.Lock()
        self.checkpoints = Counter(
            "sedmon_ingest_checkpoints",
            "Checkpoints handled, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sedmon_ingest_seconds",
            "Ingest request latency (seconds)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.metric_points = Counter(
            "sedmon_ingest_metric_values", "Metric values stored", registry=self.registry
        )
        self.alerts = Counter(
            "sedmon_alerts", "Alert state transitions", ["rule", "state"], registry=self.registry
        )
        self.registry.register(_RunGauges(self))

    def record_edge(
        self, run_id: int, project: str, name: str, gap_ratio: float, signal_rank: int
    ) -> None:
        with self._lock:
            self._edges[run_id] = _RunEdge(project, name, gap_ratio, signal_rank, time.monotonic())
            if len(self._edges) > 2 * self.max_runs:
                self._prune()

    def forget_run(self, run_id: int) -> None:
        with self._lock:
            self._edges.pop(run_id, None)

    def record_alert(self, rule: str, state: str) -> None:
        self.alerts.labels(rule=rule, state=state).inc()

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.active_run_seconds
        fresh = [(rid, e) for rid, e in self._edges.items() if e.seen >= cutoff]
        fresh.sort(key=lambda item: item[1].seen, reverse=True)
        self._edges = dict(fresh[: self.max_runs])

    def active_runs(self) -> list[tuple[int, _RunEdge]]:
        with self._lock:
            self._prune()
            return list(self._edges.items())

    def render(self) -> bytes:
        return generate_latest(self.registry)
