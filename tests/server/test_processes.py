"""Real server processes over loopback HTTP: two `sedmon-server serve` on one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servertest import ADMIN, AUTH, random_walk

from sedmon_core.spectrum import spectrum_series
from sedmon_server.cli import tcp_listener
from sedmon_server.observability import FLUSH_SECONDS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    url: str, home: Path, port: int, workers: int = 1, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SEDMON_ADMIN_TOKEN": ADMIN, "SEDMON_HOME": str(home)}
    env.pop("SEDMON_DATABASE_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(env_extra or {})
    proc = subprocess.Popen(
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
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


@pytest.fixture()
def two_servers(fresh_postgres_url: str, tmp_path: Path) -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    procs = [start_server(fresh_postgres_url, tmp_path, p) for p in ports]
    try:
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def expected_points(cps: list[dict[str, list[float]]], window: int) -> list[list[float]]:
    pos = np.array([cp["all"] for cp in cps])
    d = np.diff(pos, axis=0)
    return [s.sigma.tolist() for s in spectrum_series(d @ d.T, window)]


def create_run(base: str, name: str, windows: tuple[int, ...] = (4, 8)) -> int:
    r = httpx.post(
        f"{base}/api/v1/runs",
        headers=AUTH,
        json={"project": "multi", "name": name, "sketch": {"dim": 32}, "windows": list(windows)},
    )
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


def test_alternating_checkpoints_to_two_processes_equal_sequential_ingest(
    two_servers: list[str],
) -> None:
    cps = random_walk(24, 32, seed=41)
    rid = create_run(two_servers[0], "alternating")
    assert create_run(two_servers[1], "alternating") == rid
    seq = create_run(two_servers[0], "sequential")  # the same checkpoints, one process
    clients = [httpx.Client(base_url=b, headers=AUTH) for b in two_servers]
    acks: dict[int, list[Any]] = {rid: [], seq: []}
    for i, cp in enumerate(cps):
        for run_id, c in ((rid, clients[i % 2]), (seq, clients[0])):
            r = c.post(f"/api/v1/runs/{run_id}/checkpoints", json={"step": i, "sketch": cp})
            assert r.status_code == 201, r.text
            acks[run_id].append(r.json()["edge"])
    assert acks[rid] == acks[seq]  # every ack's edge summary, exactly

    def stored(run_id: int) -> dict[str, Any]:
        detail = clients[1].get(f"/api/v1/runs/{run_id}").json()
        out = {k: detail[k] for k in ("num_checkpoints", "last_step", "latest")}
        for w in (4, 8):
            pts = clients[1].get(f"/api/v1/runs/{run_id}/spectrum", params={"window": w})
            out[f"spectrum_{w}"] = pts.json()["points"]
        return out

    interleaved = stored(rid)
    assert interleaved == stored(seq)  # every stored number and label, exactly
    for w in (4, 8):
        sigma = [p["sigma"] for p in interleaved[f"spectrum_{w}"]]
        np.testing.assert_allclose(sigma, expected_points(cps, w), rtol=1e-9)


def test_two_processes_racing_on_one_run_accept_each_step_exactly_once(
    two_servers: list[str],
) -> None:
    cps = random_walk(40, 32, seed=43)
    rid = create_run(two_servers[0], "racing")
    statuses: list[list[int]] = [[], []]

    def sender(k: int) -> None:
        with httpx.Client(base_url=two_servers[k], headers=AUTH) as c:
            for i, cp in enumerate(cps):
                r = c.post(f"/api/v1/runs/{rid}/checkpoints", json={"step": i, "sketch": cp})
                statuses[k].append(r.status_code)

    threads = [threading.Thread(target=sender, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses[0]) | set(statuses[1]) <= {200, 201}
    created = [int(a == 201) + int(b == 201) for a, b in zip(*statuses, strict=True)]
    assert created == [1] * len(cps)
    run = httpx.get(f"{two_servers[1]}/api/v1/runs/{rid}", headers=AUTH).json()
    assert run["num_checkpoints"] == len(cps)
    for w in (4, 8):
        pts = httpx.get(
            f"{two_servers[0]}/api/v1/runs/{rid}/spectrum", headers=AUTH, params={"window": w}
        ).json()
        np.testing.assert_allclose(
            [p["sigma"] for p in pts["points"]], expected_points(cps, w), rtol=1e-9
        )


def test_the_multi_worker_listener_gives_accepted_connections_tcp_nodelay() -> None:
    async def accepted_nodelay() -> int:
        sock = tcp_listener("127.0.0.1", 0)
        sock.listen()
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            s = writer.get_extra_info("socket")
            seen.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_conn, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen, 5)
        writer.close()
        server.close()
        return value

    # A thread of its own: another fixture (Playwright's sync API) may own this thread's loop.
    seen_value: list[int] = []
    runner = threading.Thread(target=lambda: seen_value.append(asyncio.run(accepted_nodelay())))
    runner.start()
    runner.join(10)
    assert seen_value and seen_value[0] != 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def test_a_chunked_upload_over_the_limit_is_413_over_http_and_nothing_is_written(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    proc = start_server(
        fresh_postgres_url, tmp_path, port, env_extra={"SEDMON_MAX_BODY_BYTES": "100000"}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        rid = create_run(base, "chunked")
        cps = random_walk(2, 32, seed=5)
        big = json.dumps({"step": 0, "sketch": {"all": [0.123456789] * 20_000}}).encode()
        assert len(big) > 100_000

        def chunks(body: bytes, size: int) -> Iterator[bytes]:
            for i in range(0, len(body), size):
                yield body[i : i + size]

        url = f"{base}/api/v1/runs/{rid}/checkpoints"
        headers = {**AUTH, "content-type": "application/json"}
        r = httpx.post(url, content=chunks(big, 8192), headers=headers)
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert "larger than 100000 bytes" in r.json()["detail"]
        run = httpx.get(f"{base}/api/v1/runs/{rid}", headers=AUTH).json()
        assert run["num_checkpoints"] == 0
        for step, cp in enumerate(cps):  # under the limit, chunked: the route gets it whole
            body = json.dumps({"step": step, "sketch": cp}).encode()
            r = httpx.post(url, content=chunks(body, 100), headers=headers)
            assert r.status_code == 201, r.text
        run = httpx.get(f"{base}/api/v1/runs/{rid}", headers=AUTH).json()
        assert run["num_checkpoints"] == len(cps)
    finally:
        stop(proc)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics page on a new connection: {(sample name, sorted labels): value}."""
    r = httpx.get(f"{base}/metrics", headers={"connection": "close"})
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def run_key(name: str, rid: int, run: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"run_id": str(rid), "project": "multi", "run": run}
    return (name, tuple(sorted(labels.items())))


