"""Ingest benchmark: many runs posting checkpoints over HTTP to a server on PostgreSQL.

    .venv/bin/python bench/ingest.py [--workers 2] [--runs 40] [--per-run 250] [--quick]

Everything on this machine over 127.0.0.1: a fresh PostgreSQL database (dropped after),
`sedmon-server serve --workers N` as a subprocess, and the load generator (`Conn`, a
minimal asyncio HTTP/1.1 client, one keep-alive connection per run; httpx only for setup).
Checkpoints: k = 100, one group, windows 10/15/20/25/30, rank rule half.
Phases:
  1. warm-up: 100 checkpoints; server RSS measured (process + workers).
  2. throughput: R runs x P checkpoints, every run posting as fast as its acks come back
     (R concurrent, each run sequential as a training job is); checkpoints/s, p50/p99;
     CPU per checkpoint of the server, of the PostgreSQL backends of the bench database
     (`BackendCpu`) and of the load generator. RSS measured again after ~10,000
     checkpoints in all.
  3. paced: 100 checkpoints/s open-loop arrivals over 20 runs for 10 s; p50/p99.
  4. spectrum read: one run backfilled to 10,000 checkpoints (batch endpoint), then
     GET /spectrum?window=10 timed (first call and median of 5).
  5. TCP_NODELAY with workers > 1: sequential keep-alive requests to `sedmon-server serve
     --workers 2` (listener bound with IPPROTO_TCP) against plain `uvicorn --workers 2`
     (uvicorn issue #3149 baseline), same app, same database; p50 ratio.
Prints a table; writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SEDMON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-admin-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
K = 100
WINDOWS = [10, 15, 20, 25, 30]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_db() -> tuple[str, str]:
    name = f"sedmon_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    return name, f"postgresql+psycopg://{base}/{name}"


def drop_db(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start(argv: Sequence[str], port: int, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SEDMON_ADMIN_TOKEN": TOKEN, **env_extra}
    proc = subprocess.Popen(
        list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                time.sleep(1.0)  # let every worker finish starting
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mib(proc: subprocess.Popen[bytes]) -> float:
    p = psutil.Process(proc.pid)
    total = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
    return total / 2**20


class Walk:
    """Positions of one run: a drifting random walk in k dims (float64)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pos = self.rng.normal(scale=10.0, size=K)
        self.drift = self.rng.normal(size=K)

    def next(self) -> np.ndarray:
        self.pos = self.pos + 0.01 * self.drift + 0.01 * self.rng.normal(size=K)
        return self.pos


