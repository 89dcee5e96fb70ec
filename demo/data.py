"""Demo corpora and tables, only from what the machine has or the code generates.

- `python_source`: Python's standard-library source (the running interpreter's `stdlib`
  path), .py files in sorted path order, concatenated up to a size cap.
- `licence_prose`: the operating system's licence and copyright texts
  (/usr/share/common-licenses/*, /usr/share/doc/*/copyright), deduplicated by content, in
  sorted path order, up to a size cap: English prose of a very different kind.
- `modular_table`: every (a, b) pair of arithmetic modulo p with its answer, split into
  train and test by a seeded permutation.

Text is reduced to 7-bit ASCII bytes (anything else becomes "?"), so a character model
has a fixed vocabulary of `VOCAB_SIZE` symbols whatever the corpus.
"""

from __future__ import annotations

import glob
import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

VOCAB_SIZE = 128
"""7-bit ASCII: one symbol per byte value 0..127."""
DEFAULT_CAP = 1_500_000
"""Characters per corpus: enough for many epochs' worth of distinct context at demo scale."""
LICENCE_GLOBS: tuple[str, ...] = (
    "/usr/share/common-licenses/*",
    "/usr/share/doc/*/copyright",
)

Operation = Literal["add", "div"]


def encode(text: str) -> np.ndarray:
    """Text -> uint8 codes in 0..127 (non-ASCII characters become "?")."""
    raw = text.encode("ascii", errors="replace")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def decode(codes: np.ndarray) -> str:
    """uint8 codes -> text."""
    return bytes(np.asarray(codes, dtype=np.uint8)).decode("ascii", errors="replace")


def _concatenate(paths: list[Path], cap: int) -> str:
    parts: list[str] = []
    size = 0
    seen: set[str] = set()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        digest = hashlib.sha1(text.encode("utf-8", errors="replace")).hexdigest()
        if not text.strip() or digest in seen:
            continue
        seen.add(digest)
        parts.append(text)
        size += len(text)
        if size >= cap:
            break
    return "\n".join(parts)[:cap]


def python_source(cap: int = DEFAULT_CAP) -> np.ndarray:
    """The standard library's .py files (sorted paths, tests left out), encoded, <= cap chars."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
    )
    codes = encode(_concatenate(paths, cap))
    if codes.size < 10_000:
        raise RuntimeError(f"too little Python source under {root}: {codes.size} chars")
    return codes


def licence_prose(cap: int = DEFAULT_CAP) -> np.ndarray:
    """Licence and copyright texts of the OS (deduplicated, sorted paths), encoded, <= cap."""
    paths = sorted({Path(p) for pattern in LICENCE_GLOBS for p in glob.glob(pattern)})
    paths = [p for p in paths if p.is_file()]
    codes = encode(_concatenate(paths, cap))
    if codes.size < 10_000:
        raise RuntimeError(f"too little licence text on this machine: {codes.size} chars")
    return codes


def split_corpus(codes: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the last `val_fraction` of the corpus is held out for validation."""
    cut = int(codes.size * (1.0 - val_fraction))
    return codes[:cut], codes[cut:]


@dataclass(frozen=True)
class ModularTable:
    """Arithmetic modulo p. Inputs (n, 2) int64 pairs (a, b); labels (n,) int64 answers."""

    p: int
    operation: str
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray


def modular_table(
    p: int = 97, operation: Operation = "add", train_fraction: float = 0.4, seed: int = 0
) -> ModularTable:
    """All pairs of (a + b) mod p, or (a / b) mod p = a * b^(p-2) mod p with b != 0.

    The split is a seeded permutation of all pairs: the first `train_fraction` trains.
    """
    grid_a, grid_b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = grid_a.ravel(), grid_b.ravel()
    if operation == "add":
        labels = (a + b) % p
    elif operation == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inverse = np.array([pow(int(x), p - 2, p) for x in range(p)], dtype=np.int64)
        labels = (a * inverse[b]) % p
    else:
        raise ValueError(f"unknown operation {operation!r}; use add or div")
    inputs = np.stack([a, b], axis=1).astype(np.int64)
    order = np.random.default_rng(seed).permutation(labels.size)
    n_train = round(train_fraction * labels.size)
    tr, te = order[:n_train], order[n_train:]
    return ModularTable(
        p=p,
        operation=operation,
        train_inputs=inputs[tr],
        train_labels=labels[tr].astype(np.int64),
        test_inputs=inputs[te],
        test_labels=labels[te].astype(np.int64),
    )
