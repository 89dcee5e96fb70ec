"""Offline analysis of a checkpoint folder: the spectral edge of every window, streaming.

Exact by default: each delta is theta_t - theta_{t-1} in float64 over all learned tensors
(sorted by name); its dot products with the previous W_max - 1 deltas extend a rolling Gram
(sedmon_core.roll_gram), whose trailing W x W blocks give each window's spectrum
(sedmon_core.window_spectra). At most two checkpoints and W_max - 1 deltas are in memory:
(W_max + 1) x D float64. With a sketch spec the vectors are the k-number sketches instead, as
the server would compute them.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from sedmon._checkpoints import (
    CheckpointFile,
    Layout,
    as_float64,
    learned_tensors,
    load_raw,
)
from sedmon._errors import CheckpointFolderError
from sedmon_core.sketch import SketchSpec, sketch_named
from sedmon_core.spectrum import WindowSpectrum, roll_gram, window_spectra

ALL = "all"


class Progress:
    """A one-line progress bar on stderr (drawn only on a terminal)."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class Checkpoint:
    """One checkpoint reduced to what the analysis needs."""

    step: int
    vectors: dict[str, np.ndarray]
    """Group -> float64 vector: the flattened parameters (exact) or their sketch."""
    metrics: dict[str, float] = field(default_factory=dict)


def _group_of(names: list[str], groups: str) -> dict[str, str]:
    if groups == ALL:
        return dict.fromkeys(names, ALL)
    from sedmon._parameters import assign_groups

    return dict(assign_groups(names, groups))


def read_checkpoints(
    files: Sequence[CheckpointFile],
    spec: SketchSpec | None,
    groups: str = ALL,
    only_group: str | None = None,
    progress: Progress | None = None,
) -> Iterator[Checkpoint]:
    """Each file as group vectors, in order; one file in memory at a time.

    spec None: exact flattened parameters per group; else the sketch per group.
    Raises CheckpointFolderError when a key or a shape changes along the folder.
    """
    layout: Layout | None = None
    membership: dict[str, str] | None = None
    for f in files:
        state, metrics = load_raw(f.path)
        named = learned_tensors(state)
        if not named:
            raise CheckpointFolderError(f"{f.path.name}: no learned tensors")
        current = Layout.of(named)
        if layout is None:
            layout = current
            membership = _group_of([n for n, _ in named], groups)
            if only_group is not None and only_group not in set(membership.values()):
                known = ", ".join(sorted(set(membership.values())))
                raise CheckpointFolderError(f"no group {only_group!r}; groups here: {known}")
        else:
            layout.check(current, f.path)
        assert membership is not None
        by_group: dict[str, list[tuple[str, Any]]] = {}
        for name, tensor in named:
            g = membership[name]
            if only_group is None or g == only_group:
                by_group.setdefault(g, []).append((name, tensor))
        vectors = {g: _vector(spec, pairs) for g, pairs in by_group.items()}
        del state, named, by_group
        if progress is not None:
            progress.advance()
        yield Checkpoint(f.step, vectors, metrics)


def _vector(spec: SketchSpec | None, pairs: list[tuple[str, Any]]) -> np.ndarray:
    if spec is None or spec.method == "identity":
        return np.concatenate([as_float64(t) for _, t in pairs])
    if isinstance(pairs[0][1], np.ndarray):
        return sketch_named(spec, pairs)
    from sedmon._sketcher import ShardPiece, sketch_pieces

    pieces = [ShardPiece(name, t) for name, t in pairs]
    return np.asarray(sketch_pieces(spec, pieces).cpu().numpy(), dtype=np.float64)


@dataclass
class Analysis:
    """The spectra of one group for every window: window -> [(step, spectrum)]."""

    group: str
    rank_rule: str
    windows: list[int]
    steps: list[int]
    spectra: dict[int, list[tuple[int, WindowSpectrum]]]

    def rest_shape(self, window: int) -> dict[str, Any]:
        """Exactly the REST spectrum response for one window (without run_id)."""
        return {
            "window": window,
            "group": self.group,
            "rank_rule": self.rank_rule,
            "points": [{"step": s, **ws.as_dict()} for s, ws in self.spectra[window]],
        }


