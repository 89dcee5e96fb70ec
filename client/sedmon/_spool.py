"""On-disk spool of one run: what the server has not acknowledged yet, replayable in order.

Layout of a run's folder (under $SEDMON_HOME/spool, default ~/.sedmon/spool):

    run.json                 the run spec (POST /api/v1/runs body) and the server URL
    seg-<ns>-<pid>.jsonl     append-only segments, one per writing process
    acked                    {"seq": s}: every record with seq <= s has been delivered
    lock                     flock'ed by the process replaying (a live run or `sedmon sync`)

Each record is one line `<crc32 hex> <json>\\n`, flushed and fsync'ed before `append`
returns. A line cut by a crash (no newline, or a checksum that does not match) is skipped on
replay; every process writes its own segment, so a torn tail never swallows a later record.
Records carry a sequence number; replay goes in sequence order. A record replayed twice is
harmless: checkpoints are idempotent on (run, step), metric values on (run, name, step).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sedmon._deferred import Deferred
from sedmon._logging import logger

SEGMENT_BYTES = 64 * 1024 * 1024
"""A segment is closed and a new one started past this size."""


def default_spool_root() -> Path:
    """$SEDMON_HOME/spool when SEDMON_HOME is set, else ~/.sedmon/spool."""
    home = os.environ.get("SEDMON_HOME")
    base = Path(home) if home else Path.home() / ".sedmon"
    return base / "spool"


def run_folder_name(server: str, project: str, name: str) -> str:
    """A stable, filesystem-safe folder name for (server, project, run name)."""
    digest = hashlib.sha256(f"{server}\n{project}\n{name}".encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{project}__{name}")[:120]
    return f"{safe}__{digest}"


def to_json(body: Any) -> bytes:
    """Compact JSON with NaN/Infinity allowed; numpy arrays (sketches) become lists here, and
    deferred values (a sketch on its way from the GPU) are waited for here: off the training
    thread."""
    return json.dumps(body, separators=(",", ":"), allow_nan=True, default=_array_list).encode()


def _array_list(value: Any) -> Any:
    if isinstance(value, Deferred):
        return value.result()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_record(record: dict[str, Any]) -> bytes:
    """One spool line: checksum, space, compact JSON (NaN allowed), newline."""
    payload = to_json(record)
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one complete line, or None when its checksum or JSON is broken."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "seq" in record else None


@dataclass(frozen=True, order=True)
class Entry:
    """Where a pending record lives: ordered by its sequence number."""

    seq: int
    path: str
    offset: int
    length: int
    kind: str


class Spool:
    """The spool folder of one run. Thread-safe; one instance per process and run."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.RLock()
        self._index: list[Entry] | None = None
        self._acked = -1
        self._segment: IO[bytes] | None = None
        self._segment_path: Path | None = None
        self._lock_file: IO[bytes] | None = None
        self.torn = 0
        """Lines skipped as torn or corrupt during the last scan."""
        self.count = 0
        """Pending records as last indexed; read without the lock (by a thread that must not
        wait for the disk), so it may lag a write in progress."""

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, server: str, run_spec: dict[str, Any]) -> Spool:
        """The spool of a run under `root`, made if absent, with its spec written once."""
        directory = Path(root) / run_folder_name(server, run_spec["project"], run_spec["name"])
        directory.mkdir(parents=True, exist_ok=True)
        spec_path = directory / "run.json"
        if not spec_path.exists():
            _atomic_write(spec_path, json.dumps({"server": server, "run": run_spec}, indent=1))
        return cls(directory)

    @staticmethod
    def folders(root: Path) -> list[Path]:
        """Run folders under a spool root (those with a run.json), sorted by name."""
        root = Path(root)
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if (p / "run.json").is_file())

    def spec(self) -> dict[str, Any]:
        """{"server": url, "run": RunCreate body} as written at creation."""
        data: dict[str, Any] = json.loads((self.directory / "run.json").read_text())
        return data

    def try_lock(self) -> bool:
        """Take this run's replay lock (non-blocking); False when another process holds it."""
        with self._lock:
            if self._lock_file is not None:
                return True
            f = open(self.directory / "lock", "ab")  # noqa: SIM115 - held for the process
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                return False
            self._lock_file = f
            return True

    def close(self, remove_if_done: bool = False) -> None:
        """Close the segment being written and release the lock.

        remove_if_done: delete the whole folder when nothing is pending (needs the lock).
        """
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None
            if remove_if_done and self._lock_file is not None and not self.has_pending():
                shutil.rmtree(self.directory, ignore_errors=True)
            if self._lock_file is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None

    # -- writing ----------------------------------------------------------------------------

    def append(self, seq: int, kind: str, body: dict[str, Any]) -> None:
        """Write one record durably (flush + fsync) and index it as pending."""
        self.append_lines([(seq, kind, encode_record({"seq": seq, "kind": kind, "body": body}))])

    def append_lines(self, records: list[tuple[int, str, bytes]]) -> None:
        """Write encoded records (`encode_record` lines, with their seq and kind) durably, one
        flush + fsync for all of them, and index them as pending."""
        if not records:
            return
        with self._lock:
            self._ensure_index()
            assert self._index is not None
            entries = []
            for seq, kind, line in records:
                f = self._writer(len(line))
                assert self._segment_path is not None
                entries.append(Entry(seq, str(self._segment_path), f.tell(), len(line), kind))
                f.write(line)
            assert self._segment is not None
            self._sync(self._segment)
            tail = [*self._index[-1:], *entries]
            in_order = all(a.seq < b.seq for a, b in itertools.pairwise(tail))
            self._index.extend(entries)
            if not in_order:
                self._index.sort()
            self.count = len(self._index)

    def _sync(self, f: IO[bytes]) -> None:
        """Flush and fsync a file being written: the one place where a write waits for the
        disk (records, the `acked` file). A test hook: a subclass that sleeps here is a slow
        disk."""
        _flush_fsync(f)

    def _writer(self, incoming: int) -> IO[bytes]:
        if self._segment is not None and self._segment.tell() + incoming > SEGMENT_BYTES:
            self._sync(self._segment)  # what went there is durable before it is closed
            self._segment.close()
            self._segment = None
        if self._segment is None:
            self._segment_path = self.directory / f"seg-{time.time_ns():020d}-{os.getpid()}.jsonl"
            self._segment = open(self._segment_path, "ab")  # noqa: SIM115 - kept open to append
        return self._segment

    # -- reading ----------------------------------------------------------------------------

    def pending(self) -> list[Entry]:
        """Records not yet delivered, in sequence order."""
        with self._lock:
            self._ensure_index()
            assert self._index is not None
            return list(self._index)

    def has_pending(self) -> bool:
        with self._lock:
            self._ensure_index()
            return bool(self._index)

    def head(self) -> Entry | None:
        """The pending record with the smallest sequence number."""
        with self._lock:
            self._ensure_index()
            assert self._index is not None
            return self._index[0] if self._index else None

    def read(self, entry: Entry) -> dict[str, Any]:
        """The body of a pending record."""
        with open(entry.path, "rb") as f:
            f.seek(entry.offset)
            line = f.read(entry.length)
        record = decode_line(line.rstrip(b"\n"))
        if record is None:
            raise ValueError(f"spool record {entry.seq} in {entry.path} is corrupt")
        body: dict[str, Any] = record["body"]
        return body

    def ack(self, seq: int) -> None:
        """Mark every record with sequence number <= seq as delivered; drop spent segments."""
        with self._lock:
            self._ensure_index()
            assert self._index is not None
            if seq <= self._acked:
                return
            self._acked = seq
            _atomic_write(self.directory / "acked", json.dumps({"seq": seq}), self._sync)
            self._index = [e for e in self._index if e.seq > seq]
            self.count = len(self._index)
            live = {e.path for e in self._index}
            current = str(self._segment_path) if self._segment_path else None
            for path in self._segments():
                if str(path) not in live and str(path) != current:
                    with contextlib.suppress(OSError):
                        path.unlink()

    def max_seq(self) -> int:
        """The largest sequence number ever written here (acked or pending), or -1."""
        with self._lock:
            self._ensure_index()
            assert self._index is not None
            return max([self._acked, *(e.seq for e in self._index)])

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("seg-*.jsonl"))

    def _ensure_index(self) -> None:
        if self._index is not None:
            return
        acked_path = self.directory / "acked"
        if acked_path.exists():
            try:
                self._acked = int(json.loads(acked_path.read_text())["seq"])
            except (ValueError, KeyError, TypeError):
                logger.warning("sedmon: spool ack file %s is unreadable; replaying all", acked_path)
        index: list[Entry] = []
        self.torn = 0
        for path in self._segments():
            for offset, length, record in self._scan(path):
                if record is None:
                    self.torn += 1
                elif int(record["seq"]) > self._acked:
                    index.append(
                        Entry(int(record["seq"]), str(path), offset, length, record["kind"])
                    )
        if self.torn:
            logger.warning(
                "sedmon: skipped %d torn or corrupt spool line(s) in %s", self.torn, self.directory
            )
        index.sort()
        self._index = index
        self.count = len(index)

    @staticmethod
    def _scan(path: Path) -> Iterator[tuple[int, int, dict[str, Any] | None]]:
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:  # torn tail: the writer died mid-line
                yield offset, len(data) - offset, None
                return
            yield offset, end + 1 - offset, decode_line(data[offset:end])
            offset = end + 1


def _flush_fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _atomic_write(path: Path, text: str, sync: Callable[[IO[bytes]], None] = _flush_fsync) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(text.encode())
        sync(f)
    os.replace(tmp, path)
