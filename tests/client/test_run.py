"""`sedmon.init` and `Run` on the training thread: wrong arguments raise, nothing else does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scripted import Scripted, ok

import sedmon
from sedmon._spool import Spool


@pytest.fixture()
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def hanging_server() -> Iterator[str]:
    """A socket that completes TCP handshakes (listen backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _init(url: str, tmp_path: Path, **kw: Any) -> sedmon.Run:
    args: dict[str, Any] = {
        "project": "proj",
        "name": "run-1",
        "server": url,
        "token": "t",
        "dim": 16,
        "spool_dir": tmp_path,
    }
    args.update(kw)
    return sedmon.init(**args)


def _spooled(run: sedmon.Run) -> list[tuple[str, dict[str, Any]]]:
    (folder,) = Spool.folders(run._sender.spool_root if run._sender else Path())
    spool = Spool(folder)
    return [(e.kind, spool.read(e)) for e in spool.pending()]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"project": "bad project!"}, "project="),
        ({"name": " leading space"}, "name="),
        ({"every": 0}, "every="),
        ({"method": "fourier"}, "method="),
        ({"dim": 0}, "dim"),
        ({"windows": [1]}, "windows"),
        ({"rank_rule": "biggest"}, "rank_rule"),
        ({"server": "localhost:8000"}, "server="),
        ({"groups": "blocks"}, "groups="),
        ({"groups": {"attn": ["nothing.*"]}}, "groups="),
        ({"model": 42}, "model="),
        ({"model": None, "optimizer": object()}, "model="),
    ],
)
def test_wrong_arguments_raise_config_error_saying_what_to_change(
    kwargs: dict[str, Any], says: str, closed_port: int, tmp_path: Path
) -> None:
    base: dict[str, Any] = {"model": _model()}
    base.update(kwargs)
    with pytest.raises(sedmon.ConfigError, match=says):
        _init(f"http://127.0.0.1:{closed_port}", tmp_path, **base)


def test_a_missing_server_or_token_points_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SEDMON_SERVER", raising=False)
    monkeypatch.delenv("SEDMON_TOKEN", raising=False)
    with pytest.raises(sedmon.ConfigError, match="SEDMON_SERVER"):
        sedmon.init(project="p", name="r", spool_dir=tmp_path)
    with pytest.raises(sedmon.ConfigError, match="SEDMON_TOKEN"):
        sedmon.init(project="p", name="r", server="http://127.0.0.1:1", spool_dir=tmp_path)


def test_config_error_is_a_sedmon_error_and_a_value_error() -> None:
    assert issubclass(sedmon.ConfigError, sedmon.SedmonError)
    assert issubclass(sedmon.ConfigError, ValueError)


def test_init_with_an_unreachable_server_returns_within_half_a_second(
    closed_port: int, tmp_path: Path
) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    t0 = time.perf_counter()
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=model, optimizer=opt)
    elapsed = time.perf_counter() - t0
    run.finish(timeout=0.5)
    assert elapsed < 0.5


def test_finish_returns_within_its_bound_when_the_server_hangs(
    hanging_server: str, tmp_path: Path
) -> None:
    run = _init(hanging_server, tmp_path, model=_model())
    run.checkpoint(0)
    t0 = time.perf_counter()
    run.finish(timeout=1.0)
    assert time.perf_counter() - t0 < 1.5
    assert [kind for kind, _ in _spooled(run)] == ["checkpoint", "finish"]


def test_the_optimizer_hook_checkpoints_every_n_steps(closed_port: int, tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=model, optimizer=opt, every=3)
    x = torch.randn(32, 8)
    for _ in range(7):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    run.finish(timeout=0.5)
    steps = [body["step"] for kind, body in _spooled(run) if kind == "checkpoint"]
    assert steps == [0, 3, 6]
    assert run.step == 7


def test_logged_metrics_are_coalesced_per_step_and_ride_with_the_checkpoint(
    closed_port: int, tmp_path: Path
) -> None:
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=_model())
    run.log({"loss": 2.0}, step=1)
    run.log({"acc": 0.5}, step=1)
    run.log({"loss": 1.5}, step=2)
    run.checkpoint(2)
    run.finish(timeout=0.5)
    items = _spooled(run)
    assert items[0] == (
        "metrics_batch",
        {"points": [{"step": 1, "values": {"loss": 2.0, "acc": 0.5}}]},
    )
    assert items[1][0] == "checkpoint" and items[1][1]["metrics"] == {"loss": 1.5}
    assert items[2] == ("finish", {"state": "finished"})


