"""`make validate`: check the paper's properties on real small runs; write docs/validation.md.

    python -m demo.validate [--rerun] [--workers 2] [--out docs]

Records the runs of `RUNS` offline (no server; cached under .sedmon/validate, so a second
call only re-renders), then runs the product's own analyses (sedmon_core) on the exact
and sketched deltas and writes the report and its PNG plots (docs/validation/).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from demo.recording import CACHE_DIR, Recording, RunSpec, load, load_or_record

JL_DIMS: tuple[int, ...] = (50, 100, 200, 300, 500, 1000)
JL_SEEDS: tuple[int, ...] = (0, 1, 2)
SEEDS: tuple[int, ...] = (0, 1, 2)
CHAR_STEPS, CHAR_EVERY, SHIFT_STEP = 1000, 10, 600
GROK_STEPS, GROK_EVERY = 2000, 20


def _runs() -> list[RunSpec]:
    runs: list[RunSpec] = []
    for seed in SEEDS:
        dims, seeds = (JL_DIMS, JL_SEEDS) if seed == 0 else ((), ())
        char, grok = (CHAR_STEPS, CHAR_EVERY), (GROK_STEPS, GROK_EVERY)
        runs.append(RunSpec(f"char-shift-s{seed}", "char", seed, *char, SHIFT_STEP, dims, seeds))
        runs.append(RunSpec(f"grok-s{seed}", "grok", seed, *grok, None, dims, seeds))
        runs.append(RunSpec(f"char-control-s{seed}", "char", seed, *char))
    runs.append(RunSpec("grok-nowd-s0", "grok", 0, GROK_STEPS, GROK_EVERY, None, weight_decay=0.0))
    return runs


RUNS: list[RunSpec] = _runs()


def _record_one(spec: RunSpec, rerun: bool) -> str:
    started = time.perf_counter()
    load_or_record(spec, CACHE_DIR, rerun)
    return f"{spec.name}: {time.perf_counter() - started:.0f} s"


def record_all(workers: int = 2, rerun: bool = False) -> dict[str, Recording]:
    """Every run of RUNS, recorded in `workers` processes where not cached."""
    todo = [s for s in RUNS if rerun or load(s) is None]
    if todo:
        print(f"recording {len(todo)} runs in {workers} processes ...", flush=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for line in pool.map(_record_one, todo, [rerun] * len(todo)):
                print("  recorded", line, flush=True)
    out: dict[str, Recording] = {}
    for spec in RUNS:
        rec = load(spec)
        if rec is None:
            raise RuntimeError(f"recording {spec.name} missing after recording it")
        out[spec.name] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.validate", description=__doc__)
    parser.add_argument("--rerun", action="store_true", help="retrain even when cached")
    parser.add_argument("--workers", type=int, default=2, help="training processes")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="docs folder")
    parser.add_argument("--record-only", action="store_true", help="record, no report")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    recordings = record_all(args.workers, args.rerun)
    if args.record_only:
        return 0
    from demo.report import write_report

    path = write_report(recordings, args.out, time.perf_counter() - started)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
