"""Johnson-Lindenstrauss sketches of parameters: the definition and its numpy reference.

A sketch spec is (method, dim k, seed). The sketch of a parameter group is the sum over
its parameters of S(name, flat tensor): a float64 vector of length k. S is linear, so
S(theta_t) - S(theta_{t-1}) = S(d_t), and it is additive over parameters and over shards
of a parameter given their global element offset, so sharded ranks can sum partial
sketches. Every random quantity is a deterministic int64 hash of (seed, parameter name,
global element index): numpy and torch, CPU and CUDA, compute the same integers.

Methods:
- `countsketch` (default, O(D)): element i of a parameter goes to one bucket with a sign.
  With B = `BLOCK` = 64 x 64, i = c * B + j: bucket (shift[c] + table_bucket[j]) mod k and
  sign table_sign[j] * bit_sign(run_word[c], j // 64) * bit_sign(lane_word[c], j % 64),
  where bit_sign(w, p) = -1 if bit p of w is set, else +1. The table (B buckets, B signs)
  depends on the seed only; shift[c], run_word[c] and lane_word[c] are splitmix64 outputs
  3c, 3c + 1, 3c + 2 of the parameter's key. The shared table lets the torch sketcher do
  one scatter per element with one index row for every block; the per-block sign words
  make the sign product of any two offsets j != j' an independent fair coin in every
  block, so offsets that share a bucket in the table do not add up coherently over blocks
  (a delta that repeats from block to block, as rows of a low-rank update do, has the
  error of a fully random countsketch). E<Sx, Sy> = <x, y>.
- `gaussian` (the paper's dense JL, O(k D)): entry (r, i) = N(0, 1) / sqrt(k) from a
  counter-based hash of (seed, name, i, r) through Box-Muller; E<Sx, Sy> = <x, y>.
- `identity`: the exact parameters, flattened, float64, concatenated in the given order;
  its length is the number of elements, whatever `dim` says.
- `external`: the caller computed the sketch; there is nothing to compute here.

>>> import numpy as np
>>> spec = SketchSpec("countsketch", dim=8, seed=0)
>>> sketch_named(spec, [("w", np.ones(3)), ("b", np.zeros(2))]).shape
(8,)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sedmon_core.schemas import MAX_IDENTITY_DIM, MAX_SKETCH_DIM

METHODS: tuple[str, ...] = ("countsketch", "gaussian", "identity", "external")
PROJECTED_METHODS: tuple[str, ...] = ("countsketch", "gaussian")
"""Methods that map any number of elements to exactly `dim` numbers."""
BLOCK = 4096
"""Elements per block of the countsketch (part of the definition: changing it changes S)."""

GAMMA = -7046029254386353131
"""splitmix64's increment 0x9E3779B97F4A7C15 as a signed int64."""
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
LOW63 = (1 << 63) - 1
LOW32 = (1 << 32) - 1
_CHUNK = 1 << 20  # elements per step of the reference, to bound its temporaries


@dataclass(frozen=True, slots=True)
class SketchSpec:
    """How parameters are projected: `method` in METHODS, `dim` k >= 1, `seed` in [0, 2^63).

    `dim` is capped at MAX_SKETCH_DIM for projected methods and MAX_IDENTITY_DIM for
    identity (the wire schema's caps). Hashable: usable as a cache key.
    """

    method: str = "countsketch"
    dim: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sketch method {self.method!r} is not one of {METHODS}")
        for field, value in (("dim", self.dim), ("seed", self.seed)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"sketch {field} must be an integer, got {value!r}")
        cap = MAX_IDENTITY_DIM if self.method == "identity" else MAX_SKETCH_DIM
        if not 1 <= self.dim <= cap:
            raise ValueError(f"sketch dim must be in 1..{cap} for {self.method}, got {self.dim}")
        if not 0 <= self.seed <= LOW63:
            raise ValueError(f"sketch seed must be in 0..2^63-1, got {self.seed}")


def _shr(z: np.ndarray, s: int) -> np.ndarray:
    """Logical right shift of int64 (numpy's >> is arithmetic: mask the sign copies)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on int64 (wrapping multiply, logical shifts). Same shape."""
    z = np.asarray(z, dtype=np.int64)
    with np.errstate(over="ignore"):
        z = (z ^ _shr(z, 30)) * _MUL1
        z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def splitmix64(key: int, counter: np.ndarray) -> np.ndarray:
    """Output number `counter` (int64 >= 0) of splitmix64 started at state `key` (int64)."""
    counter = np.asarray(counter, dtype=np.int64)
    with np.errstate(over="ignore"):
        return mix64(np.int64(key) + (counter + 1) * np.int64(GAMMA))


