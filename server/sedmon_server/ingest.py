"""Ingest: one checkpoint, one transaction, serialised per run.

For each checkpoint (DESIGN.md, "Data flow", step 3):

1. lock the run row and read its group state, one statement (PostgreSQL `SELECT ... FOR
   UPDATE OF runs`; SQLite `BEGIN IMMEDIATE`);
2. check it: groups and lengths (422), finite numbers (422, plus a `non_finite` run event
   in a transaction of its own), values within +-MAX_SKETCH_VALUE (422), the step against
   the last one (idempotent on (run, step): same payload 200, different payload 409, a
   step not after the last 409); a run id beyond BIGINT is an unknown run (404);
3. per group, delta = position - previous position (float64); its dot products with the
   last W_max - 1 stored deltas; `roll_gram`; group "all" = the sum of the group Grams
   when the run has named groups (groups are disjoint blocks of the parameters);
4. `window_spectra` for every configured window, every group and "all" (a delta, Gram or
   spectrum that overflows to non-finite numbers refuses the checkpoint: 422, nothing
   written, whatever got past the value cap); store them, the checkpoint (digest,
   positions, dot row) and its metrics; update the run and its O(W_max k) group state,
   one statement on PostgreSQL (`ingest_store`). Nothing reads the run's history.

Observers (the alerts engine's hook). Anything passed to `create_app(observers=[...])`
implementing `CheckpointObserver` is called inside the ingest transaction. An observer that
raises is logged and its work rolled back alone, never the checkpoint:
- the first attempt runs the observers with no savepoint (a subtransaction that writes
  cost the served ingest about a tenth of its throughput, bench/ingest.py);
- when an observer raises there, the whole transaction is rolled back and the call done
  again, each observer call in a SAVEPOINT (the first one travels with the writes, the
  commit releases the last one); the observer that failed is then rolled back alone.
So on that rare path the observers called before the failure are called again for the
same checkpoints: their first calls' database writes were rolled back, but what they did
outside the transaction (a counter, a log line) is not.
Observers run after the call's rows are written (for a batch: all of them), once per new
checkpoint in step order; a re-sent checkpoint (200) is not observed again.

    class CheckpointObserver(Protocol):
        def on_checkpoint(self, conn: Connection, run: Mapping[str, Any], step: int,
                          spectra: Mapping[tuple[str, int], WindowSpectrum],
                          metrics: Mapping[str, float]) -> None: ...
        def on_non_finite(self, conn: Connection, run: Mapping[str, Any], step: int,
                          details: Mapping[str, Any]) -> None: ...

`run` is the run row after this checkpoint (last_step == step); `spectra` maps (group,
window) to the new spectrum (empty for the first checkpoint, which has no delta);
`on_non_finite` runs in the transaction that records the rejected checkpoint's
`run_events` row (kind "non_finite"; details: the groups and metric names holding
non-finite numbers and their count).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
from sqlalchemy import Connection, Engine, select

from sedmon_core.phases import current_phase
from sedmon_core.schemas import (
    ALL_GROUP,
    MAX_IDENTITY_DIM,
    MAX_SKETCH_VALUE,
    CheckpointAck,
    CheckpointIn,
    EdgeSummary,
    Phase,
)
from sedmon_core.spectrum import WindowSpectrum, roll_gram, window_spectra
from sedmon_server import tables
from sedmon_server.ingest_store import IngestRows, lock_run, lock_run_with_state, write_rows
from sedmon_server.runs_store import can_exist

log = logging.getLogger(__name__)

PHASE_HISTORY = 128
"""Recent gap ratios per window kept on the run row for the live phase (bounded work)."""
PHASE_MIN_POINTS = 3
"""Below this many windows the phase is "warmup"."""
OBSERVER_SAVEPOINT = "sedmon_observer"
"""The savepoint around each observer call once an observer has failed (see the module
docstring): opened in the round trip that writes the rows, rolled back to when the observer
raises, left for the commit to release after the last call."""


@runtime_checkable
class CheckpointObserver(Protocol):
    """Called inside ingest transactions; see the module docstring."""

    def on_checkpoint(
        self,
        conn: Connection,
        run: Mapping[str, Any],
        step: int,
        spectra: Mapping[tuple[str, int], WindowSpectrum],
        metrics: Mapping[str, float],
    ) -> None: ...

    def on_non_finite(
        self, conn: Connection, run: Mapping[str, Any], step: int, details: Mapping[str, Any]
    ) -> None: ...


class IngestError(Exception):
    """A checkpoint refused: HTTP status and detail; nothing was written."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class _ObserverFailed(Exception):
    """An observer raised in a call made without savepoints: do the call again with them."""