def test_non_finite_parameters_are_still_sent_and_training_goes_on(
    closed_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=model)
    run.checkpoint(5)
    run.finish(timeout=0.5)
    ((_, body),) = [i for i in _spooled(run) if i[0] == "checkpoint"]
    assert not np.isfinite(np.array(body["sketch"]["all"])).all()
    assert "non-finite parameters at step 5" in caplog.text


def test_a_failing_sketch_is_logged_not_raised(closed_port: int, tmp_path: Path) -> None:
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=[("w", torch.zeros(3))])
    run._model = [("w", "not a tensor")]
    run.checkpoint(1)  # must not raise
    run.checkpoint(1)  # not after the last one: skipped, must not raise either
    run.finish(timeout=0.2)


def test_the_context_manager_marks_a_crashed_run_failed_and_reraises(
    closed_port: int, tmp_path: Path
) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=_model()) as run,
    ):
        run.checkpoint(0)
        raise RuntimeError("boom")
    assert _spooled(run)[-1] == ("finish", {"state": "failed"})


def test_server_and_token_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEDMON_SERVER", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("SEDMON_TOKEN", "from-env")
    run = sedmon.init(project="p", name="env", spool_dir=tmp_path)
    assert run.server.endswith(str(closed_port))
    assert run._sender is not None and run._sender.token == "from-env"
    run.finish(timeout=0.2)


def test_a_checkpoint_delivers_the_sketch_that_sketch_parameters_computes(
    tmp_path: Path,
) -> None:
    server = Scripted(ok)
    try:
        model = _model()
        run = _init(server.url, tmp_path, model=model, groups="layers")
        run.checkpoint(3)
        expected = sedmon.sketch_parameters(model, dim=16, groups="layers")
        with torch.no_grad():
            model[0].weight.add_(1.0)  # the next update: after the checkpoint's sketch
        assert run.flush(10)
        (body,) = server.posted("/checkpoints")
        assert body["step"] == 3 and set(body["sketch"]) == set(expected)
        for group, values in body["sketch"].items():
            assert np.array_equal(np.array(values), expected[group])
        run.finish(timeout=5)
    finally:
        server.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_checkpoint_returns_while_the_gpu_is_busy_and_delivers_its_sketch(
    tmp_path: Path,
) -> None:
    server = Scripted(ok)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 16)).cuda()
        run = _init(server.url, tmp_path, model=model, dim=64)
        run.checkpoint(0)  # first use: tables and plans on the device, pinned buffers
        assert run.flush(30)
        expected = sedmon.sketch_parameters(model, dim=64)["all"]
        a = torch.randn(8192, 8192, device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            a @ a
        torch.cuda.synchronize()
        repeats = max(3, int(2.0 / ((time.perf_counter() - t0) / 3)))  # about 2 s of GPU work
        for _ in range(repeats):
            a @ a
        t0 = time.perf_counter()
        run.checkpoint(1)  # queued behind the matmuls
        returned = time.perf_counter() - t0
        busy = not torch.cuda.current_stream().query()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # the next update, queued after the checkpoint
        torch.cuda.synchronize()
        assert busy and returned < 0.5, returned  # a synchronising copy would wait ~2 s
        assert run.flush(30)
        (body,) = [b for b in server.posted("/checkpoints") if b["step"] == 1]
        got = np.array(body["sketch"]["all"])
        assert np.linalg.norm(got - expected) <= 1e-12 * np.linalg.norm(expected)
        assert not np.allclose(got, sedmon.sketch_parameters(model, dim=64)["all"])
        run.finish(timeout=5)
    finally:
        server.close()


def test_config_values_the_server_cannot_store_become_strings_not_errors(
    closed_port: int, tmp_path: Path
) -> None:
    """max_grad_norm=inf is a common setting: the run starts, the config says "inf"."""
    config = {
        "max_grad_norm": float("inf"),
        "floor": float("-inf"),
        "nested": {"lr": [1e-3, float("nan")], "tag\x00": "a\x00b"},
        "ok": 1.5,
    }
    run = _init(f"http://127.0.0.1:{closed_port}", tmp_path, model=_model(), config=config)
    try:
        assert run.spec.config == {
            "max_grad_norm": "inf",
            "floor": "-inf",
            "nested": {"lr": [1e-3, "nan"], "tag\ufffd": "a\ufffdb"},
            "ok": 1.5,
        }
    finally:
        run.finish(timeout=1)
