"""Which tensors are the parameters, their stable names, and how they are grouped.

Parameters are the learned tensors only: `requires_grad` parameters of an nn.Module, or,
from a state dict, every floating tensor except known non-learned buffers (GPT-2's causal
masks `attn.bias` / `attn.masked_bias`, rotary `inv_freq`, BatchNorm statistics). Names
are normalised so that wrappers do not change them: `_orig_mod.` (torch.compile),
`_fsdp_wrapped_module.`, `_checkpoint_wrapped_module.` are removed wherever they occur and
a leading `module.` (DDP) is stripped. Tied weights (the same storage, shape, strides
and dtype under several names) count once: the embedding-like name is kept (`wte`,
`embed...`), else the first in sorted order (see `_keep`). Output is sorted by name.

Groups are disjoint, cover every parameter, and never use the reserved name `all` (the
whole model):
- "all": one group.
- "layers": like the paper's per-layer study. Transformer blocks are found from names
  such as `transformer.h.3.`, `layers.3.`, `blocks.3.`, `encoder.layer.3.`; each block
  parameter goes to `attn.<third>` or `mlp.<third>` (third = early / mid / late by block
  index), norms anywhere to `norms`, embeddings to `embeddings`, the output head to
  `head`, anything else outside the blocks to `other`. A model without blocks is grouped
  by top-level module name (below any prefix that all names share).
- {group: [fnmatch patterns]}: the first group (in mapping order) with a matching
  pattern wins. A parameter that matches nothing is an error naming it: end the mapping
  with {"rest": ["*"]} to collect the rest on purpose. A group matching nothing is an
  error too (its sketch would be zero forever).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sedmon_core.schemas import ALL_GROUP

Grouping = str | Mapping[str, Sequence[str]]
_WRAPPER_PARTS = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_BUFFER_NAME = re.compile(
    r"(^|\.)(attn\.masked_bias|inv_freq|running_mean|running_var|num_batches_tracked)$"
)
_CAUSAL_MASK = re.compile(r"(^|\.)attn\.bias$")  # GPT-2 / nanoGPT mask, shape (1, 1, T, T)
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.")
_NORM = re.compile(r"^ln(_|\d|$)|norm", re.I)  # ln_1, ln_f, norm, input_layernorm, LayerNorm
_ATTN = re.compile(r"attn|attention|^(q|k|v|o|qkv|query|key|value)(_proj)?$", re.I)
_EMBED = re.compile(r"^(wte|wpe|tok_embeddings)$|embed", re.I)
_HEAD = re.compile(r"^(lm_head|head|heads|classifier|output|score|pooler|cls|lm_heads)$", re.I)
THIRDS = ("early", "mid", "late")
LAYER_GROUP_ORDER = (
    "embeddings",
    *(f"{kind}.{third}" for third in THIRDS for kind in ("attn", "mlp")),
    "norms",
    "head",
    "other",
)


def normalise_name(name: str) -> str:
    """A parameter name without wrapper prefixes: `_orig_mod.`, FSDP's and activation
    checkpointing's wrapper parts anywhere, and a leading DDP `module.`."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def _storage_key(tensor: Any) -> tuple[Any, ...] | None:
    """What makes two names the same tensor (None for empty tensors: nothing to share)."""
    if isinstance(tensor, np.ndarray):
        if tensor.size == 0:
            return None
        address = tensor.__array_interface__["data"][0]
        return ("numpy", address, tensor.shape, tensor.strides, tensor.dtype.str)
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    if local.numel() == 0:
        return None
    return (str(local.device), local.data_ptr(), tuple(local.shape), local.stride(), local.dtype)


def _keep(names: Sequence[str]) -> str:
    """Which of a tied tensor's names stays: an embedding-like name, else the first sorted.

    Hugging Face checkpoints keep the embedding and drop the tied head, so preferring the
    embedding gives a live model and its saved file the same name, hence the same sketch.
    """
    ordered = sorted(names)
    embedding = [n for n in ordered if any(_EMBED.search(p) for p in n.split(".")[:-1])]
    return (embedding or ordered)[0]