class NonFiniteError(IngestError):
    def __init__(self, step: int, details: dict[str, Any], detail: str) -> None:
        super().__init__(422, detail)
        self.step = step
        self.details = details


@dataclass
class IngestOutcome:
    """What one ingest call did; `edges` feeds the per-run Prometheus gauges."""

    acks: list[CheckpointAck]
    created: int
    unchanged: int
    run: Mapping[str, Any] = field(default_factory=dict)


_NOT_FINITE = (
    "{what} overflow to non-finite numbers (sketch values too large?): the checkpoint is refused"
)


def _finite_spectrum(sp: WindowSpectrum) -> bool:
    """Whether every number of a window spectrum is finite (storable, comparable)."""
    scalars = (
        sp.gap_ratio,
        sp.additive_gap,
        sp.edge_strength,
        sp.total_variance,
        sp.effective_rank,
        sp.pc1_share,
        sp.drift_speed,
    )
    return (
        all(math.isfinite(v) for v in scalars)
        and bool(np.isfinite(sp.sigma).all())
        and bool(np.isfinite(sp.ratios).all())
    )


def _f64(blob: bytes | None, shape: tuple[int, ...]) -> np.ndarray:
    if not blob:
        return np.zeros(shape, dtype=np.float64)
    return np.frombuffer(blob, dtype=np.float64).reshape(shape).copy()


def payload_digest(
    step: int, groups: Sequence[str], arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float]
) -> str:
    """sha256 of the checkpoint's content: step, float64 positions per group, metrics."""
    h = hashlib.sha256(f"step={step}".encode())
    for g in groups:
        h.update(f"|group={g}|".encode())
        h.update(np.ascontiguousarray(arrays[g], dtype="<f8").tobytes())
    for name in sorted(metrics):
        h.update(f"|metric={name}={float(metrics[name])!r}".encode())
    return h.hexdigest()


@dataclass
class _GroupState:
    position: np.ndarray
    deltas: np.ndarray  # (m, k), oldest first, m <= W_max - 1
    gram: np.ndarray  # (n, n), the last n <= W_max deltas
    count: int
    exists: bool

    def row(self, group: str) -> dict[str, Any]:
        """The group_state row to store (float64 little-endian bytes), and `exists`."""
        return {
            "group_name": group,
            "position": self.position.astype("<f8").tobytes(),
            "deltas": self.deltas.astype("<f8").tobytes(),
            "gram": self.gram.astype("<f8").tobytes(),
            "count": self.count,
            "exists": self.exists,
        }


