"""Sketch speed and memory: the client's torch sketcher against one plain read of the parameters.

    .venv/bin/python bench/sketch.py [--sizes 10,50] [--dim 100] [--repeats 5] [--quick]

Per size D (millions of float32 parameters, on CPU, in a model-like layout of 4 MB to
36 MB tensors plus small vectors), in one process and one run:
  - read: one plain read of every parameter (`tensor.sum()` in float32), the baseline;
  - countsketch: `sedmon._sketcher.sketch_groups`, the path `sedmon.sketch_parameters`
    and the training hook take;
  - gaussian: the dense JL matrix (O(k D)), timed on the first G elements
    (`--gaussian-sample`, default 1M; G/2 too, to check that its cost is linear) and
    scaled to D;
  - extra memory: peak RSS during the sketch minus RSS before it, in a fresh child
    process per method (Linux clear_refs resets the peak), so what the sketcher
    allocates is measured, not the parameters.
CPU times are paired and cache-cold: each repeat evicts the caches (a 64 MB write),
times the read, evicts again and times the countsketch; the ratio is the median of the
per-repeat ratios, so a slow moment of a shared machine hits both sides of a pair.
Medians of `--repeats`; ratios against the read of the same run. With CUDA present the
same on the GPU (124M parameters, CUDA events). Writes bench/results/sketch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sedmon._sketcher import ShardPiece, sketch_groups, sketch_pieces
from sedmon_core.sketch import SketchSpec

ROOT = Path(__file__).resolve().parents[1]
GAUSSIAN_SAMPLE = 1_000_000


def make_parameters(millions: float, device: str = "cpu") -> list[tuple[str, torch.Tensor]]:
    """Transformer-like tensors: (d, 4d) and (4d, d) matrices, (d, 3d), vectors of d."""
    total = int(millions * 1_000_000)
    d = 1024
    shapes: list[tuple[int, ...]] = []
    while sum(int(torch.Size(s).numel()) for s in shapes) < total:
        shapes += [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d), (d,), (d,), (4 * d,)]
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = []
    for i, shape in enumerate(shapes):
        t = torch.randn(shape, generator=gen, dtype=torch.float32)
        out.append((f"block.{i // 7}.p{i % 7}", t.to(device)))
    return out


def timed(
    fn: Callable[[], Any], repeats: int, sync: Callable[[], None], warm: bool = True
) -> float:
    if warm:
        fn()  # caches, plans, allocator
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_EVICT = torch.empty(0)


def evict_caches() -> None:
    """Write 64 MB (twice the last-level cache of common servers) so that the next timed
    call reads the parameters from memory, as a training step's sketch would."""
    global _EVICT
    if not _EVICT.numel():
        _EVICT = torch.empty(16 * 2**20, dtype=torch.float32)
    _EVICT.fill_(1.0)


def paired_cold(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int
) -> tuple[float, float, float]:
    """Median times of first and second, and the median of second/first per repeat; each
    call after a cache eviction, the two alternating."""
    first()
    second()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((first, a), (second, b)):
            evict_caches()
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(method: str, millions: float, dim: int, sample: int) -> None:
    """In a fresh process: allocate, reset the peak, sketch once, print extra peak bytes."""
    params = make_parameters(millions)
    spec = SketchSpec("countsketch" if method == "read" else method, dim, 0)
    groups = {"all": [n for n, _ in params]}
    if method == "gaussian":  # its memory is per step, the same for any D: a sample
        params = [("w", params[0][1].reshape(-1)[:sample])]
        groups = {"all": ["w"]}
    if method == "read":
        fn: Callable[[], Any] = lambda: [t.sum() for _, t in params]  # noqa: E731
    else:
        fn = lambda: sketch_groups(spec, params, groups)  # noqa: E731
    small = [(n, t.reshape(-1)[:5000]) for n, t in params[:3]]
    warm = {"all": [n for n, _ in small]}
    sketch_groups(spec, small, warm)  # map the kernels' code pages before measuring
    before = rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    print(json.dumps({"extra_bytes": peak_rss_bytes() - before}))


def extra_memory(method: str, millions: float, dim: int, sample: int) -> int:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            method,
            f"--sizes={millions}",
            f"--dim={dim}",
            f"--gaussian-sample={sample}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"])


