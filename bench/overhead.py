"""Training overhead of the sedmon client: the same CPU training run with and without it.

A small GPT-style transformer (the demo's `CharTransformer` at width 256 and 4 blocks, 3.3 M
parameters) trains on random tokens on the CPU.
"with" runs call `sedmon.init(..., optimizer=opt, every=50)` and `run.log` every
`--log-every` steps against a real server started here (a subprocess on the default
embedded SQLite, on this machine, so its CPU use counts against the run); "without" runs
are the same loop with no client. Runs alternate (without, with, without, ...) so that
drift in the machine's speed hits both sides. Prints the machine, its load average before
and after, the command, each run's wall time and the ratio of the medians; then, as a
figure that a busy machine disturbs less, what the client cost in time on the training
thread (init, log calls, sketches, finish) and in CPU time elsewhere (its sender thread,
the server's extra work), against the run without it. `--markdown` prints the
docs/benchmarks.md section. `--interleave` instead trains both models in lockstep in one
process (a step of one, a step of the other), which a shared machine's changing load
disturbs far less; the client's background work then slows both sides.

    .venv/bin/python bench/overhead.py [--steps 300] [--repeats 3] [--every 50]
                                       [--log-every 1] [--markdown] [--interleave]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sedmon  # noqa: E402
from demo.models import CharConfig, CharTransformer  # noqa: E402

TOKEN = "bench-admin-token"


@dataclass(frozen=True)
class ClientCost:
    """What one run with the client spent on the client, in seconds."""

    init: float  # sedmon.init, with the first checkpoint (step 0)
    log: float  # every run.log call
    sketch: float  # checkpoints after init (sketching on the training thread)
    finish: float  # run.finish(): delivering what was still queued
    sender_cpu: float  # CPU time of the sender thread (until finish)
    posts: int  # items delivered: checkpoints, metrics batches, the end

    @property
    def training_thread(self) -> float:
        return self.init + self.log + self.sketch + self.finish


def tiny_gpt() -> CharTransformer:
    """The demo's character transformer at bench size: vocabulary 256, context 64, width
    256, 4 blocks of 4 heads (3.3 M parameters)."""
    return CharTransformer(CharConfig(vocab_size=256, context=64, width=256, layers=4, heads=4))


def train(
    steps: int, run_kwargs: dict[str, object] | None, log_every: int = 1, seed: int = 0
) -> tuple[float, int, ClientCost | None]:
    """Wall seconds of `steps` optimizer steps (with the client when run_kwargs is given),
    the model's size, and what the client cost."""
    torch.manual_seed(seed)
    model = tiny_gpt()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    data = torch.randint(0, 256, (steps, 16, 65))
    run = None
    log_s = 0.0
    t0 = time.perf_counter()
    if run_kwargs is not None:
        run = sedmon.init(model=model, optimizer=opt, **run_kwargs)  # type: ignore[arg-type]
    init_s = time.perf_counter() - t0
    init_sketch = run.sketch_seconds if run is not None else 0.0
    for step in range(steps):
        batch = data[step]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if run is not None and step % log_every == 0:
            t_log = time.perf_counter()
            run.log({"loss": value})
            log_s += time.perf_counter() - t_log
    cost = None
    if run is not None:
        sender = run._sender
        sender_cpu = _thread_cpu_seconds(sender._thread.native_id) if sender else 0.0
        t_finish = time.perf_counter()
        run.finish()
        cost = ClientCost(
            init=init_s,
            log=log_s,
            sketch=run.sketch_seconds - init_sketch,
            finish=time.perf_counter() - t_finish,
            sender_cpu=sender_cpu,
            posts=sender.delivered if sender else 0,
        )
    params = sum(p.numel() for p in model.parameters())
    return time.perf_counter() - t0, params, cost


def _step(model: nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())