class _RunIngest:
    """One run's ingest inside one locked transaction (one checkpoint or a batch)."""

    def __init__(
        self,
        conn: Connection,
        run: Mapping[str, Any],
        state_rows: Sequence[Mapping[str, Any]],
        observers: Sequence[CheckpointObserver],
        savepoints: bool,
    ) -> None:
        self.conn = conn
        self.run = dict(run)
        self.observers = observers
        self.savepoints = savepoints
        self.groups: list[str] = list(run["groups"])
        self.windows: list[int] = sorted(int(w) for w in run["windows"])
        self.w_max = max(self.windows)
        self.method: str = run["sketch_method"]
        self.dim = int(run["sketch_dim"])
        self.dims: list[int] | None = (
            [int(d) for d in run["group_dims"]] if run["group_dims"] is not None else None
        )
        self.states = self._load_states(state_rows)
        self.series = self._load_series()
        self.pending = IngestRows()
        self.pending_digests: dict[int, tuple[str, CheckpointAck]] = {}
        self.pending_observed: list[
            tuple[int, Mapping[tuple[str, int], WindowSpectrum], Mapping[str, float]]
        ] = []

    # -- state ---------------------------------------------------------------------------

    def _load_states(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, _GroupState]:
        out: dict[str, _GroupState] = {}
        for row in rows:
            pos = np.frombuffer(row["position"], dtype=np.float64).copy()
            k = pos.size
            count = int(row["count"])
            m = min(count, self.w_max - 1)
            n = min(count, self.w_max)
            out[row["group_name"]] = _GroupState(
                position=pos,
                deltas=_f64(row["deltas"], (m, k)),
                gram=_f64(row["gram"], (n, n)),
                count=count,
                exists=True,
            )
        return out

    def _load_series(self) -> np.ndarray:
        blob = self.run.get("edge_series")
        shape = (len(self.windows), PHASE_HISTORY)
        if not blob:
            return np.full(shape, np.nan)
        return _f64(blob, shape)

    # -- checks --------------------------------------------------------------------------

    def _arrays(self, cp: CheckpointIn) -> dict[str, np.ndarray]:
        got = set(cp.sketch)
        want = set(self.groups)
        if got != want:
            missing = sorted(want - got)
            extra = sorted(got - want)
            raise IngestError(
                422,
                f"sketch groups must be {sorted(want)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else ""),
            )
        arrays = {g: np.asarray(cp.sketch[g], dtype=np.float64) for g in self.groups}
        lengths = [int(arrays[g].size) for g in self.groups]
        if self.method == "identity":
            if self.dims is not None and lengths != self.dims:
                raise IngestError(
                    422,
                    f"sketch lengths {lengths} differ from the run's {self.dims} (groups "
                    f"{self.groups})",
                )
            if sum(lengths) > MAX_IDENTITY_DIM or min(lengths) < 1:
                raise IngestError(
                    422, f"identity sketch length must be 1..{MAX_IDENTITY_DIM} in total"
                )
        else:
            bad = [g for g, n in zip(self.groups, lengths, strict=True) if n != self.dim]
            if bad:
                raise IngestError(
                    422, f"sketch of group(s) {bad} must have length {self.dim} (the run's dim)"
                )
        bad_groups = [g for g in self.groups if not np.all(np.isfinite(arrays[g]))]
        bad_metrics = sorted(n for n, v in cp.metrics.items() if not np.isfinite(v))
        if bad_groups or bad_metrics:
            count = sum(int(np.count_nonzero(~np.isfinite(arrays[g]))) for g in bad_groups)
            details = {
                "groups": bad_groups,
                "metrics": bad_metrics,
                "count": count + len(bad_metrics),
            }
            raise NonFiniteError(
                cp.step,
                details,
                f"non-finite numbers at step {cp.step}: groups {bad_groups}, metrics {bad_metrics}",
            )
        too_big = [g for g in self.groups if float(np.max(np.abs(arrays[g]))) > MAX_SKETCH_VALUE]
        if too_big:
            raise IngestError(
                422,
                f"sketch values of group(s) {too_big} exceed the cap of {MAX_SKETCH_VALUE:g} "
                "in absolute value",
            )
        if self.dims is None:
            self.dims = lengths
        return arrays

    # -- one checkpoint --------------------------------------------------------------------

    def add(self, cp: CheckpointIn) -> tuple[CheckpointAck, bool]:
        """Check and compute one checkpoint; its rows wait in memory for `flush`."""
        arrays = self._arrays(cp)
        digest = payload_digest(cp.step, self.groups, arrays, cp.metrics)
        last = self.run["last_step"]
        if last is not None and cp.step <= int(last):
            return self._repeat(cp.step, digest, int(last)), False
        now = datetime.now(UTC)
        spectra, dot_rows, lags = self._advance(arrays)
        edges = self._phases(spectra, cp.step)
        self._write(cp, arrays, digest, spectra, edges, dot_rows, lags, now)
        ack = CheckpointAck(
            run_id=int(self.run["id"]),
            step=cp.step,
            created=True,
            edge=edges.get(self.windows[0]),
        )
        self.pending_digests[cp.step] = (digest, ack)
        self.pending_observed.append((cp.step, spectra, cp.metrics))
        return ack, True

    def flush(self) -> None:
        """Write what `add` computed (`ingest_store.write_rows`: one statement on PostgreSQL),
        then tell the observers, checkpoint by checkpoint, with every row of the call written:
        without savepoints (an observer that raises raises `_ObserverFailed`) or each call in
        one (an observer that raises is rolled back alone and logged)."""
        pending = self.pending
        if not pending.checkpoints:
            return
        conn = self.conn
        run_id = int(self.run["id"])
        pending.states = [self.states[g].row(g) for g in self.groups]
        pending.run = {
            "last_step": self.run["last_step"],
            "last_checkpoint_at": self.run["last_checkpoint_at"],
            "num_checkpoints": self.run["num_checkpoints"],
            "group_dims": self.dims,
            "edge_series": self.run["edge_series"],
        }
        calls = [(obs, observed) for observed in self.pending_observed for obs in self.observers]
        savepoints = self.savepoints and bool(calls)
        write_rows(conn, run_id, pending, OBSERVER_SAVEPOINT if savepoints else None)
        for g in self.groups:
            self.states[g].exists = True
        self.pending = IngestRows()
        self.pending_observed = []
        if not savepoints:
            for obs, (step, spectra, metrics) in calls:
                try:
                    obs.on_checkpoint(conn, self.run, step, spectra, metrics)
                except Exception as exc:
                    log.warning(
                        "checkpoint observer %r failed (run %s, step %s); the ingest is done "
                        "again with a savepoint per observer call",
                        obs,
                        run_id,
                        step,
                        exc_info=True,
                    )
                    raise _ObserverFailed from exc
            return
        for i, (obs, (step, spectra, metrics)) in enumerate(calls):
            if i:
                conn.exec_driver_sql(f"SAVEPOINT {OBSERVER_SAVEPOINT}")
            try:
                obs.on_checkpoint(conn, self.run, step, spectra, metrics)
            except Exception:
                conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {OBSERVER_SAVEPOINT}")
                log.exception("checkpoint observer %r failed (run %s, step %s)", obs, run_id, step)
            if i < len(calls) - 1:  # the commit releases the last one
                conn.exec_driver_sql(f"RELEASE SAVEPOINT {OBSERVER_SAVEPOINT}")

    def _repeat(self, step: int, digest: str, last: int) -> CheckpointAck:
        if step in self.pending_digests:  # the same step twice in one batch
            known, ack = self.pending_digests[step]
            if known != digest:
                raise IngestError(409, f"step {step} appears twice with different payloads")
            return ack.model_copy(update={"created": False})
        c = tables.checkpoints
        stored = self.conn.execute(
            select(c.c.digest).where(c.c.run_id == self.run["id"], c.c.step == step)
        ).scalar_one_or_none()
        if stored is None:
            raise IngestError(409, f"step {step} is not after the run's last step {last}")
        if stored != digest:
            raise IngestError(409, f"step {step} was already recorded with a different payload")
        return CheckpointAck(
            run_id=int(self.run["id"]),
            step=step,
            created=False,
            edge=stored_edge(self.conn, int(self.run["id"]), step, self.windows[0]),
        )

    def _advance(
        self, arrays: dict[str, np.ndarray]
    ) -> tuple[dict[tuple[str, int], WindowSpectrum], np.ndarray | None, int]:
        if not self.states:
            for g in self.groups:
                k = arrays[g].size
                self.states[g] = _GroupState(
                    arrays[g].copy(), np.zeros((0, k)), np.zeros((0, 0)), 0, exists=False
                )
            return {}, None, 0
        keep = self.w_max - 1
        grams: dict[str, np.ndarray] = {}
        dot_rows = []
        lags = 0
        for g in self.groups:
            st = self.states[g]
            delta = arrays[g] - st.position
            m = st.deltas.shape[0]
            lags = m
            with np.errstate(over="ignore", invalid="ignore"):
                dots = st.deltas @ delta if m else np.zeros(0)
                sq = float(delta @ delta)
            gram = roll_gram(
                st.gram[st.gram.shape[0] - m :, st.gram.shape[0] - m :], dots, sq, self.w_max
            )
            if not (np.isfinite(sq) and np.all(np.isfinite(dots)) and np.all(np.isfinite(gram))):
                raise IngestError(422, _NOT_FINITE.format(what=f"group {g!r}'s deltas"))
            st.deltas = np.vstack([st.deltas, delta[None, :]])[-keep:] if keep else st.deltas
            st.gram = gram
            st.position = arrays[g].copy()
            st.count += 1
            grams[g] = gram
            dot_rows.append(np.append(dots, sq))
        noise = None if self.method == "identity" else self.dim
        spectra: dict[tuple[str, int], WindowSpectrum] = {}
        rule = self.run["rank_rule"]
        if self.groups != [ALL_GROUP]:
            for g in self.groups:
                for w, sp in window_spectra(grams[g], self.windows, rule, noise).items():
                    spectra[(g, w)] = sp
            with np.errstate(over="ignore", invalid="ignore"):
                total = sum(grams.values())
            noise_all = None if noise is None else noise * len(self.groups)
            assert isinstance(total, np.ndarray)
            if not np.all(np.isfinite(total)):
                raise IngestError(422, _NOT_FINITE.format(what="the sum of the groups' Grams"))
            for w, sp in window_spectra(total, self.windows, rule, noise_all).items():
                spectra[(ALL_GROUP, w)] = sp
        else:
            for w, sp in window_spectra(grams[ALL_GROUP], self.windows, rule, noise).items():
                spectra[(ALL_GROUP, w)] = sp
        bad = [key for key, sp in spectra.items() if not _finite_spectrum(sp)]
        if bad:
            raise IngestError(422, _NOT_FINITE.format(what=f"the spectra {bad}"))
        return spectra, np.vstack(dot_rows), lags

    def _phases(
        self, spectra: Mapping[tuple[str, int], WindowSpectrum], step: int
    ) -> dict[int, EdgeSummary]:
        """Roll the recent gap-ratio series per window and label the live phase."""
        self.series[:, :-1] = self.series[:, 1:]
        self.series[:, -1] = np.nan
        edges: dict[int, EdgeSummary] = {}
        for i, w in enumerate(self.windows):
            sp = spectra.get((ALL_GROUP, w))
            if sp is None:
                continue
            self.series[i, -1] = sp.gap_ratio
            row = self.series[i]
            edges[w] = EdgeSummary(
                step=step,
                window=w,
                group=ALL_GROUP,
                signal_rank=sp.signal_rank,
                gap_ratio=sp.gap_ratio,
                edge_strength=sp.edge_strength,
                phase=cast(Phase, live_phase(row[np.isfinite(row)])),
            )
        return edges

    def _write(
        self,
        cp: CheckpointIn,
        arrays: dict[str, np.ndarray],
        digest: str,
        spectra: Mapping[tuple[str, int], WindowSpectrum],
        edges: dict[int, EdgeSummary],
        dot_rows: np.ndarray | None,
        lags: int,
        now: datetime,
    ) -> None:
        self.pending.checkpoints.append(
            {
                "step": cp.step,
                "created_at": now,
                "digest": digest,
                "sketch": np.concatenate([arrays[g] for g in self.groups]).astype("<f8").tobytes(),
                "lags": lags,
                "dots": None if dot_rows is None else dot_rows.astype("<f8").tobytes(),
            }
        )
        self.pending.spectra.extend(
            {
                "group_name": g,
                "window": w,
                "step": cp.step,
                "sigma": sp.sigma.astype("<f8").tobytes(),
                "ratios": sp.ratios.astype("<f8").tobytes(),
                "signal_rank": sp.signal_rank,
                "gap_ratio": sp.gap_ratio,
                "additive_gap": sp.additive_gap,
                "edge_strength": sp.edge_strength,
                "total_variance": sp.total_variance,
                "effective_rank": sp.effective_rank,
                "k95": sp.k95,
                "pc1_share": sp.pc1_share,
                "drift_speed": sp.drift_speed,
                "phase": edges[w].phase if g == ALL_GROUP else None,
            }
            for (g, w), sp in spectra.items()
        )
        self.pending.metrics.extend(
            {"name": n, "step": cp.step, "value": float(v)} for n, v in sorted(cp.metrics.items())
        )
        self.run.update(
            last_step=cp.step,
            last_checkpoint_at=now,
            num_checkpoints=int(self.run["num_checkpoints"]) + 1,
            group_dims=self.dims,
            edge_series=self.series.tobytes(),
        )


