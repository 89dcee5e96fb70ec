"""Offline recordings of the demo jobs: exact and sketched dot matrices of the deltas, cached.

A recording runs one job with no server. At every checkpoint it keeps the model's exact
parameters per layer group (`sketch_parameters(method="identity", groups="layers")`, the
product's own grouping) in float32, and the product's countsketch of the parameters for
each requested (k, seed). After the run it forms the deltas d_t = theta_t - theta_{t-1}
(float64) and keeps only what the analyses need, all N x N (N deltas):

- `dots`: exact <d_i, d_j> of the whole model; `group_dots[g]`: the same per layer group;
- `sketch_dots[("countsketch", k, seed)]`: from differenced countsketches (as the server
  forms them);
- `sketch_dots[("gaussian", k, seed)]`: a dense Gaussian JL of the deltas (see
  `demo.sketch_accuracy.dense_gaussian_dots`).

A recording is saved under .sedmon/validate/<name>.npz + .json, so re-rendering the report
does not retrain. Deltas of size D are never written to disk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from demo.jobs import CharSettings, CheckpointRecord, GrokSettings, JobResult, char_job, grok_job
from demo.sketch_accuracy import dense_gaussian_dots

CACHE_DIR = Path(".sedmon/validate")
CACHE_VERSION = 1
"""Bumped when what a recording holds, or how its job trains, changes."""

SketchKey = tuple[str, int, int]
"""(method, k, seed)."""


@dataclass(frozen=True)
class RunSpec:
    """One recorded run. job: "char" | "grok"; shift_step: char only (None: control).

    jl_dims / jl_seeds: the (k, seed) grid sketched with countsketch and the dense Gaussian;
    every run also gets countsketch at `monitor_dim` (seed 0), what a live run would send.
    weight_decay: grok only, overrides GrokSettings' 1.0 (0.0: a control that should not
    generalise).
    """

    name: str
    job: str
    seed: int
    steps: int
    every: int
    shift_step: int | None = None
    jl_dims: tuple[int, ...] = ()
    jl_seeds: tuple[int, ...] = ()
    monitor_dim: int = 100
    weight_decay: float | None = None


@dataclass
class Recording:
    """What a recorded run keeps: metrics per checkpoint and N x N dot matrices of deltas."""

    spec: RunSpec
    result: JobResult
    dots: np.ndarray
    group_dots: dict[str, np.ndarray]
    group_sizes: dict[str, int]
    sketch_dots: dict[SketchKey, np.ndarray] = field(default_factory=dict)
    record_seconds: float = 0.0
    sketch_seconds: float = 0.0

    @property
    def parameters(self) -> int:
        """D, the number of learned parameters."""
        return int(sum(self.group_sizes.values()))

    @property
    def steps(self) -> np.ndarray:
        """(N + 1,) checkpoint steps."""
        return np.array([r.step for r in self.result.records], dtype=np.int64)

    def metric(self, name: str) -> np.ndarray:
        """(N + 1,) one CheckpointRecord field per checkpoint (nan where absent)."""
        values = [getattr(r, name) for r in self.result.records]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def record(spec: RunSpec) -> Recording:
    """Train the run of `spec` (no server) and reduce it to dot matrices."""
    from sedmon.sketching import sketch_parameters

    group_thetas: dict[str, list[np.ndarray]] = {}
    sketches: dict[SketchKey, list[np.ndarray]] = {}
    sketch_keys: list[SketchKey] = [("countsketch", spec.monitor_dim, 0)]
    sketch_keys += [("countsketch", k, s) for k in spec.jl_dims for s in spec.jl_seeds]
    sketch_keys = list(dict.fromkeys(sketch_keys))
    sketch_time = [0.0]

    def keep(step: int, model: nn.Module) -> None:
        exact = sketch_parameters(model, dim=1, method="identity", groups="layers")
        for group, theta in exact.items():
            group_thetas.setdefault(group, []).append(theta.astype(np.float32))
        started = time.perf_counter()
        for method, k, seed in sketch_keys:
            y = sketch_parameters(model, dim=k, method=method, seed=seed, groups="all")["all"]
            sketches.setdefault((method, k, seed), []).append(y)
        sketch_time[0] += time.perf_counter() - started

    started = time.perf_counter()
    if spec.job == "char":
        result = char_job(
            None, spec.seed, spec.steps, spec.every, spec.shift_step, CharSettings(), keep
        )
    elif spec.job == "grok":
        cfg = GrokSettings()
        if spec.weight_decay is not None:
            cfg = GrokSettings(weight_decay=spec.weight_decay)
        result = grok_job(None, spec.seed, spec.steps, spec.every, cfg, keep)
    else:
        raise ValueError(f"unknown job {spec.job!r}")
    group_dots: dict[str, np.ndarray] = {}
    group_sizes: dict[str, int] = {}
    deltas_by_group: list[np.ndarray] = []
    for group, thetas in group_thetas.items():
        deltas = np.diff(np.stack(thetas).astype(np.float64), axis=0)
        group_dots[group] = deltas @ deltas.T
        group_sizes[group] = int(deltas.shape[1])
        deltas_by_group.append(deltas.astype(np.float32))
    group_thetas.clear()
    dots = np.sum(list(group_dots.values()), axis=0)
    sketch_dots: dict[SketchKey, np.ndarray] = {}
    for key, ys in sketches.items():
        d = np.diff(np.stack(ys), axis=0)
        sketch_dots[key] = d @ d.T
    if spec.jl_dims:
        t0 = time.perf_counter()
        all_deltas = np.concatenate(deltas_by_group, axis=1)
        for seed in spec.jl_seeds:
            for k, g in dense_gaussian_dots(all_deltas, spec.jl_dims, seed).items():
                sketch_dots[("gaussian", k, seed)] = g
        sketch_time[0] += time.perf_counter() - t0
    return Recording(
        spec=spec,
        result=result,
        dots=dots,
        group_dots=group_dots,
        group_sizes=group_sizes,
        sketch_dots=sketch_dots,
        record_seconds=time.perf_counter() - started,
        sketch_seconds=sketch_time[0],
    )


def _paths(name: str, cache_dir: Path) -> tuple[Path, Path]:
    return cache_dir / f"{name}.npz", cache_dir / f"{name}.json"


def save(rec: Recording, cache_dir: Path = CACHE_DIR) -> None:
    """Write a recording to <cache_dir>/<name>.npz (matrices) and .json (the rest)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    npz, meta = _paths(rec.spec.name, cache_dir)
    arrays: dict[str, np.ndarray] = {"dots": rec.dots}
    arrays.update({f"group:{g}": v for g, v in rec.group_dots.items()})
    arrays.update({f"sketch:{m}:{k}:{s}": v for (m, k, s), v in rec.sketch_dots.items()})
    np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]
    doc = {
        "version": CACHE_VERSION,
        "spec": rec.spec.__dict__,
        "result": rec.result.as_dict(),
        "group_sizes": rec.group_sizes,
        "record_seconds": rec.record_seconds,
        "sketch_seconds": rec.sketch_seconds,
    }
    meta.write_text(json.dumps(doc, indent=1))