def train_interleaved(
    steps: int, run_kwargs: dict[str, object], log_every: int = 1
) -> tuple[float, float]:
    """Two identical models trained in lockstep, one step each in turn, the second with the
    client: (seconds of the first's steps, seconds of the second's steps plus init and
    finish). Both see the same machine load step by step; the client's background work
    (sender thread, server) slows both, so it counts about half here."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_gpt()
        models.append((model, torch.optim.AdamW(model.parameters(), lr=3e-4)))
    (plain, plain_opt), (watched, watched_opt) = models
    data = torch.randint(0, 256, (steps, 16, 65))
    t0 = time.perf_counter()
    run = sedmon.init(model=watched, optimizer=watched_opt, **run_kwargs)  # type: ignore[arg-type]
    with_s = time.perf_counter() - t0
    without_s = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        _step(plain, plain_opt, data[step])
        t1 = time.perf_counter()
        value = _step(watched, watched_opt, data[step])
        if step % log_every == 0:
            run.log({"loss": value})
        t2 = time.perf_counter()
        without_s += t1 - t0
        with_s += t2 - t1
    t0 = time.perf_counter()
    run.finish()
    return without_s, with_s + time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "SEDMON_HOME": str(home), "SEDMON_ADMIN_TOKEN": TOKEN}
    exe = Path(sys.executable).parent / "sedmon-server"
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=1, help="run.log every N steps")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="train both runs in lockstep in one process (steadier on a shared machine)",
    )
    args = parser.parse_args()
    if args.interleave:
        interleaved(args)
        return

    load_before = _loadavg()
    without: list[float] = []
    with_client: list[float] = []
    costs: list[ClientCost] = []
    server_without: list[float] = []  # server CPU seconds during each run
    server_with: list[float] = []
    params = 0
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            train(20, None)  # warm-up: allocator, kernels
            for r in range(args.repeats):
                cpu = _process_cpu_seconds(proc.pid)
                seconds, params, _ = train(args.steps, None)
                without.append(seconds)
                server_without.append(_process_cpu_seconds(proc.pid) - cpu)
                kwargs = {
                    "project": "bench",
                    "name": f"overhead-{os.getpid()}-{r}",
                    "server": url,
                    "token": TOKEN,
                    "every": args.every,
                    "spool_dir": Path(tmp) / "spool",
                }
                cpu = _process_cpu_seconds(proc.pid)
                seconds, _, cost = train(args.steps, kwargs, args.log_every)
                with_client.append(seconds)
                server_with.append(_process_cpu_seconds(proc.pid) - cpu)
                assert cost is not None
                costs.append(cost)
                print(
                    f"repeat {r}: without {without[-1]:.2f} s, with {with_client[-1]:.2f} s "
                    f"(client on the training thread {cost.training_thread:.3f} s, sender thread "
                    f"{cost.sender_cpu:.2f} s CPU, server {server_with[-1]:.2f} s CPU, load "
                    f"{_loadavg()})"
                )
        finally:
            proc.terminate()
            proc.wait(10)
    load_after = _loadavg()

    base = statistics.median(without)
    ratio = statistics.median(with_client) / base
    thread = [c.training_thread / w for c, w in zip(costs, with_client, strict=True)]
    background = [
        (c.sender_cpu + s - s0) / w
        for c, s, s0, w in zip(costs, server_with, server_without, with_client, strict=True)
    ]
    accounted = statistics.median(t + b for t, b in zip(thread, background, strict=True))

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}"

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    command = (
        f"bench/overhead.py --steps {args.steps} --repeats {args.repeats} --every {args.every}"
        f" --log-every {args.log_every}"
    )
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print(
        f"model: {params / 1e6:.2f} M parameters; {args.steps} steps; checkpoint every "
        f"{args.every}; run.log every {args.log_every} step(s)"
    )
    print(f"without: {', '.join(f'{s:.2f}' for s in without)} s")
    print(f"with:    {', '.join(f'{s:.2f}' for s in with_client)} s")
    print(
        f"overhead ratio (median with / median without): {ratio:.4f} ({(ratio - 1) * 100:+.2f} %)"
    )
    print(
        "client on the training thread, median s per run: "
        f"init {med([c.init for c in costs])}, log {med([c.log for c in costs])}, "
        f"sketches {med([c.sketch for c in costs])}, finish {med([c.finish for c in costs])}"
        f" = {statistics.median(thread) * 100:.2f} % of the run"
    )
    print(
        "client CPU elsewhere, median s per run: "
        f"sender thread {med([c.sender_cpu for c in costs])}, server {med(server_with)} "
        f"(without the client {med(server_without)}) = "
        f"{statistics.median(background) * 100:.2f} % of the run"
    )
    print(f"posts (items delivered): {', '.join(str(c.posts) for c in costs)} per run")
    print(
        "accounted cost (training thread + CPU elsewhere, as if none of it overlapped "
        f"training): {accounted * 100:.2f} % of the run"
    )
    if args.markdown:
        print()
        print(f"`{command}` on {machine} (torch {torch.__version__}, CPU).")
        print(f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.")
        print()
        print("| run | wall time per run (s) | median (s) |")
        print("|---|---|---|")
        print(f"| without client | {', '.join(f'{s:.2f}' for s in without)} | {base:.2f} |")
        print(
            f"| with client (every={args.every}, log every {args.log_every} step(s)) | "
            f"{', '.join(f'{s:.2f}' for s in with_client)} | {statistics.median(with_client):.2f} |"
        )
        print()
        print(f"Wall-time overhead: {(ratio - 1) * 100:+.2f} % (median against median).")
        print(
            f"Accounted cost: {accounted * 100:.2f} % of the run (training thread "
            f"{statistics.median(thread) * 100:.2f} %: init {med([c.init for c in costs])} s, "
            f"log {med([c.log for c in costs])} s, sketches {med([c.sketch for c in costs])} s, "
            f"finish {med([c.finish for c in costs])} s; CPU elsewhere "
            f"{statistics.median(background) * 100:.2f} %: sender thread "
            f"{med([c.sender_cpu for c in costs])} s, server {med(server_with)} s against "
            f"{med(server_without)} s without the client); "
            f"{statistics.median([c.posts for c in costs]):.0f} posts per run."
        )


def interleaved(args: argparse.Namespace) -> None:
    """The --interleave measurement: per repeat, the ratio of the client's steps to the
    plain ones, trained in lockstep."""
    load_before = _loadavg()
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            train(20, None)  # warm-up: allocator, kernels
            for r in range(args.repeats):
                kwargs = {
                    "project": "bench",
                    "name": f"interleaved-{os.getpid()}-{r}",
                    "server": url,
                    "token": TOKEN,
                    "every": args.every,
                    "spool_dir": Path(tmp) / "spool",
                }
                without_s, with_s = train_interleaved(args.steps, kwargs, args.log_every)
                ratios.append(with_s / without_s)
                print(
                    f"repeat {r}: without {without_s:.2f} s, with {with_s:.2f} s, "
                    f"ratio {ratios[-1]:.4f} (load {_loadavg()})"
                )
        finally:
            proc.terminate()
            proc.wait(10)
    command = (
        f"bench/overhead.py --interleave --steps {args.steps} --repeats {args.repeats} "
        f"--every {args.every} --log-every {args.log_every}"
    )
    ratio = statistics.median(ratios)
    print(f"`{command}`; load average before {load_before}, after {_loadavg()}")
    print(
        f"ratios {', '.join(f'{x:.4f}' for x in ratios)}; median {ratio:.4f} "
        f"({(ratio - 1) * 100:+.2f} %)"
    )


def _process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux; 0 elsewhere)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _thread_cpu_seconds(native_id: int | None) -> float:
    """CPU seconds used so far by one thread of this process (Linux; 0 elsewhere)."""
    if native_id is None:
        return 0.0
    return _stat_cpu_seconds(Path(f"/proc/self/task/{native_id}/stat"))


def _stat_cpu_seconds(path: Path) -> float:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _loadavg() -> str:
    """The machine's load average, as /proc/loadavg's first three fields."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


if __name__ == "__main__":
    main()
