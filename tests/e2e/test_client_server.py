"""The client against a real server (subprocess, PostgreSQL) over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import sedmon
from sedmon._spool import Spool
from sedmon.cli import main

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN = "e2e-admin-token"
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(database_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SEDMON_ADMIN_TOKEN": ADMIN}
    cmd = [str(BIN / "sedmon-server"), "serve", "--database-url", database_url]
    return subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server not ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture()
def server_on(postgres_url: str) -> Iterator[Callable[[int], str]]:
    """Start a server on a given port (when the test says so); stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> str:
        procs.append(_start_server(postgres_url, port))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        _stop(proc)


@pytest.fixture(scope="module")
def server(postgres_url: str) -> Iterator[str]:
    port = _free_port()
    proc = _start_server(postgres_url, port)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url)
    yield url
    _stop(proc)


def _get(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{path}", params=params, headers={"authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()


def _run_by_name(url: str, project: str, name: str) -> dict[str, Any]:
    runs = _get(url, "/api/v1/runs", project=project)["runs"]
    (run,) = [r for r in runs if r["name"] == name]
    return dict(run)


class Loop:
    """A real tiny training loop (MLP regression), timed per step."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(32, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1)
        )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(256, 32)
        self.y = self.x[:, :4].sum(1, keepdim=True)
        self.step_times: list[float] = []

    def step(self, log: Callable[[dict[str, float]], None] | None = None) -> float:
        """One optimizer step (and the client's log call, when given), timed together."""
        t0 = time.perf_counter()
        self.opt.zero_grad()
        loss = (self.model(self.x) - self.y).pow(2).mean()
        loss.backward()
        self.opt.step()
        value = loss.item()
        if log is not None:
            log({"loss": value})
        self.step_times.append(time.perf_counter() - t0)
        return value


def test_a_run_whose_server_appears_half_way_delivers_every_checkpoint_once(
    server_on: Callable[[int], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_RETRY_BUDGET_S", "0.2")
    monkeypatch.setenv("SEDMON_MAX_BACKOFF_S", "0.5")
    steps, every = 600, 20
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        baseline, loop = Loop(), Loop()  # stepped alternately: the same machine load
        port = _free_port()
        name = f"half-{time.time_ns()}"
        run = sedmon.init(
            project="e2e", name=name, model=loop.model, optimizer=loop.opt,
            server=f"http://127.0.0.1:{port}", token=ADMIN, every=every, dim=64,
            windows=[5], spool_dir=tmp_path,
        )  # fmt: skip
        url = ""
        for s in range(1, steps + 1):
            baseline.step()
            loop.step(run.log)
            if s == steps // 2:
                assert run._sender is not None and run._sender.offline
                assert run._sender.spool is not None and run._sender.spool.has_pending()
                url = server_on(port)
        _wait_ready_url(url)  # finish() does not wait for a server that is down
        run.finish(timeout=60)
    finally:
        torch.set_num_threads(threads)
    record = _run_by_name(url, "e2e", name)
    checkpoints = list(range(0, steps + 1, every))
    assert (record["num_checkpoints"], record["last_step"]) == (len(checkpoints), steps)
    assert record["state"] == "finished"
    spectrum = _get(url, f"/api/v1/runs/{record['id']}/spectrum", window=5)
    assert [p["step"] for p in spectrum["points"]] == checkpoints[5:]
    (loss,) = _get(url, f"/api/v1/runs/{record['id']}/metrics", name="loss")["series"]
    assert loss["steps"] == list(range(1, steps + 1))
    assert run.last_edge is not None and run.last_edge["step"] == steps
    assert Spool.folders(tmp_path) == [] or not Spool(Spool.folders(tmp_path)[0]).has_pending()
    with_client = statistics.median(loop.step_times)
    without = statistics.median(baseline.step_times)
    assert with_client <= 1.25 * without + 2e-4, (with_client, without)


CHILD = r"""
import sys, time, torch, sedmon
port, spool_dir, name = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
model = torch.nn.Linear(16, 16)
run = sedmon.init(project="e2e", name=name, model=model, server=f"http://127.0.0.1:{port}",
                  token="unused", dim=32, windows=[2], spool_dir=spool_dir)
step, ready = 0, False
while True:
    with torch.no_grad():
        model.weight.add_(0.01 * torch.randn_like(model.weight))
    run.log({"loss": 1.0 / (step + 1)}, step=step)
    run.checkpoint(step)
    step += 1
    spool = run._sender.spool
    if not ready and spool is not None and len(spool.pending()) >= 60:
        print("READY", flush=True)
        ready = True
    time.sleep(0.001)
"""


def test_a_client_killed_mid_spool_replays_cleanly_with_sync(
    server_on: Callable[[int], str], tmp_path: Path
) -> None:
    port, name = _free_port(), f"killed-{time.time_ns()}"
    env = {**os.environ, "SEDMON_RETRY_BUDGET_S": "0.05", "SEDMON_MAX_BACKOFF_S": "0.2"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port), str(tmp_path), name],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"READY"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (folder,) = Spool.folders(tmp_path)
    segment = sorted(folder.glob("seg-*.jsonl"))[-1]
    with open(segment, "ab") as f:  # whatever the kill left, also a torn record at the end
        f.write(b'1234abcd {"seq": 99999999999999999999, "kind": "checkpoint", "bo')
    spool = Spool(folder)
    entries = [(e.kind, spool.read(e)["step"]) for e in spool.pending()]
    spooled = [step for kind, step in entries if kind == "checkpoint"]
    assert spooled == list(range(len(spooled))) and len(spooled) >= 60
    url = server_on(port)
    _wait_ready_url(url)
    env = {**os.environ, "SEDMON_TOKEN": ADMIN}
    sync = [str(BIN / "sedmon"), "sync", "--spool-dir", str(tmp_path)]
    done = subprocess.run(sync, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(entries)} sent, 0 refused, 0 left" in done.stdout
    assert "torn line(s) skipped" in done.stdout
    record = _run_by_name(url, "e2e", name)
    assert (record["num_checkpoints"], record["last_step"]) == (len(spooled), spooled[-1])
    (loss,) = _get(url, f"/api/v1/runs/{record['id']}/metrics", name="loss")["series"]
    assert loss["steps"] == spooled  # logged at the checkpoint's step: they rode with it
    again = subprocess.run(sync, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to sync" in again.stdout
    assert _run_by_name(url, "e2e", name)["num_checkpoints"] == len(spooled)


def _wait_ready_url(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def test_backfill_gives_the_server_the_spectrum_that_analyze_computes(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = Loop(seed=1)
    for step in range(12):
        if step:
            loop.step()
        torch.save({"model": loop.model.state_dict(), "step": step * 5}, tmp_path / f"c{step}.pt")
    name = f"backfill-{time.time_ns()}"
    sketch = ["--dim", "48", "--seed", "2", "--windows", "4"]
    args = ["backfill", str(tmp_path), "--project", "e2e", "--name", name]
    assert main([*args, "--server", server, "--token", ADMIN, *sketch]) == 0
    assert "12 checkpoint(s) created" in capsys.readouterr().out
    assert main([*args, "--server", server, "--token", ADMIN, *sketch]) == 0
    assert "0 checkpoint(s) created, 12 already there" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path), "--json", *sketch]) == 0
    offline = json.loads(capsys.readouterr().out)
    record = _run_by_name(server, "e2e", name)
    online = _get(server, f"/api/v1/runs/{record['id']}/spectrum", window=4)
    assert [p["step"] for p in online["points"]] == [p["step"] for p in offline["points"]]
    for a, b in zip(online["points"], offline["points"], strict=True):
        assert a["signal_rank"] == b["signal_rank"]
        np.testing.assert_allclose(a["sigma"], b["sigma"], rtol=1e-9)
        np.testing.assert_allclose(a["gap_ratio"], b["gap_ratio"], rtol=1e-9)


def test_a_live_run_reports_its_edge_and_a_rerun_is_idempotent(server: str, tmp_path: Path) -> None:
    loop = Loop(seed=2)
    name = f"live-{time.time_ns()}"
    settings = {"project": "e2e", "name": name, "server": server, "token": ADMIN, "dim": 32}
    with sedmon.init(**settings, model=loop.model, windows=[3], spool_dir=tmp_path) as run:
        for s in range(5):
            loop.step()
            run.checkpoint(s)
        assert run.flush(10)
        assert run.last_edge is not None and run.last_edge["step"] == 4
        assert run.id == _run_by_name(server, "e2e", name)["id"]
    again = sedmon.init(**settings, model=loop.model, windows=[3], spool_dir=tmp_path)
    again.checkpoint(4)  # the same step with other parameters: the server answers 409
    again.checkpoint(5)
    again.finish(timeout=10)
    record = _run_by_name(server, "e2e", name)
    assert (record["num_checkpoints"], record["last_step"]) == (6, 5)
    assert again.id == run.id
    assert Spool.folders(tmp_path) == [] or not Spool(Spool.folders(tmp_path)[0]).has_pending()


def test_a_with_block_that_raises_leaves_the_run_failed_on_the_server(
    server: str, tmp_path: Path
) -> None:
    loop = Loop(seed=3)
    name = f"crashed-{time.time_ns()}"
    settings = {"project": "e2e", "name": name, "server": server, "token": ADMIN, "dim": 32}
    with (
        pytest.raises(RuntimeError, match="diverged"),
        sedmon.init(**settings, model=loop.model, windows=[3], spool_dir=tmp_path) as run,
    ):
        run.checkpoint(0)
        loop.step(lambda values: run.log(values, step=1))
        raise RuntimeError("diverged")
    record = _run_by_name(server, "e2e", name)
    assert record["state"] == "failed"
    assert record["num_checkpoints"] == 1
    (loss,) = _get(server, f"/api/v1/runs/{record['id']}/metrics", name="loss")["series"]
    assert loss["steps"] == [1]


def test_metrics_logged_every_step_arrive_whole_in_a_few_requests(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_BATCH_POINTS", "64")
    steps, every = 300, 50
    loop = Loop(seed=4)
    name = f"batched-{time.time_ns()}"
    run = sedmon.init(
        project="e2e", name=name, model=loop.model, optimizer=loop.opt, server=server,
        token=ADMIN, every=every, dim=32, windows=[3], spool_dir=tmp_path,
    )  # fmt: skip
    logged = [loop.step(run.log) for _ in range(steps)]
    run.finish(timeout=30)
    record = _run_by_name(server, "e2e", name)
    assert record["state"] == "finished" and record["num_checkpoints"] == steps // every + 1
    (loss,) = _get(server, f"/api/v1/runs/{record['id']}/metrics", name="loss")["series"]
    assert loss["steps"] == list(range(1, steps + 1))
    assert loss["values"] == logged
    assert run._sender is not None and run._sender.rejected == 0
    # checkpoints + finish + one batch per 64 steps and per checkpoint: not one per step
    assert run._sender.delivered <= (steps // every + 1) + 1 + (steps // 64 + 1) + steps // every


def test_a_full_send_queue_still_delivers_every_item_once_and_in_order(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_QUEUE_SIZE", "2")  # full at once: items go by way of the spool
    monkeypatch.setenv("SEDMON_METRICS_BATCH_POINTS", "4")
    steps, every = 200, 2
    loop = Loop(seed=5)
    name = f"full-queue-{time.time_ns()}"
    run = sedmon.init(
        project="e2e", name=name, model=loop.model, optimizer=loop.opt, server=server,
        token=ADMIN, every=every, dim=32, windows=[3], spool_dir=tmp_path,
    )  # fmt: skip
    logged = [loop.step(run.log) for _ in range(steps)]
    sender = run._sender
    assert sender is not None
    run.finish(timeout=60)
    record = _run_by_name(server, "e2e", name)
    assert record["state"] == "finished"
    assert (record["num_checkpoints"], record["last_step"]) == (steps // every + 1, steps)
    (loss,) = _get(server, f"/api/v1/runs/{record['id']}/metrics", name="loss")["series"]
    assert loss["steps"] == list(range(1, steps + 1)) and loss["values"] == logged
    # out of order, a checkpoint would be refused (409); twice, it would be "unchanged"
    assert sender.overflowed > 0 and sender.dropped == 0 and sender.rejected == 0
    assert Spool.folders(tmp_path) == [] or not Spool(Spool.folders(tmp_path)[0]).has_pending()