def analyze(
    checkpoints: Iterator[Checkpoint],
    windows: Sequence[int],
    rank_rule: str = "half",
    group: str = ALL,
    noise_dim: int | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> Analysis:
    """Streaming spectra of one group's deltas for every window size (see module docstring)."""
    w_max = max(windows)
    spectra: dict[int, list[tuple[int, WindowSpectrum]]] = {w: [] for w in windows}
    steps: list[int] = []
    previous: np.ndarray | None = None
    deltas: deque[np.ndarray] = deque(maxlen=w_max - 1)
    gram = np.zeros((0, 0))
    for cp in checkpoints:
        if on_checkpoint is not None:
            on_checkpoint(cp)
        vec = cp.vectors[group]
        steps.append(cp.step)
        if previous is not None:
            delta = vec - previous
            if gram.shape[0] == w_max:
                gram = gram[1:, 1:]
            dots = np.array([float(delta @ old) for old in deltas], dtype=np.float64)
            gram = roll_gram(gram, dots, float(delta @ delta), w_max)
            if w_max > 1:
                deltas.append(delta)
            for w, ws in window_spectra(gram, list(windows), rank_rule, noise_dim).items():
                spectra[w].append((cp.step, ws))
        previous = vec
    return Analysis(group, rank_rule, sorted(windows), steps, spectra)


def analyze_folder(
    files: Sequence[CheckpointFile],
    windows: Sequence[int],
    rank_rule: str = "half",
    spec: SketchSpec | None = None,
    group: str = ALL,
    progress: Progress | None = None,
) -> Analysis:
    """The spectra of a folder's checkpoints (exact when spec is None)."""
    groups = ALL if group == ALL else "layers"
    noise_dim = None if spec is None or spec.method == "identity" else spec.dim
    stream = read_checkpoints(files, spec, groups, group, progress)
    return analyze(stream, windows, rank_rule, group, noise_dim)


def edge_table(analysis: Analysis) -> str:
    """A plain-text table of the edge per window: latest and peak gap ratio."""
    header = (
        f"{'window':>6} {'points':>6} {'step':>8} {'k*':>3} {'gap_ratio':>9} "
        f"{'edge_str':>8} {'eff_rank':>8} {'peak_gap':>8} {'at_step':>8}"
    )
    lines = [f"group {analysis.group}, rank rule {analysis.rank_rule}", header]
    for w in analysis.windows:
        points = analysis.spectra[w]
        if not points:
            lines.append(f"{w:>6} {0:>6}  (needs {w + 1} checkpoints)")
            continue
        step, last = points[-1]
        peak_step, peak = max(points, key=lambda p: p[1].gap_ratio)
        lines.append(
            f"{w:>6} {len(points):>6} {step:>8} {last.signal_rank:>3} {last.gap_ratio:>9.4f} "
            f"{last.edge_strength:>8.4f} {last.effective_rank:>8.3f} {peak.gap_ratio:>8.4f} "
            f"{peak_step:>8}"
        )
    return "\n".join(lines)


def plot(analysis: Analysis, path: Path) -> None:
    """Gap ratio and signal rank against step, one line per window, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for w in analysis.windows:
        points = analysis.spectra[w]
        if not points:
            continue
        steps = [s for s, _ in points]
        top.plot(steps, [p.gap_ratio for _, p in points], label=f"W={w}")
        bottom.step(steps, [p.signal_rank for _, p in points], where="post", label=f"W={w}")
    top.set_ylabel("gap ratio R*")
    top.legend()
    bottom.set_ylabel("signal rank k*")
    bottom.set_xlabel("step")
    top.set_title(f"spectral edge, group {analysis.group} ({analysis.rank_rule})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
