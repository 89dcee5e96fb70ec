"""Where one checkpoint's server CPU goes: ingest called in-process on PostgreSQL, no HTTP.

    .venv/bin/python bench/ingest_profile.py [--checkpoints 500]

A fresh PostgreSQL database, the served app's ingest (`sedmon_server.ingest.ingest`) and
its observers (the alerts engine), one run as in bench/ingest.py (k = 100, one group,
windows 10/15/20/25/30, one metric). After 60 warm-up checkpoints:

1. thread CPU per checkpoint with the alerts observer and without it (the difference is
   what alert evaluation costs, rules and their SQL together), and the SQL statements
   per checkpoint that go through SQLAlchemy (the alerts engine's; ingest's own two go
   to psycopg directly);
2. a cProfile pass with a thread-CPU clock: cumulative CPU per checkpoint of the stages
   of ingest. Profiling slows Python calls down, so read these as shares of the profiled
   total, and the figures of step 1 as the costs.

Prints a table; the HTTP layers (uvicorn, FastAPI, validation, thread hop) come on top:
bench/ingest.py measures the whole server.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Engine, event

from sedmon_core.schemas import CheckpointIn, RunCreate
from sedmon_server.app import create_app
from sedmon_server.ingest import CheckpointObserver, ingest
from sedmon_server.runs_store import create_run
from sedmon_server.settings import Settings

PG_ADMIN = os.environ.get("SEDMON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
K = 100
WINDOWS = [10, 15, 20, 25, 30]
STAGES: tuple[tuple[str, str], ...] = (
    ("ingest.py", "ingest"),
    ("ingest_store.py", "lock_run_with_state"),
    ("ingest.py", "_arrays"),
    ("ingest.py", "payload_digest"),
    ("ingest.py", "_advance"),
    ("ingest.py", "_phases"),
    ("ingest.py", "flush"),
    ("ingest_store.py", "write_rows"),
    ("engine.py", "on_checkpoint"),
    ("engine.py", "start_pass"),
    ("rules.py", "evaluate"),
    ("engine.py", "read_pass"),
    ("engine.py", "write_states"),
)
"""(file, function) of the profiled stages, in the order of one checkpoint."""


class Walk:
    """Positions of one run: a drifting random walk in k dims (float64), as bench/ingest.py."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pos = self.rng.normal(scale=10.0, size=K)
        self.drift = self.rng.normal(size=K)
        self.step = 0

    def next(self) -> CheckpointIn:
        self.pos = self.pos + 0.01 * self.drift + 0.01 * self.rng.normal(size=K)
        self.step += 1
        return CheckpointIn(
            step=10 * self.step,
            sketch={"all": self.pos.tolist()},
            metrics={"loss": 1.0 / self.step},
        )


def new_run(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        row, _ = create_run(
            conn, RunCreate(project="bench", name=name, sketch={"dim": K}, windows=WINDOWS)
        )
    return int(row["id"])


def post(
    engine: Engine, run_id: int, walk: Walk, n: int, observers: Sequence[CheckpointObserver]
) -> None:
    for _ in range(n):
        ingest(engine, run_id, [walk.next()], lambda project: True, observers)


def cpu_per_checkpoint(fn: Callable[[], None], n: int) -> float:
    started = time.thread_time()
    fn()
    return 1e3 * (time.thread_time() - started) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=500)
    ap.add_argument("--top", type=int, default=0, help="also print the N costliest functions")
    args = ap.parse_args()
    n = args.checkpoints
    name = f"sedmon_profile_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    load_before = os.getloadavg()
    try:
        app = create_app(Settings(database_url=f"postgresql+psycopg://{base}/{name}"))
        engine: Engine = app.state.engine
        observers: list[CheckpointObserver] = list(app.state.observers)
        statements: Counter[str] = Counter()

        @event.listens_for(engine, "before_cursor_execute")
        def count(*args: Any) -> None:
            statements[str(args[2]).split(None, 1)[0].upper()] += 1

        runs = {label: (new_run(engine, label), Walk(i)) for i, label in enumerate(("on", "off"))}
        for label, obs in (("on", observers), ("off", [])):
            post(engine, *runs[label], 60, obs)
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        on_sql: dict[str, float] = {}
        for _ in range(2):  # alternate, so both see the same machine load
            for label, obs in (("on", observers), ("off", [])):
                statements.clear()
                rid, walk = runs[label]
                cpu[label].append(cpu_per_checkpoint(partial(post, engine, rid, walk, n, obs), n))
                if label == "on":
                    on_sql = {k: v / n for k, v in statements.items()}
        prof = cProfile.Profile(time.thread_time)
        rid, walk = runs["on"]
        prof.enable()
        post(engine, rid, walk, n, observers)
        prof.disable()
        engine.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    load_after = os.getloadavg()

    profile: Any = pstats.Stats(prof)
    stats = profile.stats
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, func), (_, _, _, ct, _) in stats.items():
        for stage in STAGES:
            if filename.endswith(stage[0]) and func == stage[1]:
                cumulative[stage] = cumulative.get(stage, 0.0) + ct
    total = cumulative.get(("ingest.py", "ingest"), float("nan"))
    on, off = float(np.median(cpu["on"])), float(np.median(cpu["off"]))
    print(f"{n} checkpoints per measure, k = {K}, windows {WINDOWS}")
    print(
        f"thread CPU per checkpoint: with alerts {on:.2f} ms, without {off:.2f} ms -> alert "
        f"evaluation {on - off:.2f} ms ({100 * (on - off) / on:.0f} %)"
        f"  [runs: {', '.join(f'{v:.2f}' for v in cpu['on'])} | "
        f"{', '.join(f'{v:.2f}' for v in cpu['off'])}]"
    )
    print(
        "statements seen by SQLAlchemy per checkpoint (not those sent to psycopg directly): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(on_sql.items()))
    )
    print(
        "profiled (thread CPU clock): share of ingest() per stage, and that share of the "
        f"unprofiled {on:.2f} ms (an estimate: profiling slows some code more than other)"
    )
    for stage in STAGES:
        ct = cumulative.get(stage)
        if ct is not None:
            print(f"  {stage[1]:22s} {100 * ct / total:5.1f} %  ~{on * ct / total:6.2f} ms")
    if args.top:
        print("costliest functions (own time, share of the profiled ingest()):")
        own = sorted(stats.items(), key=lambda item: -item[1][2])[: args.top]
        for (filename, line, func), (_, calls, tt, ct, _) in own:
            where = f"{Path(filename).name}:{line} {func}"
            share = f"{100 * tt / total:5.1f} % own {100 * ct / total:5.1f} % cum"
            print(f"  {share}  {calls / n:6.1f}/ckpt  {where}")
    print(
        f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
