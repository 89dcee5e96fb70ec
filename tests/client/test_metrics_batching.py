"""`run.log` values reach the server in batches: by size, before a checkpoint, by age, at
finish; never one request per step, never blocking the training thread."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from scripted import Scripted, ok

import sedmon
from sedmon._spool import Spool

BATCH = "/metrics:batch"


@pytest.fixture()
def server() -> Iterator[Scripted]:
    s = Scripted(ok)
    yield s
    s.close()


def _init(url: str, tmp_path: Path, **kw: Any) -> sedmon.Run:
    torch.manual_seed(0)
    args: dict[str, Any] = {
        "project": "proj",
        "name": "batched",
        "server": url,
        "token": "t",
        "dim": 16,
        "spool_dir": tmp_path,
        "model": torch.nn.Linear(4, 2),
    }
    args.update(kw)
    return sedmon.init(**args)


def _points(server: Scripted) -> list[dict[str, Any]]:
    return [p for body in server.posted(BATCH) for p in body["points"]]


def test_values_logged_every_step_go_in_batches_of_the_configured_size(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_BATCH_POINTS", "100")
    monkeypatch.setenv("SEDMON_METRICS_INTERVAL_S", "600")
    run = _init(server.url, tmp_path)
    for step in range(250):
        run.log({"loss": 1.0 / (step + 1), "lr": 0.01}, step=step)
    assert run.flush(5)
    assert [len(b["points"]) for b in server.posted(BATCH)] == [100, 100, 50]
    assert _points(server) == [
        {"step": s, "values": {"loss": 1.0 / (s + 1), "lr": 0.01}} for s in range(250)
    ]
    assert server.posted("/metrics") == []  # no request per step
    run.finish(timeout=2)


def test_a_checkpoint_sends_the_buffered_values_first_and_carries_its_own_step(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_INTERVAL_S", "600")
    run = _init(server.url, tmp_path)
    for step in range(1, 6):
        run.log({"loss": float(step)}, step=step)
    run.checkpoint(5)
    run.finish(timeout=5)
    paths = [p.removeprefix("/api/v1/runs/7") for _, p, _ in server.requests][1:]
    assert paths == [BATCH, "/checkpoints", "/finish"]
    assert [p["step"] for p in _points(server)] == [1, 2, 3, 4]
    (checkpoint,) = server.posted("/checkpoints")
    assert checkpoint["step"] == 5 and checkpoint["metrics"] == {"loss": 5.0}


def test_values_are_posted_after_the_interval_without_another_call(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_INTERVAL_S", "0.3")
    run = _init(server.url, tmp_path)
    logged = time.monotonic()
    run.log({"loss": 0.5}, step=3)
    deadline = logged + 5
    while not server.posted(BATCH) and time.monotonic() < deadline:
        time.sleep(0.01)
    ((posted_at, _, body),) = [r for r in server.requests if r[1].endswith(BATCH)]
    assert body == {"points": [{"step": 3, "values": {"loss": 0.5}}]}
    assert posted_at - logged >= 0.3
    run.finish(timeout=2)


def test_finish_sends_what_is_buffered_before_the_end_of_the_run(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_INTERVAL_S", "600")
    run = _init(server.url, tmp_path)
    run.log({"loss": 2.0}, step=1)
    run.log({"acc": 0.5}, step=1)
    run.log({"loss": 1.0}, step=2)
    run.finish(timeout=5)
    assert [p for _, p, _ in server.requests][-2:] == [
        f"/api/v1/runs/7{BATCH}",
        "/api/v1/runs/7/finish",
    ]
    assert _points(server) == [
        {"step": 1, "values": {"loss": 2.0, "acc": 0.5}},
        {"step": 2, "values": {"loss": 1.0}},
    ]
    assert server.posted("/finish") == [{"state": "finished"}]


def test_non_finite_and_unnamed_values_are_left_out_and_logged(
    server: Scripted, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = _init(server.url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="sedmon"):
        run.log({"loss": float("nan"), "acc": 0.75, "": 1.0, "lr": "fast"}, step=4)
        run.log({"grad": float("inf")}, step=5)
        run.log({"loss": 1.0}, step=-1)
    run.finish(timeout=5)
    assert _points(server) == [{"step": 4, "values": {"acc": 0.75}}]
    assert "loss = nan at step 4 not sent" in caplog.text
    assert "step -1 < 0 ignored" in caplog.text


def test_log_returns_at_once_while_the_server_hangs(tmp_path: Path) -> None:
    with socket.socket() as hanging:  # completes handshakes, never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(64)
        run = _init(f"http://127.0.0.1:{hanging.getsockname()[1]}", tmp_path)
        t0 = time.perf_counter()
        for step in range(20_000):
            run.log({"loss": 1.0, "lr": 0.1}, step=step)
        elapsed = time.perf_counter() - t0
        run.finish(timeout=0.5)
    assert elapsed < 1.0, elapsed
    (folder,) = Spool.folders(tmp_path)
    spool = Spool(folder)
    points = [
        p for e in spool.pending() if e.kind == "metrics_batch" for p in spool.read(e)["points"]
    ]
    assert [p["step"] for p in points] == list(range(20_000))


def test_a_server_that_is_down_gets_the_batches_from_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_BATCH_POINTS", "10")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    run = _init(f"http://127.0.0.1:{port}", tmp_path)
    for step in range(25):
        run.log({"loss": float(step)}, step=step)
    run.finish(timeout=0.5)
    (folder,) = Spool.folders(tmp_path)
    spool = Spool(folder)
    kinds = [e.kind for e in spool.pending()]
    assert kinds == ["metrics_batch"] * 3 + ["finish"]
    spool.close()
    server = Scripted(ok, port)
    try:  # a new process of the same run replays the spool first
        again = _init(server.url, tmp_path)
        again.finish(timeout=5)
    finally:
        server.close()
    assert [p["step"] for p in _points(server)] == list(range(25))
    assert Spool.folders(tmp_path) == []


def test_finish_records_the_state_it_is_given(server: Scripted, tmp_path: Path) -> None:
    _init(server.url, tmp_path, name="a").finish(timeout=5, state="failed")
    _init(server.url, tmp_path, name="b").finish(timeout=5, state="crashed")  # not a state
    assert server.posted("/finish") == [{"state": "failed"}, {"state": "failed"}]


def test_a_server_without_the_batch_endpoint_gets_the_values_step_by_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_METRICS_BATCH_POINTS", "5")

    def older(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.endswith(BATCH):
            return 404, {}, {"detail": "Not Found"}  # FastAPI's answer to an unknown route
        return ok(path, body)

    server = Scripted(older)
    try:
        run = _init(server.url, tmp_path)
        for step in range(12):
            run.log({"loss": float(step)}, step=step)
        run.finish(timeout=5)
    finally:
        server.close()
    assert len(server.posted(BATCH)) == 1  # learnt once, then straight to /metrics
    assert server.posted("/metrics") == [
        {"step": s, "values": {"loss": float(s)}} for s in range(12)
    ]
    assert run._sender is not None and run._sender.rejected == 0
    assert Spool.folders(tmp_path) == []
