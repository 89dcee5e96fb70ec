"""The two demo training jobs, each a function of (run, seed, steps, every) returning its records.

- `char_job`: a ~0.6 M-parameter character transformer trained on Python's standard-library
  source, switched at `shift_step` to the OS licence texts (a distribution shift at a known
  step); `shift_step=None` is the control run with no switch.
- `grok_job`: modular addition (p = 97 by default) with an MLP and AdamW weight decay 1.0:
  it memorises the training pairs within a few hundred steps and generalises much later.

A checkpoint is taken every `every` optimizer steps and at step 0: the job logs its metrics
to the sedmon run (when given) and then calls `run.checkpoint(step)`, and calls
`on_checkpoint(step, model)` (validation keeps the flattened parameters there). Jobs use one
torch thread, so two can train side by side on two cores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from demo.data import (
    VOCAB_SIZE,
    Operation,
    licence_prose,
    modular_table,
    python_source,
    split_corpus,
)
from demo.models import CharConfig, CharTransformer, ModularMLP, parameter_count

CheckpointHook = Callable[[int, nn.Module], None]


class RunLike(Protocol):
    """What a job needs of a sedmon run (`sedmon.init(...)` returns one)."""

    def log(self, values: dict[str, float], step: int | None = None) -> None: ...

    def checkpoint(self, step: int) -> None: ...


@dataclass(frozen=True)
class CheckpointRecord:
    """Metrics at one checkpoint. Losses in nats per token (char) or per example (grok);
    accuracies in [0, 1]; absent metrics are None."""

    step: int
    val_loss: float
    train_loss: float
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    corpus: str | None = None


@dataclass
class JobResult:
    """A finished job: its records in step order and what is known about it by design."""

    job: str
    seed: int
    steps: int
    every: int
    parameters: int
    records: list[CheckpointRecord] = field(default_factory=list)
    shift_step: int | None = None
    seconds: float = 0.0
    settings: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping."""
        return asdict(self)

    def first_step_at_or_above(self, metric: str, level: float) -> int | None:
        """First checkpoint step whose `metric` (a CheckpointRecord field) reaches `level`."""
        for rec in self.records:
            value = getattr(rec, metric)
            if value is not None and value >= level:
                return int(rec.step)
        return None


@dataclass(frozen=True)
class CharSettings:
    """Optimisation of `char_job`; defaults measured to show a shift within the demo budget."""

    batch: int = 16
    context: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    val_batches: int = 4


@dataclass(frozen=True)
class GrokSettings:
    """Optimisation of `grok_job`: full-batch AdamW, weight decay 1.0.

    lr 3e-3 (not the usual 1e-3): with it this MLP groks p = 97 addition in ~1,500 steps
    (~25 s on one core); at 1e-3 it needs ~4,000 steps of a 4x wider MLP (~3 min).
    """

    p: int = 97
    operation: str = "add"
    train_fraction: float = 0.4
    lr: float = 3e-3
    weight_decay: float = 1.0
    width: int = 64
    hidden: int = 256


def build_char_model(seed: int, settings: CharSettings | None = None) -> CharTransformer:
    """The char job's model, initialised from `seed` (what `char_job` builds by itself)."""
    cfg = settings or CharSettings()
    torch.manual_seed(seed)
    return CharTransformer(CharConfig(vocab_size=VOCAB_SIZE, context=cfg.context))


def build_grok_model(seed: int, settings: GrokSettings | None = None) -> ModularMLP:
    """The grokking job's model, initialised from `seed` (what `grok_job` builds by itself)."""
    cfg = settings or GrokSettings()
    torch.manual_seed(seed)
    return ModularMLP(cfg.p, cfg.width, cfg.hidden)


def _report(
    run: RunLike | None,
    hook: CheckpointHook | None,
    model: nn.Module,
    record: CheckpointRecord,
) -> None:
    if run is not None:
        values = {
            k: float(v)
            for k, v in asdict(record).items()
            if k not in ("step", "corpus") and v is not None and math.isfinite(v)
        }
        run.log(values, step=record.step)
        run.checkpoint(record.step)
    if hook is not None:
        hook(record.step, model)


def _batch(codes: torch.Tensor, batch: int, context: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, codes.numel() - context - 1, (batch,), generator=gen)
    return torch.stack([codes[s : s + context + 1] for s in starts.tolist()])


