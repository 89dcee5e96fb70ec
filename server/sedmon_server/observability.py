"""Prometheus metrics of a server (GET /metrics, text format).

One process (the default, tests, `serve --workers 1`): each app keeps its own registry.

Several workers (`sedmon-server serve --workers N`, N > 1): `serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh private directory before the workers start, so
prometheus_client keeps the counters and the histogram in per-process files there, and
any worker's /metrics renders them summed over every worker, dead ones included (counters
never go backwards). The per-run gauges are not prometheus_client gauges (they could not
forget a run): each worker mirrors its latest edge of a run in a small file
`runs/<run_id>_<pid>.json` of that directory, written by a flusher thread every
FLUSH_SECONDS (not at each checkpoint), and /metrics merges them with its own worker's
edges: per run, the edge of the highest step (then the latest time) wins, so another
worker's edge is at most FLUSH_SECONDS old. The worker that finishes a run removes its
files and leaves a tombstone `runs/<run_id>.finished` (the time) that outranks every edge
recorded before it, wherever it is still held or flushed late. A run is reported while
some worker ingested it within `active_run_seconds`, at most `max_gauge_runs` of them (the
most recent); files and tombstones older than that are removed when seen. Each worker
bounds its own files the same way.

Per-run gauges are bounded either way: only runs ingested within `active_run_seconds`,
at most `max_runs` (the most recent), are reported; older ones are dropped.

Hook for the alerts engine: `app.state.observability.record_alert(rule, state)` counts
alert transitions in `sedmon_alerts_total{rule, state}`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS = 0.5
"""How often a worker writes the per-run edges it recorded to the shared directory (a file
write per checkpoint cost the served ingest a fifth of its throughput)."""
_FINISHED = ".finished"


@dataclass
class _RunEdge:
    project: str
    name: str
    gap_ratio: float
    signal_rank: int
    seen: float  # time.time() of the ingest
    step: int = -1  # -1: unknown


def multiproc_dir() -> Path | None:
    """The shared metrics directory of a multi-worker `serve`, None in a lone process."""
    path = os.environ.get(MULTIPROC_ENV)
    return Path(path) if path and os.path.isdir(path) else None


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
        runs = self.owner.reported_runs()
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
        self._dirty: set[int] = set()
        self._flusher: threading.Thread | None = None
        self._lock = threading.Lock()
        self.shared = multiproc_dir()
        self._runs_dir = self.shared / "runs" if self.shared is not None else None
        if self._runs_dir is not None:
            self._runs_dir.mkdir(exist_ok=True)
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
        self,
        run_id: int,
        project: str,
        name: str,
        gap_ratio: float,
        signal_rank: int,
        step: int = -1,
    ) -> None:
        edge = _RunEdge(project, name, gap_ratio, signal_rank, time.time(), step)
        with self._lock:
            old = self._edges.get(run_id)
            if old is not None and old.step > step:  # a later step got here first
                return
            self._edges[run_id] = edge
            if self._runs_dir is not None:
                self._dirty.add(run_id)
                self._start_flusher()
            if len(self._edges) > 2 * self.max_runs:
                self._prune()

    def forget_run(self, run_id: int) -> None:
        with self._lock:
            self._edges.pop(run_id, None)
            if self._runs_dir is None:
                return
            self._dirty.discard(run_id)
            # Other workers may still hold this run's edge in memory, or write its file once
            # more: the tombstone outranks every edge seen before it.
            (self._runs_dir / f"{run_id}{_FINISHED}").write_text(repr(time.time()))
            for path in self._runs_dir.glob(f"{run_id}_*.json"):
                path.unlink(missing_ok=True)

    def record_alert(self, rule: str, state: str) -> None:
        self.alerts.labels(rule=rule, state=state).inc()

    # -- several workers: each mirrors its edges in files, batched --------------------------

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="sedmon-metrics-flush", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except OSError:  # the directory went away with the server: nothing to report to
                return

    def flush(self) -> None:
        """Write this worker's edges recorded since the last flush, one file per run."""
        with self._lock:
            dirty = {rid: self._edges[rid] for rid in self._dirty if rid in self._edges}
            self._dirty.clear()
        for run_id, edge in dirty.items():
            path = self._run_file(run_id)
            assert path is not None
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(asdict(edge)))
            os.replace(tmp, path)

    def _run_file(self, run_id: int) -> Path | None:
        if self._runs_dir is None:
            return None
        return self._runs_dir / f"{run_id}_{os.getpid()}.json"

    def _prune(self) -> None:
        cutoff = time.time() - self.active_run_seconds
        fresh = [(rid, e) for rid, e in self._edges.items() if e.seen >= cutoff]
        fresh.sort(key=lambda item: item[1].seen, reverse=True)
        kept = dict(fresh[: self.max_runs])
        for rid in self._edges.keys() - kept.keys():
            self._dirty.discard(rid)
            path = self._run_file(rid)
            if path is not None:
                path.unlink(missing_ok=True)
        self._edges = kept

    def active_runs(self) -> list[tuple[int, _RunEdge]]:
        """The runs this process reports (its own ingests), pruned."""
        with self._lock:
            self._prune()
            return list(self._edges.items())

    def reported_runs(self) -> list[tuple[int, _RunEdge]]:
        """The runs /metrics reports: this process's, or every worker's when shared (the
        files of the others, at most FLUSH_SECONDS old, and this worker's own memory)."""
        if self._runs_dir is None:
            return self.active_runs()
        return self._shared_runs(self._runs_dir, self.active_runs())

    def _shared_runs(
        self, runs_dir: Path, own: list[tuple[int, _RunEdge]]
    ) -> list[tuple[int, _RunEdge]]:
        now = time.time()
        cutoff = now - self.active_run_seconds
        finished: dict[int, float] = {}
        for path in runs_dir.glob(f"*{_FINISHED}"):
            try:
                at = float(path.read_text())
                run_id = int(path.name[: -len(_FINISHED)])
            except (FileNotFoundError, ValueError):
                continue
            if at < cutoff:  # no edge that old is reported anyway
                path.unlink(missing_ok=True)
            else:
                finished[run_id] = at
        latest: dict[int, _RunEdge] = {}

        def consider(run_id: int, edge: _RunEdge) -> bool:
            if edge.seen < cutoff or edge.seen <= finished.get(run_id, -1.0):
                return False
            old = latest.get(run_id)
            if old is None or (edge.step, edge.seen) > (old.step, old.seen):
                latest[run_id] = edge
            return True

        for path in runs_dir.glob("*.json"):
            try:
                run_id = int(path.stem.rsplit("_", 1)[0])
                edge = _RunEdge(**json.loads(path.read_text()))
            except FileNotFoundError:  # finished or pruned meanwhile
                continue
            except (ValueError, TypeError):  # not ours, or half-written by a dead worker
                continue
            if not consider(run_id, edge):
                path.unlink(missing_ok=True)
        for run_id, edge in own:
            if not consider(run_id, edge):
                with self._lock:
                    if self._edges.get(run_id) is edge:
                        del self._edges[run_id]
                        self._dirty.discard(run_id)
        runs = sorted(latest.items(), key=lambda item: item[1].seen, reverse=True)
        return runs[: self.max_runs]

    def render(self) -> bytes:
        if self.shared is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.shared))
        registry.register(_RunGauges(self))
        return generate_latest(registry)