def load(spec: RunSpec, cache_dir: Path = CACHE_DIR) -> Recording | None:
    """The cached recording of `spec`, or None when absent, stale or for another spec."""
    npz, meta = _paths(spec.name, cache_dir)
    if not (npz.exists() and meta.exists()):
        return None
    doc = json.loads(meta.read_text())
    stored = dict(doc.get("spec", {}))
    for key in ("jl_dims", "jl_seeds"):
        stored[key] = tuple(stored.get(key, ()))
    try:
        same = RunSpec(**stored) == spec
    except TypeError:
        same = False
    if doc.get("version") != CACHE_VERSION or not same:
        return None
    res = dict(doc["result"])
    records = [CheckpointRecord(**r) for r in res.pop("records")]
    result = JobResult(**res, records=records)
    group_dots: dict[str, np.ndarray] = {}
    sketch_dots: dict[SketchKey, np.ndarray] = {}
    with np.load(npz) as data:
        dots = data["dots"]
        for name in data.files:
            if name.startswith("group:"):
                group_dots[name[len("group:") :]] = data[name]
            elif name.startswith("sketch:"):
                _, method, k, s = name.split(":")
                sketch_dots[(method, int(k), int(s))] = data[name]
    return Recording(
        spec=spec,
        result=result,
        dots=dots,
        group_dots=group_dots,
        group_sizes={g: int(v) for g, v in doc["group_sizes"].items()},
        sketch_dots=sketch_dots,
        record_seconds=float(doc["record_seconds"]),
        sketch_seconds=float(doc["sketch_seconds"]),
    )


def load_or_record(spec: RunSpec, cache_dir: Path = CACHE_DIR, rerun: bool = False) -> Recording:
    """The cached recording of `spec`, recording (and caching) it when needed."""
    cached = None if rerun else load(spec, cache_dir)
    if cached is not None:
        return cached
    rec = record(spec)
    save(rec, cache_dir)
    return rec