def live_phase(series: np.ndarray) -> str:
    """Phase of the newest point of a recent gap-ratio series: warmup, rise, plateau, collapse.

    sedmon_core.phases.current_phase (threshold method); with fewer than PHASE_MIN_POINTS
    windows the run is still in "warmup".
    """
    if series.size < PHASE_MIN_POINTS:
        return "warmup"
    return current_phase(series) or "warmup"


def stored_edge(conn: Connection, run_id: int, step: int, window: int) -> EdgeSummary | None:
    """The stored edge of group "all" at one step and window (None when not computed)."""
    s = tables.spectra
    row = conn.execute(
        select(s.c.signal_rank, s.c.gap_ratio, s.c.edge_strength, s.c.phase).where(
            s.c.run_id == run_id,
            s.c.group_name == ALL_GROUP,
            s.c.window == window,
            s.c.step == step,
        )
    ).first()
    if row is None:
        return None
    return EdgeSummary(
        step=step,
        window=window,
        group=ALL_GROUP,
        signal_rank=int(row.signal_rank),
        gap_ratio=float(row.gap_ratio),
        edge_strength=float(row.edge_strength),
        phase=row.phase or "warmup",
    )


def ingest(
    engine: Engine,
    run_id: int,
    checkpoints: Sequence[CheckpointIn],
    visible: Callable[[str], bool],
    observers: Sequence[CheckpointObserver] = (),
) -> IngestOutcome:
    """Ingest checkpoints of one run in one transaction, all or nothing.

    `visible(project)` says whether the caller may see the run (404 otherwise, as for an
    unknown run). Raises IngestError (nothing written) or NonFiniteError (nothing written
    but a non_finite run event). Observers: see the module docstring.
    """
    try:
        try:
            return _ingest_once(engine, run_id, checkpoints, visible, observers, False)
        except _ObserverFailed:
            return _ingest_once(engine, run_id, checkpoints, visible, observers, True)
    except NonFiniteError as exc:
        record_non_finite(engine, run_id, exc.step, exc.details, observers)
        raise