def _unique(named: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Normalise names, count tied tensors once, sort; refuse names that collide."""
    by_storage: dict[Any, list[str]] = {}
    tensors: dict[str, Any] = {}
    for raw, tensor in named:
        name = normalise_name(raw)
        if name in tensors:
            key = _storage_key(tensor)
            if key is not None and key == _storage_key(tensors[name]):
                continue  # the same tensor reached under two wrapper paths
            raise ValueError(f"two different tensors are both named {name!r} (from {raw!r})")
        tensors[name] = tensor
        key = _storage_key(tensor)
        by_storage.setdefault(key if key is not None else ("empty", name), []).append(name)
    kept = {_keep(names) for names in by_storage.values()}
    return sorted((n, t) for n, t in tensors.items() if n in kept)


def module_parameters(module: Any) -> list[tuple[str, Any]]:
    """(name, parameter) of an nn.Module's learned (`requires_grad`) parameters, sorted."""
    named = module.named_parameters(remove_duplicate=False)
    return _unique((n, p) for n, p in named if p.requires_grad)


def _is_learned(name: str, tensor: Any) -> bool:
    dtype = tensor.dtype
    floating = (
        np.issubdtype(dtype, np.floating)
        if isinstance(dtype, np.dtype)
        else (getattr(dtype, "is_floating_point", False))
    )
    if not floating or _BUFFER_NAME.search(name):
        return False
    return not (_CAUSAL_MASK.search(name) and len(tensor.shape) == 4)


def state_dict_parameters(state: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, tensor) of a state dict's learned tensors (torch or numpy), sorted."""
    return _unique((str(n), t) for n, t in state.items() if _is_learned(normalise_name(n), t))


def named_parameters(source: Any) -> list[tuple[str, Any]]:
    """The parameters of an nn.Module, a state dict, or (name, tensor) pairs, sorted.

    Pairs are taken as given (all learned, like `model.named_parameters()`), names
    normalised and tied tensors counted once.
    """
    if hasattr(source, "named_parameters"):
        return module_parameters(source)
    if isinstance(source, Mapping):
        return state_dict_parameters(source)
    pairs = list(source)
    if not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise TypeError("expected an nn.Module, a state dict, or (name, tensor) pairs")
    return _unique(pairs)


def block_index(name: str) -> int | None:
    """Transformer block number in a parameter name (`transformer.h.3.attn...` -> 3)."""
    match = _BLOCK.search(name)
    return int(match.group(1)) if match else None


def _layer_group(name: str, n_blocks: int) -> str:
    parts = name.split(".")[:-1]  # module path, without `weight` / `bias`
    if any(_NORM.search(p) for p in parts):
        return "norms"
    match = _BLOCK.search(name)
    if match:
        third = THIRDS[min(2, int(match.group(1)) * 3 // n_blocks)]
        inside = name[match.end() :].split(".")[:-1]
        kind = "attn" if any(_ATTN.search(p) for p in inside) else "mlp"
        return f"{kind}.{third}"
    if any(_EMBED.search(p) for p in parts):
        return "embeddings"
    if any(_HEAD.search(p) for p in parts):
        return "head"
    return "other"


def _top_level(names: Sequence[str]) -> dict[str, str]:
    """Group by the first name part below the prefix all names share."""
    split = [n.split(".") for n in names]
    depth = 0
    while all(len(s) > depth + 1 for s in split) and len({s[depth] for s in split}) == 1:
        depth += 1
    groups = {
        n: s[depth] if len(s) > depth + 1 else s[-1] for n, s in zip(names, split, strict=True)
    }
    if ALL_GROUP in groups.values():
        groups = {n: g if g != ALL_GROUP else f"{ALL_GROUP}_" for n, g in groups.items()}
    return groups


def _layers(names: Sequence[str]) -> dict[str, str]:
    found = [b for b in map(block_index, names) if b is not None]
    if not found:
        return _top_level(names)
    return {n: _layer_group(n, max(found) + 1) for n in names}


def _patterns(names: Sequence[str], mapping: Mapping[str, Sequence[str]]) -> dict[str, str]:
    if ALL_GROUP in mapping:
        raise ValueError(f"group name {ALL_GROUP!r} is reserved for the whole model")
    for group, patterns in mapping.items():
        if isinstance(patterns, str):
            raise TypeError(
                f"group {group!r}: give a list of patterns, not the string {patterns!r}"
            )
    out: dict[str, str] = {}
    for name in names:
        for group, patterns in mapping.items():
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                out[name] = group
                break
        else:
            raise ValueError(
                f"parameter {name!r} matches no group pattern; add a catch-all such as "
                "{'rest': ['*']} last"
            )
    empty = [g for g in mapping if g not in set(out.values())]
    if empty:
        raise ValueError(f"groups {empty} match no parameter")
    return out


def assign_groups(names: Sequence[str], groups: Grouping) -> dict[str, str]:
    """{parameter name: group} for normalised parameter names, in the order of `names`."""
    if isinstance(groups, str):
        if groups == ALL_GROUP:
            return dict.fromkeys(names, ALL_GROUP)
        if groups == "layers":
            return _layers(names)
        raise ValueError(f"groups must be 'all', 'layers' or {{group: [patterns]}}, got {groups!r}")
    if isinstance(groups, Mapping):
        return _patterns(names, groups)
    raise TypeError(f"groups must be 'all', 'layers' or a mapping, got {type(groups).__name__}")


def group_members(names: Sequence[str], groups: Grouping) -> dict[str, list[str]]:
    """{group: [parameter names]} in a stable group order (mapping order for a mapping;
    LAYER_GROUP_ORDER, then top-level names sorted, for "layers"); empty groups left out."""
    membership = assign_groups(names, groups)
    members: dict[str, list[str]] = {}
    for name in names:
        members.setdefault(membership[name], []).append(name)
    if isinstance(groups, Mapping):
        order = list(groups)
    else:
        rank = {g: i for i, g in enumerate(LAYER_GROUP_ORDER)}
        order = sorted(members, key=lambda g: (rank.get(g, len(rank)), g))
    return {g: members[g] for g in order if g in members}


def group_names(source: Any, groups: Grouping) -> list[str]:
    """The group names that `groups` gives for the parameters of `source`."""
    return list(group_members([n for n, _ in named_parameters(source)], groups))