def test_metrics_of_a_multi_worker_server_add_up_every_worker(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    proc = start_server(
        fresh_postgres_url, tmp_path, port, workers=2, env_extra={"TMPDIR": str(scratch)}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert [p.name[:15] for p in scratch.iterdir()] == ["sedmon-metrics-"]
        names = [f"mw-{k}" for k in range(3)]
        rids = [create_run(base, n, windows=(3,)) for n in names]
        per_run = 12
        last: dict[int, Any] = {}

        def sender(k: int) -> None:  # one run per thread; half the posts on new connections
            cps = random_walk(per_run, 32, seed=60 + k)
            with httpx.Client(base_url=base, headers=AUTH) as c:
                for i, cp in enumerate(cps):
                    body = {"step": i, "sketch": cp}
                    url = f"/api/v1/runs/{rids[k]}/checkpoints"
                    if i % 2:
                        r = httpx.post(base + url, json=body, headers=AUTH)
                    else:
                        r = c.post(url, json=body)
                    assert r.status_code == 201, r.text
                    last[k] = r.json()["edge"]

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(last) == 3
        # Each worker writes its runs' latest edges for the others every FLUSH_SECONDS.
        time.sleep(2 * FLUSH_SECONDS)
        total = per_run * len(rids)
        created = ("sedmon_ingest_checkpoints_total", (("outcome", "created"),))
        latency = ("sedmon_ingest_seconds_count", (("endpoint", "checkpoint"),))
        for _ in range(8):
            page = scrape(base)
            assert page.get(created) == total, page.get(created)
            assert page.get(latency) == total
            assert page.get(("sedmon_active_runs", ())) == 3
            for k, (rid, name) in enumerate(zip(rids, names, strict=True)):
                rank = page.get(run_key("sedmon_run_signal_rank", rid, name))
                gap = page.get(run_key("sedmon_run_gap_ratio", rid, name))
                assert rank == last[k]["signal_rank"]
                assert gap == pytest.approx(last[k]["gap_ratio"])
        r = httpx.post(f"{base}/api/v1/runs/{rids[0]}/finish", headers=AUTH)
        assert r.status_code == 200, r.text
        for _ in range(6):
            page = scrape(base)
            assert page.get(("sedmon_active_runs", ())) == 2
            assert run_key("sedmon_run_signal_rank", rids[0], names[0]) not in page
            assert run_key("sedmon_run_signal_rank", rids[1], names[1]) in page
    finally:
        stop(proc)
    assert not list(scratch.iterdir())  # the private metrics directory is gone