def _ingest_once(
    engine: Engine,
    run_id: int,
    checkpoints: Sequence[CheckpointIn],
    visible: Callable[[str], bool],
    observers: Sequence[CheckpointObserver],
    savepoints: bool,
) -> IngestOutcome:
    """One attempt of `ingest`: one transaction, rolled back on any exception."""
    with engine.connect().execution_options(immediate=True) as conn, conn.begin():
        locked = lock_run_with_state(conn, run_id) if can_exist(run_id) else None
        if locked is None or not visible(locked[0]["project"]):
            raise IngestError(404, f"run {run_id} not found")
        job = _RunIngest(conn, locked[0], locked[1], observers, savepoints)
        acks: list[CheckpointAck] = []
        created = 0
        for i, cp in enumerate(checkpoints):
            try:
                ack, new = job.add(cp)
            except IngestError as exc:
                if len(checkpoints) > 1:
                    exc.detail = f"checkpoint {i} (step {cp.step}): {exc.detail}"
                raise
            acks.append(ack)
            created += int(new)
        job.flush()
    return IngestOutcome(acks, created, len(acks) - created, job.run)


def record_non_finite(
    engine: Engine,
    run_id: int,
    step: int,
    details: Mapping[str, Any],
    observers: Sequence[CheckpointObserver] = (),
) -> None:
    """Store a non_finite run event for a rejected checkpoint and tell the observers."""
    with engine.connect().execution_options(immediate=True) as conn, conn.begin():
        run = lock_run(conn, run_id)
        if run is None:
            return
        conn.execute(
            tables.run_events.insert().values(
                run_id=run_id,
                kind="non_finite",
                step=step,
                created_at=datetime.now(UTC),
                details=dict(details),
            )
        )
        for obs in observers:
            try:
                with conn.begin_nested():
                    obs.on_non_finite(conn, run, step, details)
            except Exception:
                log.exception("non_finite observer %r failed (run %s, step %s)", obs, run_id, step)
