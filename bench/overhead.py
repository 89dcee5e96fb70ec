"""Training overhead of the sedmon client: the same CPU training run with and without it.

A small GPT-style transformer (about 3 M parameters) trains on random tokens on the CPU.
"with" runs call `sedmon.init(..., optimizer=opt, every=50)` and `run.log` every step
against a real server started here (a subprocess on the default embedded SQLite, on this
machine, so its CPU use counts against the run); "without" runs are the same loop with no
client. Runs alternate (without, with, without, ...) so that drift in the machine's speed
hits both sides. Prints the machine, the command, each run's wall time and the ratio of the
medians; `--markdown` prints the docs/benchmarks.md section.

    .venv/bin/python bench/overhead.py [--steps 300] [--repeats 3] [--every 50]
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
from pathlib import Path

import httpx
import torch
from torch import nn
from torch.nn import functional as F

import sedmon

TOKEN = "bench-admin-token"
LOG_EVERY = 1
SKETCH: list[float] = []
"""Seconds spent sketching on the training thread, per run with the client."""
FINISH: list[float] = []
"""Seconds `run.finish()` took (delivering what was still queued), per run."""


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 256, context: int = 64, width: int = 256, layers: int = 4):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList([Block(width, 4) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        out: torch.Tensor = self.lm_head(self.ln_f(x))
        return out


def train(steps: int, run_kwargs: dict[str, object] | None, seed: int = 0) -> tuple[float, int]:
    """Wall seconds of `steps` optimizer steps (with the client when run_kwargs is given)."""
    torch.manual_seed(seed)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    data = torch.randint(0, 256, (steps, 16, 65))
    run = None
    t0 = time.perf_counter()
    if run_kwargs is not None:
        run = sedmon.init(model=model, optimizer=opt, **run_kwargs)  # type: ignore[arg-type]
    for step in range(steps):
        batch = data[step]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if run is not None and step % LOG_EVERY == 0:
            run.log({"loss": loss.item()})
        else:
            loss.item()
    if run is not None:
        t_finish = time.perf_counter()
        run.finish()
        FINISH.append(time.perf_counter() - t_finish)
        SKETCH.append(run.sketch_seconds)
    params = sum(p.numel() for p in model.parameters())
    return time.perf_counter() - t0, params


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
    args = parser.parse_args()
    global LOG_EVERY
    LOG_EVERY = args.log_every

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            without: list[float] = []
            with_client: list[float] = []
            train(20, None)  # warm-up: allocator, kernels
            params = 0
            for r in range(args.repeats):
                seconds, params = train(args.steps, None)
                without.append(seconds)
                kwargs = {
                    "project": "bench",
                    "name": f"overhead-{os.getpid()}-{r}",
                    "server": url,
                    "token": TOKEN,
                    "every": args.every,
                    "spool_dir": Path(tmp) / "spool",
                }
                seconds, _ = train(args.steps, kwargs)
                with_client.append(seconds)
                print(f"repeat {r}: without {without[-1]:.2f} s, with {with_client[-1]:.2f} s")
        finally:
            proc.terminate()
            proc.wait(10)

    ratio = statistics.median(with_client) / statistics.median(without)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    command = (
        f"bench/overhead.py --steps {args.steps} --repeats {args.repeats} --every {args.every}"
        f" --log-every {args.log_every}"
    )
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"model: {params / 1e6:.2f} M parameters; {args.steps} steps; checkpoint every {args.every}"
    )
    print(f"without: {', '.join(f'{s:.2f}' for s in without)} s")
    print(f"with:    {', '.join(f'{s:.2f}' for s in with_client)} s")
    print(f"sketching on the training thread: {', '.join(f'{x:.3f}' for x in SKETCH)} s per run")
    print(f"finish(): {', '.join(f'{x:.3f}' for x in FINISH)} s per run")
    print(
        f"overhead ratio (median with / median without): {ratio:.4f} ({(ratio - 1) * 100:+.2f} %)"
    )
    if args.markdown:
        print()
        print("## Client overhead")
        print()
        print(f"`{command}` on {machine} (torch {torch.__version__}, CPU).")
        print()
        print("| run | wall time per run (s) | median (s) |")
        print("|---|---|---|")
        print(
            f"| without client | {', '.join(f'{s:.2f}' for s in without)} | "
            f"{statistics.median(without):.2f} |"
        )
        print(
            f"| with client (every={args.every}, log every {args.log_every} step(s)) | "
            f"{', '.join(f'{s:.2f}' for s in with_client)} | {statistics.median(with_client):.2f} |"
        )
        print()
        print(
            f"Overhead: {(ratio - 1) * 100:+.2f} % of wall time (target <= 2 %). Sketching on the"
        )
        print(
            f"training thread: {statistics.median(SKETCH):.3f} s per run; finish(): "
            f"{statistics.median(FINISH):.3f} s per run."
        )


if __name__ == "__main__":
    main()
