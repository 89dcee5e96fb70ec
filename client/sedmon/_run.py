"""`sedmon.init` and `Run`: the part of the client that lives on the training thread.

Everything here is cheap and never raises into the training loop once `init` has returned:
a checkpoint is one O(D) sketch (on CUDA: queued on the stream, the numbers read later by
the sender thread) and a `put_nowait`; `log` merges values into a buffer that is queued as
one batch now and then; serialising, posting and spooling are the background threads' job.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from sedmon._deferred import Deferred
from sedmon._errors import ConfigError
from sedmon._logging import logger, problem
from sedmon._metrics_buffer import MetricsBuffer
from sedmon._sender import Item, Sender, TransportSettings
from sedmon._spool import default_spool_root
from sedmon_core.schemas import DEFAULT_WINDOWS, NAME_PATTERN, PROJECT_PATTERN, RunCreate
from sedmon_core.sketch import METHODS, SketchSpec

FINISH_TIMEOUT_S = 10.0
"""Default bound of `finish()` and of the flush at interpreter exit."""
END_STATES = ("finished", "failed")
MAX_METRIC_NAME = 200
_ONLINE_METHODS = tuple(m for m in METHODS if m != "external")


def _distributed_rank() -> int:
    """This process's rank under torch.distributed, 0 when not distributed (or no torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        return 0
    return 0


def _ensure_visible_logging() -> None:
    """Show the client's INFO lines when the application has not configured logging."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _json_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "__dict__") and not isinstance(config, Mapping):  # argparse.Namespace
        config = vars(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"config= must be a mapping of JSON-able values, got {type(config)}")
    try:
        result: dict[str, Any] = json.loads(json.dumps(dict(config), default=str))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config= must be JSON-serialisable: {exc}") from exc
    return cast(dict[str, Any], _storable(result))


def _storable(value: Any) -> Any:
    """The config as the server stores it: a non-finite number (max_grad_norm=inf is common)
    becomes its name ("inf", "-inf", "nan"), a NUL character U+FFFD; the server refuses both
    (JSON and PostgreSQL cannot hold them), and a training job must not fail for it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _check_model(model: Any) -> Any:
    """The model as given (a module), or a list of (name, tensor) pairs; None allowed."""
    if model is None or hasattr(model, "named_parameters"):
        return model
    if isinstance(model, Mapping):
        return list(model.items())
    if isinstance(model, Iterable) and not isinstance(model, str | bytes):
        pairs = list(model)
        if all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            return pairs
    raise ConfigError(
        "model= must be a torch.nn.Module, or (name, parameter) pairs such as "
        f"model.named_parameters(), got {type(model).__name__}"
    )


def _group_names(model: Any, groups: Any) -> list[str]:
    """Group names for the run spec, from the parameters' names (no sketch computed)."""
    if groups in (None, "all"):
        return ["all"]
    if model is None:
        raise ConfigError(f"groups={groups!r} needs model= (the groups come from its parameters)")
    from sedmon._parameters import group_names

    try:
        names = list(group_names(model, groups))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"groups={groups!r}: {exc}") from exc
    return ["all"] if names == ["all"] else names


class _CheckedSketch(Deferred):
    """A checkpoint's sketch as the sender thread reads it: waits for the device there
    (never on the training thread), and logs non-finite numbers (still posted: the server
    answers 422 and raises an alert)."""

    def __init__(self, step: int, pending: Deferred) -> None:
        super().__init__()
        self._step = step
        self._pending = pending
        self.nbytes = pending.nbytes

    def _compute(self) -> dict[str, np.ndarray]:
        sketch: dict[str, np.ndarray] = self._pending.result()
        bad = [g for g, y in sketch.items() if not np.isfinite(y).all()]
        if bad:
            problem(
                logging.WARNING,
                "nonfinite",
                "sedmon: non-finite parameters at step %d (group %s); reported to the server",
                self._step,
                ", ".join(bad),
            )
        return sketch


