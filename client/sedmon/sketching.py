"""`sketch_parameters`: the k-number JL sketch of a model's parameters, per group.

    import sedmon

    y = sedmon.sketch_parameters(model, dim=300, seed=0, groups="layers")
    y["attn.early"].shape   # (300,), float64

Sketches are of positions, not deltas: S(theta_t) - S(theta_{t-1}) = S(d_t), which the
server forms. The same (method, dim, seed) and parameter names give the same S on every
rank, device and checkpoint (sedmon_core.sketch has the definition).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sedmon._deferred import Deferred, Ready
from sedmon._parameters import Grouping, group_members, named_parameters
from sedmon_core.sketch import SketchSpec, sketch_named

DEFAULT_DIM = 300
"""Default k: 10 x the largest default window (30), the paper's k = 10 W."""


def _is_torch(tensor: Any) -> bool:
    return type(tensor).__module__.startswith("torch")


def sketch_parameters(
    model_or_named_parameters: Any,
    dim: int = DEFAULT_DIM,
    method: str = "countsketch",
    seed: int = 0,
    groups: Grouping = "all",
) -> dict[str, np.ndarray]:
    """{group: sketch} of the learned parameters, float64 numpy arrays.

    model_or_named_parameters: an nn.Module, a state dict (torch tensors or numpy arrays),
    or (name, tensor) pairs such as `model.named_parameters()`. Names are normalised
    (`_orig_mod.`, DDP's `module.` stripped) and tied weights counted once; see
    sedmon._parameters. dim: k, the length of each group's sketch (projected methods);
    for `identity` the length is the group's number of elements and `dim` is not used.
    method: `countsketch` (O(D)), `gaussian` (dense JL, O(k D)) or `identity` (exact);
    `external` has nothing to compute and raises ValueError. groups: "all" -> {"all": y},
    "layers", or {group: [fnmatch patterns]}.

    Torch tensors are sketched on their own device without a copy of the model (and
    DTensor shards are summed over ranks); numpy arrays use sedmon_core's reference.
    Waits for the device to finish (the numbers are read here).
    """
    result: dict[str, np.ndarray] = sketch_parameters_async(
        model_or_named_parameters, dim, method, seed, groups
    ).result()
    return result


def sketch_parameters_async(
    model_or_named_parameters: Any,
    dim: int = DEFAULT_DIM,
    method: str = "countsketch",
    seed: int = 0,
    groups: Grouping = "all",
) -> Deferred:
    """`sketch_parameters` that returns once the work is queued: `result()` is its dict.

    What a checkpoint uses. On CUDA the sketch is copied to pinned host memory behind a CUDA
    event and `result()` waits on that event, on whichever thread calls it (the sender's),
    so the caller does not wait for the training kernels queued before the sketch. On CPU
    (and for numpy arrays) the sketch is computed before this returns.
    """
    spec = SketchSpec(method, dim, seed)
    if spec.method == "external":
        raise ValueError("method 'external': the caller computes the sketch itself")
    named = named_parameters(model_or_named_parameters)
    if not named:
        raise ValueError("no learned parameters to sketch")
    members = group_members([n for n, _ in named], groups)
    if any(_is_torch(t) for _, t in named):
        import torch

        from sedmon._sketcher import sketch_groups_async

        tensors = [(n, torch.from_numpy(t) if isinstance(t, np.ndarray) else t) for n, t in named]
        return sketch_groups_async(spec, tensors, members)
    arrays = dict(named)
    out = {g: sketch_named(spec, [(n, arrays[n]) for n in names]) for g, names in members.items()}
    return Ready(out, sum(v.nbytes for v in out.values()))