class Conn:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator shares the
    machine's two cores with the server and PostgreSQL, so it must cost little CPU."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        data = await self.reader.readexactly(length)
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def body(step: int, pos: np.ndarray, loss: float) -> bytes:
    return orjson.dumps(
        {"step": step, "sketch": {"all": pos}, "metrics": {"loss": loss}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


async def make_runs(c: httpx.AsyncClient, prefix: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        r = await c.post(
            "/api/v1/runs",
            headers=AUTH,
            content=orjson.dumps(
                {
                    "project": "bench",
                    "name": f"{prefix}-{i}",
                    "sketch": {"dim": K},
                    "windows": WINDOWS,
                }
            ),
        )
        r.raise_for_status()
        ids.append(int(r.json()["id"]))
    return ids


async def closed_loop(base: str, prefix: str, runs: int, per_run: int) -> dict[str, Any]:
    """Every run posts its checkpoints back to back on its own keep-alive connection (as a
    training job's sender does); returns rate and latencies."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        ids = await make_runs(c, prefix, runs)
    port = int(base.rsplit(":", 1)[1])
    lat: list[float] = []
    errors = 0

    async def one(run_id: int, seed: int) -> None:
        nonlocal errors
        walk = Walk(seed)
        conn = Conn(port)
        try:
            for step in range(per_run):
                payload = body(step * 10, walk.next(), 1.0 / (step + 1))
                t = time.perf_counter()
                status, _ = await conn.post(f"/api/v1/runs/{run_id}/checkpoints", payload)
                lat.append(time.perf_counter() - t)
                errors += status != 201
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(rid, i) for i, rid in enumerate(ids)))
    elapsed = time.perf_counter() - t0
    return {
        "checkpoints": runs * per_run,
        "seconds": elapsed,
        "rate": runs * per_run / elapsed,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
        "errors": errors,
    }


async def paced(base: str, prefix: str, rate: float, seconds: float, runs: int) -> dict[str, Any]:
    """Open-loop arrivals at `rate`/s spread over `runs` runs (each run stays in order, on its
    own keep-alive connection)."""
    total = int(rate * seconds)
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        ids = await make_runs(c, prefix, runs)
    port = int(base.rsplit(":", 1)[1])
    conns = [Conn(port) for _ in range(runs)]
    walks = [Walk(100 + i) for i in range(runs)]
    locks = [asyncio.Lock() for _ in range(runs)]
    steps = [0] * runs
    lat: list[float] = []
    errors = 0

    async def fire(i: int) -> None:
        nonlocal errors
        j = i % runs
        async with locks[j]:
            payload = body(steps[j] * 10, walks[j].next(), 1.0)
            steps[j] += 1
            t = time.perf_counter()
            status, _ = await conns[j].post(f"/api/v1/runs/{ids[j]}/checkpoints", payload)
            lat.append(time.perf_counter() - t)
            errors += status != 201

    t0 = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    return {
        "checkpoints": total,
        "seconds": elapsed,
        "offered_rate": rate,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
        "errors": errors,
    }


def long_run_spectrum(base: str, n: int) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=300, headers=AUTH) as c:
        r = c.post(
            "/api/v1/runs",
            content=orjson.dumps(
                {"project": "bench", "name": f"long-{n}", "sketch": {"dim": K}, "windows": WINDOWS}
            ),
        )
        rid = int(r.json()["id"])
        walk = Walk(7)
        t0 = time.perf_counter()
        for start in range(0, n, 1000):
            cps = [
                {"step": s * 10, "sketch": {"all": walk.next()}}
                for s in range(start, min(n, start + 1000))
            ]
            r = c.post(
                f"/api/v1/runs/{rid}/checkpoints:batch",
                content=orjson.dumps({"checkpoints": cps}, option=orjson.OPT_SERIALIZE_NUMPY),
            )
            r.raise_for_status()
        backfill = time.perf_counter() - t0
        times = []
        points = 0
        for _ in range(6):
            t = time.perf_counter()
            r = c.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 10})
            times.append(time.perf_counter() - t)
            points = len(r.json()["points"])
        t = time.perf_counter()
        csv_bytes = len(
            c.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 10, "format": "csv"}).content
        )
        csv_ms = 1e3 * (time.perf_counter() - t)
    return {
        "checkpoints": n,
        "backfill_rate": n / backfill,
        "points": points,
        "first_ms": 1e3 * times[0],
        "median_ms": 1e3 * statistics.median(times[1:]),
        "bytes": len(r.content),
        "csv_ms": csv_ms,
        "csv_bytes": csv_bytes,
    }


def keepalive_p50(base: str, n: int = 200) -> float:
    with httpx.Client(base_url=base, timeout=10) as c:
        c.get("/healthz")
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            c.get("/healthz")
            lat.append(time.perf_counter() - t)
    return 1e3 * float(np.percentile(lat, 50))


def nodelay_check(url: str) -> dict[str, Any]:
    """Keep-alive p50 of `sedmon-server serve --workers 2` vs `uvicorn --workers 2`, per loop."""
    out: dict[str, Any] = {}
    py = sys.executable
    for loop in ("asyncio", "uvloop"):
        port = free_port()
        argv = [
            py,
            "-m",
            "sedmon_server.cli",
            "serve",
            "--database-url",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--loop",
            loop,
        ]
        proc = start(argv, port, {})
        try:
            out[f"sedmon_{loop}_p50_ms"] = keepalive_p50(f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
        port = free_port()
        argv = [
            py,
            "-m",
            "uvicorn",
            "sedmon_server.app:app_from_env",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--loop",
            loop,
            "--log-level",
            "warning",
        ]
        proc = start(argv, port, {"SEDMON_DATABASE_URL": url})
        try:
            out[f"uvicorn_{loop}_p50_ms"] = keepalive_p50(f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
        out[f"ratio_{loop}"] = out[f"uvicorn_{loop}_p50_ms"] / out[f"sedmon_{loop}_p50_ms"]
    return out


def cpu_seconds(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """CPU seconds so far of the server tree and of this process (the load generator)."""
    server = psutil.Process(proc.pid)
    tree = [server, *server.children(recursive=True)]
    out = {"server": 0.0, "bench": 0.0}
    for key, procs in (("server", tree), ("bench", [psutil.Process()])):
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            out[key] += t.user + t.system
    return out


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving one database, sampled every `every` s.

    The server's pool closes its overflow connections, so backends come and go: each one's
    CPU is its last sample (what a backend did in its last `every` seconds before it
    exited is missed, so this is a lower bound). Other databases' backends, the machine's
    other users included, are left out; PostgreSQL's shared processes (WAL writer,
    checkpointer) are too. `own_cpu`: what the sampling thread itself spent, which the
    load generator's figure leaves out.
    """

    def __init__(self, database: str, every: float = 0.25) -> None:
        self.tag = f" {database} "
        self.every = every
        self.seen: dict[int, float] = {}
        self.start: dict[int, float] = {}
        self.own_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                cmdline = " ".join(p.info["cmdline"] or ())
                if p.info["name"] != "postgres" or self.tag not in cmdline:
                    continue
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.seen[p.pid] = t.user + t.system

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()
        self.own_cpu = time.thread_time()

    def __enter__(self) -> BackendCpu:
        self._sample()
        self.start = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.seen.items())


def print_throughput(results: dict[str, Any], runs: int) -> None:
    tp = results["throughput"]
    print(
        f"throughput   {tp['checkpoints']} checkpoints, {runs} runs: {tp['rate']:.0f}/s "
        f"(target >= 300), p50 {tp['p50_ms']:.1f} ms, p99 {tp['p99_ms']:.1f} ms, "
        f"errors {tp['errors']}"
    )
    cpu = results["cpu_ms_per_checkpoint"]
    print(
        f"CPU/ckpt     server {cpu['server']:.2f} ms, postgres backends >= "
        f"{cpu['postgres']:.2f} ms, "
        f"load generator {cpu['bench']:.2f} ms -> capacity of 2 dedicated cores "
        f"{results['capacity_2_cores']:.0f}/s; 1-min load average "
        f"{results['load_average'][0]:.1f} -> {results['load_average'][1]:.1f} (2 CPUs)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--per-run", type=int, default=250)
    ap.add_argument("--long", type=int, default=10_000, help="checkpoints of the long run")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="warm-up and throughput phases only, printed, no JSON written (A/B runs: put "
        "another sedmon_server first on PYTHONPATH, the served subprocess inherits it)",
    )
    args = ap.parse_args()
    if args.quick:
        args.runs, args.per_run, args.long = 10, 20, 500
    load_at_start = os.getloadavg()
    db, url = create_db()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "workers": args.workers,
        "k": K,
        "windows": WINDOWS,
    }
    proc = start(
        [
            sys.executable,
            "-m",
            "sedmon_server.cli",
            "serve",
            "--database-url",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        port,
        {},
    )
    try:
        asyncio.run(closed_loop(base, "warm", 5, 20))
        results["rss_after_100_mib"] = rss_mib(proc)
        load_before = os.getloadavg()[0]
        cpu0 = cpu_seconds(proc)
        with BackendCpu(db) as backends:
            results["throughput"] = asyncio.run(closed_loop(base, "tp", args.runs, args.per_run))
        cpu1 = cpu_seconds(proc)
        n = results["throughput"]["checkpoints"]
        cpu_ms = {k: 1e3 * (cpu1[k] - cpu0[k]) / n for k in cpu0}
        cpu_ms["bench"] -= 1e3 * backends.own_cpu / n
        cpu_ms["postgres"] = 1e3 * backends.seconds / n
        results["cpu_ms_per_checkpoint"] = cpu_ms
        results["capacity_2_cores"] = 2000.0 / sum(cpu_ms.values())
        results["load_average"] = [load_before, os.getloadavg()[0]]
        results["rss_after_throughput_mib"] = rss_mib(proc)
        results["rss_growth"] = results["rss_after_throughput_mib"] / results["rss_after_100_mib"]
        if not args.throughput_only:
            results["paced"] = asyncio.run(paced(base, "paced", 100.0, 10.0, 20))
            results["spectrum"] = long_run_spectrum(base, args.long)
            results["rss_end_mib"] = rss_mib(proc)
    finally:
        stop(proc)
    if args.throughput_only:
        drop_db(db)
        print_throughput(results, args.runs)
        return
    try:
        results["nodelay"] = nodelay_check(url)
    finally:
        drop_db(db)
    results["load_average_whole_run"] = {"start": load_at_start, "end": os.getloadavg()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(results, indent=2))
    tp, pc, sp, nd = (
        results["throughput"],
        results["paced"],
        results["spectrum"],
        results["nodelay"],
    )
    print(f"machine: {results['machine']}; server workers: {args.workers}")
    print_throughput(results, args.runs)
    print(
        f"paced 100/s  {pc['checkpoints']} checkpoints: p50 {pc['p50_ms']:.1f} ms, "
        f"p99 {pc['p99_ms']:.1f} ms (target <= 100), errors {pc['errors']}"
    )
    print(
        f"server RSS   {results['rss_after_100_mib']:.0f} MiB after 100 -> "
        f"{results['rss_after_throughput_mib']:.0f} MiB after "
        f"{tp['checkpoints'] + 100} checkpoints: x{results['rss_growth']:.3f} (target <= 1.10)"
    )
    print(
        f"spectrum     {sp['points']} points of a {sp['checkpoints']}-checkpoint run: first "
        f"{sp['first_ms']:.0f} ms, median {sp['median_ms']:.0f} ms (target <= 200), "
        f"{sp['bytes'] / 1e6:.1f} MB; CSV {sp['csv_ms']:.0f} ms; backfill "
        f"{sp['backfill_rate']:.0f} checkpoints/s"
    )
    la0, la1 = results["load_average_whole_run"]["start"], results["load_average_whole_run"]["end"]
    print(
        f"load average (1, 5, 15 min) at start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, at end "
        f"{la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} ({os.cpu_count()} CPUs)"
    )
    for loop in ("asyncio", "uvloop"):
        print(
            f"TCP_NODELAY  {loop}: keep-alive p50, 2 workers: sedmon serve "
            f"{nd[f'sedmon_{loop}_p50_ms']:.2f} ms, plain uvicorn "
            f"{nd[f'uvicorn_{loop}_p50_ms']:.2f} ms (x{nd[f'ratio_{loop}']:.1f})"
        )


if __name__ == "__main__":
    main()