def _lm_loss(model: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
    logits = model(seqs[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), seqs[:, 1:].reshape(-1))


def char_job(
    run: RunLike | None,
    seed: int = 0,
    steps: int = 1000,
    every: int = 10,
    shift_step: int | None = 600,
    settings: CharSettings | None = None,
    on_checkpoint: CheckpointHook | None = None,
    model: nn.Module | None = None,
) -> JobResult:
    """Train the character transformer; switch corpus at `shift_step` (None: never).

    val_loss is measured on held-out text of the corpus being trained on at that step, on
    fixed batches (the same at every checkpoint). model: the one the sedmon run watches
    (default: `build_char_model(seed, settings)`).
    """
    cfg = settings or CharSettings()
    torch.set_num_threads(1)
    if model is None:
        model = build_char_model(seed, cfg)
    corpora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, codes in (("python", python_source()), ("licences", licence_prose())):
        train, val = split_corpus(codes)
        corpora[name] = (torch.from_numpy(train).long(), torch.from_numpy(val).long())
    val_gen = torch.Generator().manual_seed(10_000 + seed)
    val_sets = {
        name: torch.cat(
            [_batch(val, cfg.batch, cfg.context, val_gen) for _ in range(cfg.val_batches)]
        )
        for name, (_, val) in corpora.items()
    }
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    gen = torch.Generator().manual_seed(seed)
    result = JobResult(
        job="char",
        seed=seed,
        steps=steps,
        every=every,
        parameters=parameter_count(model),
        shift_step=shift_step,
        settings={k: v for k, v in asdict(cfg).items()},
    )
    start = time.perf_counter()
    train_loss = float("nan")
    for step in range(steps + 1):
        corpus = "python" if shift_step is None or step < shift_step else "licences"
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                val_loss = float(_lm_loss(model, val_sets[corpus]))
            model.train()
            rec = CheckpointRecord(step, val_loss, train_loss, corpus=corpus)
            result.records.append(rec)
            _report(run, on_checkpoint, model, rec)
        if step == steps:
            break
        loss = _lm_loss(model, _batch(corpora[corpus][0], cfg.batch, cfg.context, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_loss = loss.item()
    result.seconds = time.perf_counter() - start
    return result


def grok_job(
    run: RunLike | None,
    seed: int = 0,
    steps: int = 2000,
    every: int = 20,
    settings: GrokSettings | None = None,
    on_checkpoint: CheckpointHook | None = None,
    model: nn.Module | None = None,
) -> JobResult:
    """Full-batch training on a fraction of all (a, b) pairs mod p; test on the rest.

    val_loss is the test-set loss (the held-out pairs); accuracies are exact over each set.
    model: the one the sedmon run watches (default: `build_grok_model(seed, settings)`).
    """
    cfg = settings or GrokSettings()
    torch.set_num_threads(1)
    if model is None:
        model = build_grok_model(seed, cfg)
    op: Operation = "div" if cfg.operation == "div" else "add"
    table = modular_table(cfg.p, op, cfg.train_fraction, seed)
    x_tr, y_tr = torch.from_numpy(table.train_inputs), torch.from_numpy(table.train_labels)
    x_te, y_te = torch.from_numpy(table.test_inputs), torch.from_numpy(table.test_labels)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
    )
    result = JobResult(
        job="grok",
        seed=seed,
        steps=steps,
        every=every,
        parameters=parameter_count(model),
        settings={k: v for k, v in asdict(cfg).items()},
    )
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                logits_tr, logits_te = model(x_tr), model(x_te)
                rec = CheckpointRecord(
                    step=step,
                    val_loss=float(F.cross_entropy(logits_te, y_te)),
                    train_loss=float(F.cross_entropy(logits_tr, y_tr)),
                    train_accuracy=float((logits_tr.argmax(1) == y_tr).double().mean()),
                    test_accuracy=float((logits_te.argmax(1) == y_te).double().mean()),
                )
            result.records.append(rec)
            _report(run, on_checkpoint, model, rec)
        if step == steps:
            break
        loss = F.cross_entropy(model(x_tr), y_tr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    result.seconds = time.perf_counter() - start
    return result


def val_losses(result: JobResult) -> np.ndarray:
    """(N,) val loss per checkpoint, in step order."""
    return np.array([r.val_loss for r in result.records], dtype=np.float64)
