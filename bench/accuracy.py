"""Sketch accuracy on the deltas of real small training runs: gap ratio, sketched vs exact.

    python bench/accuracy.py [--rerun] [--no-docs]

For the demo's character transformer (0.64 M parameters, corpus switch at step 600) and
its grokking MLP (64 k parameters), per window: |R*_sketch - R*_exact| / R*_exact (each
with its own signal rank, rule `half`). Countsketch is the product's `sketch_parameters`;
the Gaussian baseline is a dense N(0, 1/k) JL (demo/sketch_accuracy.py says why it is not
the product's hash-based generator). Three sketch seeds per k. Targets: countsketch at
k = 10 W within 10 % mean relative error, and at most 1.25 x the Gaussian's error.

Uses the recordings of `make validate` (.sedmon/validate) when present, else records
them (a few minutes on 2 cores). Prints the tables and replaces the "Sketch accuracy"
section of docs/benchmarks.md (other sections are left as they are).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.recording import Recording, load_or_record  # noqa: E402
from demo.sketch_accuracy import gap_ratio_error  # noqa: E402
from demo.validate import RUNS  # noqa: E402

SECTION = "## Sketch accuracy"
TARGET_ERROR = 0.10
TARGET_RATIO = 1.25


def _errors(rec: Recording, method: str, k: int, window: int) -> tuple[float, float, float]:
    """(mean over seeds of the mean error, sd over seeds, mean worst window)."""
    seeds = sorted({s for (m, kk, s) in rec.sketch_dots if m == method and kk == k})
    errs = [
        gap_ratio_error(rec.dots, rec.sketch_dots[(method, k, s)], window, "half", k) for s in seeds
    ]
    means = np.array([e.mean for e in errs])
    return float(means.mean()), float(means.std()), float(np.mean([e.worst for e in errs]))


def run_tables(recs: dict[str, Recording]) -> tuple[list[str], bool, list[float]]:
    """Markdown lines of the tables, whether every target holds, the seed-to-seed sds."""
    lines: list[str] = []
    ok = True
    sds: list[float] = []
    for name, rec in recs.items():
        dims = sorted({k for (m, k, _) in rec.sketch_dots if m == "gaussian"})
        lines += [
            f"**{name}** (D = {rec.parameters:,}, N = {rec.dots.shape[0]} deltas, W = 10):",
            "",
            "| k | countsketch mean | worst | gaussian mean | worst | cs / gauss |",
            "|---|---|---|---|---|---|",
        ]
        for k in dims:
            cs, cs_sd, cs_worst = _errors(rec, "countsketch", k, 10)
            ga, ga_sd, ga_worst = _errors(rec, "gaussian", k, 10)
            sds += [cs_sd, ga_sd]
            lines.append(
                f"| {k} | {100 * cs:.1f} ± {100 * cs_sd:.1f} % | {100 * cs_worst:.0f} % | "
                f"{100 * ga:.1f} ± {100 * ga_sd:.1f} % | {100 * ga_worst:.0f} % | {cs / ga:.2f} |"
            )
        lines += ["", "At k = 10 W:", "", "| W | k | countsketch | gaussian | ratio | target |"]
        lines.append("|---|---|---|---|---|---|")
        for window in (10, 20, 30):
            k = 10 * window
            if k not in dims:
                continue
            cs = _errors(rec, "countsketch", k, window)[0]
            ga = _errors(rec, "gaussian", k, window)[0]
            met = cs <= TARGET_ERROR and cs <= TARGET_RATIO * ga
            ok &= met
            lines.append(
                f"| {window} | {k} | {100 * cs:.1f} % | {100 * ga:.1f} % | {cs / ga:.2f} | "
                f"{'met' if met else 'MISSED'} |"
            )
        lines.append("")
    return lines, ok, sds


def write_section(path: Path, body: list[str]) -> None:
    """Replace (or append) the "Sketch accuracy" section of docs/benchmarks.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join([SECTION, "", *body]).rstrip() + "\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        rest = text[nxt + 1 :] if nxt >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rerun", action="store_true", help="retrain even when cached")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    specs = [s for s in RUNS if s.jl_dims]
    recs = {s.name: load_or_record(s, rerun=args.rerun) for s in specs}
    tables, ok, sds = run_tables(recs)
    body = [
        "Gap-ratio error of JL sketches against exact deltas, on the demo's real runs",
        "(`python bench/accuracy.py`, from the `make validate` recordings). Per window:",
        "|R*_sketch - R*_exact| / R*_exact, each with its own signal rank (rule `half`); mean",
        "over windows, then mean ± sd over 3 sketch seeds; `worst`: the worst window, averaged",
        "over seeds. Countsketch is the product's `sketch_parameters` (differenced position",
        "sketches, as the server forms deltas); the Gaussian is a dense N(0, 1/k) JL applied",
        "to the deltas (same distribution as the product's `gaussian`, nested rows over k).",
        f"Targets at k = 10 W: countsketch mean error <= {100 * TARGET_ERROR:.0f} % and <= "
        f"{TARGET_RATIO} x the Gaussian's.",
        "",
        f"Machine: {platform.machine()}, 2 CPU cores (shared).",
        "",
        *tables,
        f"All targets met: {'yes' if ok else 'no'}. Read the ratios with the ± column: the",
        f"seed-to-seed sd of a method's mean error is {100 * min(sds):.1f}-"
        f"{100 * max(sds):.1f} points here, so with 3 seeds ratios",
        "within about ±0.2 of 1 do not separate the two methods.",
        "",
        "History: until 2026-11-29 every countsketch block reused the same relative signs, so",
        "offsets that share a bucket in the table added up coherently over blocks; on the",
        "grokking MLP at k = 100 that measured 10.2 % against the Gaussian's 7.6 % (x1.33).",
        "The per-block sign words of `sedmon_core.sketch` removed that (the test",
        "`test_a_delta_repeating_over_blocks_is_sketched_as_well_as_a_random_one`: the norm",
        "error of a rank-1 delta was x2.1 a random vector's with shared signs, under x1.2 now).",
    ]
    print("\n".join(body))
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", body)
        print(f"\nwrote the '{SECTION[3:]}' section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