def cpu_size(millions: float, dim: int, repeats: int, sample: int) -> dict[str, Any]:
    params = make_parameters(millions)
    n = sum(t.numel() for _, t in params)
    groups = {"all": [name for name, _ in params]}
    spec = SketchSpec("countsketch", dim, 0)

    def nothing() -> None:
        return None

    read, count, ratio = paired_cold(
        lambda: [t.sum() for _, t in params],
        lambda: sketch_groups(spec, params, groups),
        repeats,
    )
    gspec = SketchSpec("gaussian", dim, 0)
    flat = params[0][1].reshape(-1)
    half = sample // 2
    sketch_pieces(gspec, [ShardPiece("w", flat[:1000])])  # warm the kernels
    g_half = timed(lambda: sketch_pieces(gspec, [ShardPiece("w", flat[:half])]), 1, nothing, False)
    g_full = timed(
        lambda: sketch_pieces(gspec, [ShardPiece("w", flat[:sample])]), 1, nothing, False
    )
    gaussian = g_full * n / sample
    memory = {
        m: extra_memory(m, millions, dim, sample) for m in ("read", "countsketch", "gaussian")
    }
    return {
        "parameters": n,
        "tensors": len(params),
        "read_s": read,
        "countsketch_s": count,
        "gaussian_s_scaled": gaussian,
        "gaussian_linearity": g_full / g_half,
        "countsketch_over_read": ratio,
        "gaussian_over_countsketch": gaussian / count,
        "extra_mb": {m: b / 2**20 for m, b in memory.items()},
        "read_gb_s": n * 4 / read / 1e9,
    }


def gpu_figures(dim: int, repeats: int) -> dict[str, Any]:
    params = make_parameters(124, "cuda")
    n = sum(t.numel() for _, t in params)
    groups = {"all": [name for name, _ in params]}
    spec = SketchSpec("countsketch", dim, 0)
    sync = torch.cuda.synchronize
    read = timed(lambda: [t.sum() for _, t in params], repeats, sync)
    count = timed(lambda: sketch_groups(spec, params, groups), repeats, sync)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    sketch_groups(spec, params, groups)
    extra = torch.cuda.max_memory_allocated() - base
    return {
        "device": torch.cuda.get_device_name(),
        "parameters": n,
        "read_ms": read * 1e3,
        "countsketch_ms": count * 1e3,
        "countsketch_over_read": count / read,
        "extra_mb": extra / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50", help="millions of parameters, comma list")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="sizes 2 and 5, 3 repeats, 100 K")
    parser.add_argument("--gaussian-sample", type=int, default=GAUSSIAN_SAMPLE)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, float(args.sizes), args.dim, args.gaussian_sample)
        return
    sizes = [2.0, 5.0] if args.quick else [float(s) for s in args.sizes.split(",")]
    repeats = 3 if args.quick else args.repeats
    sample = 100_000 if args.quick else args.gaussian_sample
    torch.set_num_threads(torch.get_num_threads())
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "cpu": {},
    }
    print(
        f"{'D':>6} {'read ms':>8} {'count ms':>9} {'x read':>7} {'gauss s':>8} "
        f"{'g/count':>8} {'lin':>5} {'extra MB (read/count/gauss)':>28}"
    )
    for millions in sizes:
        r = cpu_size(millions, args.dim, repeats, sample)
        results["cpu"][f"{millions:g}M"] = r
        mem = r["extra_mb"]
        print(
            f"{millions:>5g}M {r['read_s'] * 1e3:8.1f} {r['countsketch_s'] * 1e3:9.1f} "
            f"{r['countsketch_over_read']:7.1f} {r['gaussian_s_scaled']:8.1f} "
            f"{r['gaussian_over_countsketch']:8.0f} {r['gaussian_linearity']:5.2f} "
            f"{mem['read']:9.1f} {mem['countsketch']:8.1f} {mem['gaussian']:8.1f}"
        )
    if torch.cuda.is_available():
        g = gpu_figures(args.dim, repeats)
        results["cuda"] = g
        print(
            f"GPU {g['device']}: 124M read {g['read_ms']:.2f} ms, countsketch "
            f"{g['countsketch_ms']:.2f} ms ({g['countsketch_over_read']:.1f}x), "
            f"extra {g['extra_mb']:.1f} MB"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sketch.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