def _key(tag: bytes, seed: int, name: str) -> int:
    digest = hashlib.blake2b(
        tag + b"\0" + int(seed).to_bytes(8, "little") + name.encode("utf-8"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little", signed=True)


def parameter_key(seed: int, name: str) -> int:
    """The 64-bit key (signed int64) of one parameter: blake2b of (seed, name)."""
    return _key(b"sedmon-sketch-parameter", seed, name)


def table_key(seed: int) -> int:
    """The 64-bit key (signed int64) of a seed's countsketch table."""
    return _key(b"sedmon-sketch-table", seed, "")


def bucket_sign(h: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash words -> (bucket int64 in [0, dim), sign float64 +-1 from the top bit)."""
    return (h & LOW63) % dim, np.where(h < 0, -1.0, 1.0)


def countsketch_table(spec: SketchSpec) -> tuple[np.ndarray, np.ndarray]:
    """The spec's per-offset table: (bucket (BLOCK,) int64 in [0, k), sign (BLOCK,) +-1.0)."""
    return bucket_sign(splitmix64(table_key(spec.seed), np.arange(BLOCK)), spec.dim)


def countsketch_block_words(
    spec: SketchSpec, name: str, block: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block c of parameter `name`: (shift int64 in [0, k), run_word, lane_word int64).

    Same shape as `block`. The words' bits give the signs of the block's 64 runs of 64
    elements and of the 64 lanes within a run (see bit_sign).
    """
    key = parameter_key(spec.seed, name)
    c = np.asarray(block, dtype=np.int64) * 3
    shift = (splitmix64(key, c) & LOW63) % spec.dim
    return shift, splitmix64(key, c + 1), splitmix64(key, c + 2)


def bit_sign(word: np.ndarray, position: np.ndarray) -> np.ndarray:
    """-1.0 where bit `position` (0..63) of the int64 `word` is set, else +1.0.

    (numpy's >> is arithmetic; bit `position` still lands on bit 0.)
    """
    shifted = np.right_shift(np.asarray(word, np.int64), np.asarray(position, np.int64))
    return 1.0 - 2.0 * (shifted & 1)


def countsketch_buckets_signs(
    spec: SketchSpec, name: str, global_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (int64 in [0, k)) and sign (float64 +-1) of elements `global_index` of `name`.

    global_index: int array (any shape) of flat, row-major indices into the whole
    parameter. Returns two arrays of that shape.
    """
    index = np.asarray(global_index, dtype=np.int64)
    table_bucket, table_sign = countsketch_table(spec)
    block = index // BLOCK
    first = int(block.min()) if block.size else 0
    if block.size and int(block.max()) - first < block.size:  # dense, as for any range
        blocks, row = np.arange(first, int(block.max()) + 1), block - first
    else:
        blocks, row = np.unique(block, return_inverse=True)
        row = row.reshape(index.shape)
    shift, run_word, lane_word = countsketch_block_words(spec, name, blocks)
    j = index % BLOCK
    bucket = (shift[row] + table_bucket[j]) % spec.dim
    sign = table_sign[j] * bit_sign(run_word[row], j >> 6) * bit_sign(lane_word[row], j & 63)
    return bucket, sign


def gaussian_normals(h: np.ndarray, dim: int) -> np.ndarray:
    """Hash words (pairs, n) -> (dim, n) standard normals by Box-Muller, two per word.

    Row 2m is r cos(2 pi u2) and row 2m + 1 is r sin(2 pi u2) of word m, with
    r = sqrt(-2 ln u1), u1 = (high 32 bits + 0.5) / 2^32, u2 = (low 32 bits) / 2^32.
    """
    u1 = (_shr(h, 32).astype(np.float64) + 0.5) * 2.0**-32
    angle = (h & LOW32).astype(np.float64) * (2.0 * np.pi * 2.0**-32)
    radius = np.sqrt(-2.0 * np.log(u1))
    pairs = np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=1)
    return pairs.reshape(2 * h.shape[0], h.shape[1])[:dim]


def gaussian_columns(spec: SketchSpec, name: str, global_index: np.ndarray) -> np.ndarray:
    """Columns of the dense JL matrix for elements `global_index` (1-D) of `name`: (k, n).

    Entry (r, i) = N(0, 1) / sqrt(k) from word m = r // 2 of element i:
    mix64(splitmix64(key, i) + (m + 1) * GAMMA).
    """
    index = np.asarray(global_index, dtype=np.int64).reshape(-1)
    element = splitmix64(parameter_key(spec.seed, name), index)
    word = (np.arange((spec.dim + 1) // 2, dtype=np.int64) + 1) * np.int64(GAMMA)
    with np.errstate(over="ignore"):
        h = mix64(element[None, :] + word[:, None])
    return gaussian_normals(h, spec.dim) / np.sqrt(spec.dim)


def sketch_array(spec: SketchSpec, name: str, flat: np.ndarray, offset: int = 0) -> np.ndarray:
    """S(name, flat) of the elements `flat` (any shape, read row-major) of parameter `name`.

    offset: global flat index of flat's first element in the whole parameter (a shard).
    Returns (k,) float64 for projected methods; for identity, flat as float64, (n,).
    """
    x = np.asarray(flat).reshape(-1)
    if spec.method == "identity":
        return x.astype(np.float64)
    if spec.method == "external":
        raise ValueError("method 'external': the caller computes the sketch")
    y = np.zeros(spec.dim, dtype=np.float64)
    step = _CHUNK if spec.method == "countsketch" else max(1, _CHUNK // spec.dim)
    for start in range(0, x.size, step):
        part = x[start : start + step].astype(np.float64)
        index = np.arange(offset + start, offset + start + part.size, dtype=np.int64)
        if spec.method == "countsketch":
            bucket, sign = countsketch_buckets_signs(spec, name, index)
            y += np.bincount(bucket, weights=part * sign, minlength=spec.dim)
        else:
            y += gaussian_columns(spec, name, index) @ part
    return y


def sketch_named(spec: SketchSpec, named: Iterable[tuple[str, np.ndarray]]) -> np.ndarray:
    """Sketch of a group: the sum of sketch_array over (name, array) pairs, (k,) float64.

    For identity, the concatenation of the flat arrays in the given order (n_total,).
    """
    parts = [sketch_array(spec, name, array) for name, array in named]
    if spec.method == "identity":
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    total = np.zeros(spec.dim, dtype=np.float64)
    for part in parts:
        total += part
    return total
