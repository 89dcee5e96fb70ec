"""Reading a folder of checkpoints: which files, in which order, and their learned tensors.

A checkpoint is a torch state dict saved with `torch.save` (.pt, .pth, .bin, .ckpt), maybe
nested as {"model": ...} or {"state_dict": ...}, or a safetensors file. Its step comes from
a "step" / "global_step" / "iteration" entry of the file (safetensors: its metadata), else
from the last integer in the file name. Keys are normalised as PAPER-NOTES.md says
(`_orig_mod.` stripped, non-learned buffers skipped, tied tensors once).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sedmon._errors import CheckpointFolderError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
STEP_KEYS = ("step", "global_step", "iteration")
NESTING_KEYS = ("model", "state_dict", "model_state_dict", "module")
METRIC_KEYS = ("metrics",)
"""A top-level {name: number} entry whose values are sent as metrics by `sedmon backfill`."""

Warn = Callable[[str], None]


class NotACheckpoint(Exception):
    """This file holds no state dict of tensors."""


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    step: int


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise NotACheckpoint(f"torch is needed to read {path.suffix} files") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        pass  # legacy (non-zip) format cannot be memory-mapped
    except Exception as exc:
        raise NotACheckpoint(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NotACheckpoint(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if _is_tensor(value) and value.numel() == 1 and value.ndim == 0:
        return float(value.item())
    return None


def _state_dict(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        for key in NESTING_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(_is_tensor(v) for v in inner.values()):
                return _state_dict(inner)
        tensors = {str(k): v for k, v in obj.items() if _is_tensor(v)}
        if tensors:
            return tensors
    raise NotACheckpoint("no tensors (not a state dict)")


def step_from_name(path: Path) -> int | None:
    """The last integer in the file name (without suffix), e.g. ckpt_000200.pt -> 200."""
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def _step_in(obj: Any) -> int | None:
    if isinstance(obj, Mapping):
        for key in STEP_KEYS:
            value = _scalar(obj.get(key))
            if value is not None and math.isfinite(value):
                return int(value)
    return None


def read_step(path: Path) -> int:
    """The step of a checkpoint file; raises NotACheckpoint when it is not one."""
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise NotACheckpoint("install safetensors to read .safetensors files") from exc
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if not list(f.keys()):
                    raise NotACheckpoint("no tensors")
        except NotACheckpoint:
            raise
        except Exception as exc:
            raise NotACheckpoint(str(exc)) from exc
        for key in STEP_KEYS:
            if key in meta and re.fullmatch(r"\d+", meta[key].strip()):
                return int(meta[key])
    else:
        obj = _torch_load(path)
        _state_dict(obj)
        found = _step_in(obj)
        if found is not None:
            return found
    named = step_from_name(path)
    if named is None:
        raise NotACheckpoint("no step: neither a step entry in the file nor a number in its name")
    return named


def list_checkpoints(directory: Path, warn: Warn) -> list[CheckpointFile]:
    """Checkpoint files of a folder in step order; other files are skipped with a warning."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointFolderError(f"{directory} is not a folder")
    found: dict[int, CheckpointFile] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix not in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX):
            warn(f"skipping {path.name}: not a checkpoint (.pt .pth .bin .ckpt .safetensors)")
            continue
        try:
            step = read_step(path)
        except NotACheckpoint as exc:
            warn(f"skipping {path.name}: not a checkpoint ({exc})")
            continue
        if step in found:
            raise CheckpointFolderError(
                f"{path.name} and {found[step].path.name} both hold step {step}"
            )
        found[step] = CheckpointFile(path, step)
    return [found[s] for s in sorted(found)]


def load_raw(path: Path) -> tuple[Mapping[str, Any], dict[str, float]]:
    """(state dict of tensors as stored, top-level metrics) of one checkpoint file."""
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            import torch  # noqa: F401
            from safetensors.torch import load_file as load_torch

            return load_torch(str(path)), {}
        except ImportError:
            from safetensors.numpy import load_file as load_numpy

            return load_numpy(str(path)), {}
    obj = _torch_load(path)
    metrics: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for key in METRIC_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                for name, value in inner.items():
                    v = _scalar(value)
                    if v is not None:
                        metrics[str(name)] = v
    return _state_dict(obj), metrics


def learned_tensors(state: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, tensor) of the learned parameters of a state dict, names normalised, sorted."""
    from sedmon._parameters import state_dict_parameters

    return sorted(state_dict_parameters(state), key=lambda p: p[0])


def as_float64(tensor: Any) -> np.ndarray:
    """A flat float64 copy of a torch tensor or numpy array."""
    if isinstance(tensor, np.ndarray):
        return tensor.reshape(-1).astype(np.float64)
    return tensor.detach().reshape(-1).to(dtype=_torch_float64()).numpy()


def _torch_float64() -> Any:
    import torch

    return torch.float64


@dataclass(frozen=True)
class Layout:
    """Names and shapes of a checkpoint's learned tensors; must not change along the folder."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, named: list[tuple[str, Any]]) -> Layout:
        return cls(tuple((name, tuple(int(n) for n in t.shape)) for name, t in named))

    def check(self, other: Layout, path: Path) -> None:
        """Raise CheckpointFolderError naming the first key or shape that differs."""
        mine, theirs = dict(self.shapes), dict(other.shapes)
        for name in sorted(set(mine) | set(theirs)):
            if name not in theirs:
                raise CheckpointFolderError(
                    f"{path.name}: key {name!r} is missing (present before)"
                )
            if name not in mine:
                raise CheckpointFolderError(f"{path.name}: key {name!r} is new (absent before)")
            if mine[name] != theirs[name]:
                raise CheckpointFolderError(
                    f"{path.name}: key {name!r} changed shape from {list(mine[name])} "
                    f"to {list(theirs[name])}"
                )