class Run:
    """One training run as the client sees it. Made by `sedmon.init`; see its docstring."""

    def __init__(
        self,
        *,
        spec: RunCreate,
        server: str,
        token: str | None,
        model: Any,
        every: int,
        groups: Any,
        spool_root: Path,
        settings: TransportSettings | None = None,
    ) -> None:
        self.project = spec.project
        self.name = spec.name
        self.spec = spec
        self.server = server
        self.every = every
        self.rank = _distributed_rank()
        self.last_edge: dict[str, Any] | None = None
        """The edge summary of the last acknowledged checkpoint: step, window, group,
        signal_rank, gap_ratio, edge_strength, phase (None until the server answers)."""
        self.sketch_seconds = 0.0
        """Total time spent sketching on the training thread."""
        self._model = model
        self._groups = groups
        self._sketch_spec = SketchSpec(spec.sketch.method, spec.sketch.dim, spec.sketch.seed)
        self._lock = threading.Lock()
        self._seq = 0
        self._optimizer_step = 0
        self._last_checkpoint: int | None = None
        self._hooks: list[Any] = []
        self._finished = False
        self._sender: Sender | None = None
        self._sharded_cache: bool | None = None
        settings = settings or TransportSettings.from_env()
        self._metrics = MetricsBuffer(settings.metrics_batch_points, settings.metrics_interval_s)
        if self.rank == 0:
            self._sender = Sender(
                server,
                token,
                spec.model_dump(mode="json"),
                spool_root,
                settings,
                on_checkpoint_ack=self._on_ack,
                on_tick=self._post_waiting_metrics,
            )
            self._sender.start()
        atexit.register(self._at_exit)

    # -- public -----------------------------------------------------------------------------

    @property
    def id(self) -> int | None:
        """The server's id of this run, once the sender has created it (None before)."""
        return self._sender.run_id if self._sender is not None else None

    @property
    def step(self) -> int:
        """Optimizer steps counted by the hook (see `watch`)."""
        return self._optimizer_step

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics for a step (default: the current optimizer step). Never raises.

        O(1) per value, no I/O: the values join a buffer that is queued as one batch when
        it is full, when its oldest value has waited `SEDMON_METRICS_INTERVAL_S`, before a
        checkpoint, and at `flush`/`finish`. Non-finite values are not sent (logged).
        """
        try:
            if self._sender is None or self._finished:
                return
            s = self._optimizer_step if step is None else int(step)
            if s < 0:
                problem(logging.WARNING, "logstep", "sedmon: log(): step %d < 0 ignored", s)
                return
            clean: dict[str, float] = {}
            for key, value in values.items():
                name = str(key)
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    problem(logging.WARNING, "lognum", "sedmon: log(): %r is not a number", key)
                    continue
                if not math.isfinite(number):
                    problem(
                        logging.WARNING,
                        "lognonfinite",
                        "sedmon: log(): %s = %s at step %d not sent (not finite)",
                        name,
                        number,
                        s,
                    )
                elif not 0 < len(name) <= MAX_METRIC_NAME:
                    problem(logging.WARNING, "logname", "sedmon: log(): name %r refused", name)
                else:
                    clean[name] = number
            if not clean:
                return
            with self._lock:
                if self._metrics.add(s, clean):
                    self._queue_metrics_locked()
        except Exception as exc:
            problem(logging.WARNING, "log", "sedmon: log() failed: %r", exc)

    def checkpoint(self, step: int | None = None) -> None:
        """Sketch the parameters now (O(D), on this thread) and queue them. Never raises.

        On CUDA this queues the sketch on the stream and returns: the sender thread waits
        for the numbers (a CUDA event), not this thread."""
        try:
            self._checkpoint(self._optimizer_step if step is None else int(step))
        except Exception as exc:
            problem(logging.WARNING, "checkpoint", "sedmon: checkpoint failed: %r", exc)

    def watch(self, optimizer: Any, every: int | None = None, start_step: int = 0) -> None:
        """Checkpoint every `every` optimizer steps from a step hook, and once now (step
        `start_step`, the parameters before the next update). Needs torch >= 2.0."""
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ConfigError(f"every= must be a positive integer, got {every!r}")
            self.every = every
        if self._model is None:
            raise ConfigError("watch() needs the model: pass model= to sedmon.init")
        if not hasattr(optimizer, "register_step_post_hook"):
            raise ConfigError(
                "optimizer= must be a torch.optim.Optimizer (torch >= 2.0); "
                f"got {type(optimizer).__name__}"
            )
        self._optimizer_step = int(start_step)
        self._hooks.append(optimizer.register_step_post_hook(self._after_optimizer_step))
        self.checkpoint(self._optimizer_step)

    def flush(self, timeout: float = FINISH_TIMEOUT_S) -> bool:
        """Queue the buffered metrics, then wait up to `timeout` s until everything queued is
        delivered or spooled."""
        with self._lock:
            self._queue_metrics_locked()
        return self._sender.flush(timeout) if self._sender is not None else True

    def finish(self, timeout: float | None = None, *, state: str = "finished") -> None:
        """End the run: flush within `timeout` s (default 10), leave the rest in the spool.

        state: "finished", or "failed" when training failed (the context manager says
        "failed" when its block raises). Safe to call twice; never raises.
        """
        if self._finished:
            return
        if state not in END_STATES:
            problem(
                logging.WARNING,
                "finishstate",
                "sedmon: finish(state=%r): not one of %s; recorded as failed",
                state,
                ", ".join(END_STATES),
            )
            state = "failed"
        self._finished = True
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        try:
            atexit.unregister(self._at_exit)
            if self._sender is None:
                return
            with self._lock:
                self._queue_metrics_locked()
                seq = self._next_seq()
            self._sender.submit(Item(seq, "finish", {"state": state}))
            bound = FINISH_TIMEOUT_S if timeout is None else float(timeout)
            if self._sender.close(max(0.0, bound)):
                logger.info(
                    "sedmon: run %s/%s %s; all data delivered", self.project, self.name, state
                )
        except Exception as exc:
            problem(logging.WARNING, "finish", "sedmon: finish() failed: %r", exc)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(state="failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        return f"<sedmon.Run {self.project}/{self.name} id={self.id} step={self._optimizer_step}>"

    # -- internals --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        # Wall-clock nanoseconds, strictly increasing: a later process's items sort after
        # what an earlier one left in the same spool.
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def _queue_metrics_locked(self) -> None:
        points = self._metrics.take()
        if points and self._sender is not None:
            self._sender.submit(Item(self._next_seq(), "metrics_batch", {"points": points}))

    def _post_waiting_metrics(self) -> None:
        """From the sender thread: queue the buffer once its oldest value has waited long
        enough (so metrics flow while the training loop is busy elsewhere)."""
        if not self._metrics.due(time.monotonic()):
            return
        with self._lock:
            if self._metrics.due(time.monotonic()) and not self._finished:
                self._queue_metrics_locked()

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_step += 1
        if self._optimizer_step % self.every == 0:
            self.checkpoint(self._optimizer_step)

    def _checkpoint(self, step: int) -> None:
        if self._finished:
            return
        if self._model is None:
            problem(logging.WARNING, "nomodel", "sedmon: checkpoint() needs model= at init")
            return
        if self._last_checkpoint is not None and step <= self._last_checkpoint:
            problem(
                logging.WARNING,
                "order",
                "sedmon: checkpoint at step %d skipped: not after the last one (%d)",
                step,
                self._last_checkpoint,
            )
            return
        if self._sender is None and not self._sharded():
            self._last_checkpoint = step  # rank != 0, nothing to all-reduce: nothing to do
            return
        from sedmon.sketching import sketch_parameters_async

        started = time.perf_counter()
        pending = sketch_parameters_async(
            self._model,
            dim=self._sketch_spec.dim,
            method=self._sketch_spec.method,
            seed=self._sketch_spec.seed,
            groups=self._groups,
        )
        self.sketch_seconds += time.perf_counter() - started
        self._last_checkpoint = step
        if self._sender is None:  # rank != 0: took part in the all-reduce, posts nothing
            return
        with self._lock:
            metrics = self._metrics.take_step(step)  # values of this step ride with it
            self._queue_metrics_locked()
            body = {
                "step": step,
                # read (and checked) by the background thread that serialises the item
                "sketch": _CheckedSketch(step, pending),
                "metrics": metrics,
            }
            self._sender.submit(Item(self._next_seq(), "checkpoint", body))

    def _sharded(self) -> bool:
        """Whether some parameter is a DTensor shard (then every rank sketches its part)."""
        if self._sharded_cache is None:
            from sedmon._parameters import named_parameters
            from sedmon._sketcher import _is_dtensor

            self._sharded_cache = any(_is_dtensor(t) for _, t in named_parameters(self._model))
        return self._sharded_cache

    def _on_ack(self, ack: dict[str, Any]) -> None:
        edge = ack.get("edge")
        if not edge:
            return
        self.last_edge = edge
        logger.info(
            "sedmon step %s: W=%s signal rank %s, gap ratio %.3f, phase %s",
            edge.get("step"),
            edge.get("window"),
            edge.get("signal_rank"),
            float(edge.get("gap_ratio", math.nan)),
            edge.get("phase"),
        )

    def _at_exit(self) -> None:
        self.finish(timeout=float(os.environ.get("SEDMON_FINISH_TIMEOUT_S", FINISH_TIMEOUT_S)))


def init(
    project: str,
    name: str | None = None,
    model: Any = None,
    server: str | None = None,
    token: str | None = None,
    every: int = 100,
    dim: int = 300,
    method: str = "countsketch",
    seed: int = 0,
    groups: str | Mapping[str, Sequence[str]] = "all",
    windows: Sequence[int] = DEFAULT_WINDOWS,
    rank_rule: str = "half",
    optimizer: Any = None,
    config: Mapping[str, Any] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
) -> Run:
    """Start watching a training run; returns at once, whatever the server is doing.

    project, name: where the run lives on the server (name defaults to a timestamp).
    model: the torch module (or its named_parameters()) to sketch. server, token: default
    to $SEDMON_SERVER and $SEDMON_TOKEN. every: optimizer steps between checkpoints when
    `optimizer` is given (or `run.watch(optimizer)` is called). dim, method, seed: the sketch
    (k numbers per group; `countsketch`, `gaussian` or `identity`). groups: "all", "layers"
    or {group: [name patterns]}. windows, rank_rule: what the server computes.
    spool_dir: where undelivered items wait (default $SEDMON_HOME/spool or ~/.sedmon/spool).

    Raises ConfigError for a wrong argument, saying what to change; nothing else raises.
    """
    server = server if server is not None else os.environ.get("SEDMON_SERVER")
    token = token if token is not None else os.environ.get("SEDMON_TOKEN")
    if not server:
        raise ConfigError("no server: pass server='http://host:port' or set SEDMON_SERVER")
    if not re.match(r"^https?://[^\s/]+", server):
        raise ConfigError(
            f"server= must be an http(s) URL such as http://host:8000, got {server!r}"
        )
    if not token:
        raise ConfigError(
            "no token: pass token=... or set SEDMON_TOKEN (see `sedmon-server token`)"
        )
    if not isinstance(project, str) or not re.match(PROJECT_PATTERN, project):
        raise ConfigError(
            f"project= {project!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if name is None:
        name = time.strftime("run-%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise ConfigError(
            f"name= {name!r}: use 1-200 letters, digits or ._:/@+-, starting with a letter or digit"
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"every= must be a positive integer (optimizer steps), got {every!r}")
    if method not in _ONLINE_METHODS:
        raise ConfigError(f"method= must be one of {', '.join(_ONLINE_METHODS)}, got {method!r}")
    try:
        SketchSpec(method, dim, seed)
    except ValueError as exc:
        raise ConfigError(f"dim=/seed=: {exc}") from exc
    if not (groups in ("all", "layers") or isinstance(groups, Mapping)):
        raise ConfigError(
            f"groups= must be 'all', 'layers' or {{group: [patterns]}}, got {groups!r}"
        )
    model = _check_model(model)
    if optimizer is not None and model is None:
        raise ConfigError("optimizer= needs model= too (the parameters to sketch)")
    group_list = _group_names(model, groups)
    try:
        spec = RunCreate(
            project=project,
            name=name,
            sketch={"method": method, "dim": dim, "seed": seed},
            groups=group_list,
            windows=list(windows),
            rank_rule=rank_rule,
            config=_json_config(config),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid run settings: {problems}") from exc
    spool_root = Path(spool_dir) if spool_dir is not None else default_spool_root()
    _ensure_visible_logging()
    run = Run(
        spec=spec,
        server=server,
        token=token,
        model=model,
        every=every,
        groups=groups,
        spool_root=spool_root,
    )
    if optimizer is not None:
        run.watch(optimizer)
    return run
