"""The on-disk spool: durable records, replay in sequence order, torn lines skipped."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from sedmon._spool import Spool, decode_line, encode_record

SPEC = {"project": "p", "name": "r", "sketch": {"method": "countsketch", "dim": 4, "seed": 0}}


def _spool(tmp_path: Path) -> Spool:
    return Spool.create(tmp_path, "http://127.0.0.1:1", SPEC)


def test_records_round_trip_with_their_checksum() -> None:
    record = {"seq": 3, "kind": "checkpoint", "body": {"step": 7, "sketch": {"all": [1.5, -2.0]}}}
    line = encode_record(record)
    assert line.endswith(b"\n")
    assert decode_line(line[:-1]) == record


def test_a_flipped_byte_fails_the_checksum() -> None:
    line = bytearray(encode_record({"seq": 1, "kind": "metrics", "body": {"step": 1}})[:-1])
    line[-3] ^= 0x01
    assert decode_line(bytes(line)) is None


def test_non_finite_numbers_survive_the_spool(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append(1, "checkpoint", {"step": 0, "sketch": {"all": [float("nan"), float("inf")]}})
    body = Spool(spool.directory).read(Spool(spool.directory).pending()[0])
    values = body["sketch"]["all"]
    assert values[0] != values[0] and values[1] == float("inf")


def test_pending_records_replay_in_sequence_order_across_processes(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append(20, "checkpoint", {"step": 2})
    spool.append(10, "checkpoint", {"step": 1})  # an overflow written before an older item
    spool.append(30, "finish", {"state": "finished"})
    spool.close()
    reopened = Spool(spool.directory)
    assert [reopened.read(e)["step"] for e in reopened.pending()[:2]] == [1, 2]
    assert [e.kind for e in reopened.pending()] == ["checkpoint", "checkpoint", "finish"]


def test_acked_records_are_not_replayed_and_spent_segments_are_removed(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    for seq in (1, 2, 3):
        spool.append(seq, "metrics", {"step": seq})
    spool.close()
    replay = Spool(spool.directory)
    replay.ack(2)
    assert [e.seq for e in Spool(spool.directory).pending()] == [3]
    replay.ack(3)
    assert Spool(spool.directory).pending() == []
    assert list(spool.directory.glob("seg-*.jsonl")) == []


def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append(1, "checkpoint", {"step": 1})
    spool.append(2, "checkpoint", {"step": 2})
    spool.close()
    (segment,) = spool.directory.glob("seg-*.jsonl")
    whole = segment.read_bytes()
    segment.write_bytes(whole + encode_record({"seq": 3, "kind": "checkpoint", "body": {}})[:17])
    replay = Spool(spool.directory)
    assert [e.seq for e in replay.pending()] == [1, 2]
    assert replay.torn == 1


def test_a_later_process_never_appends_to_a_torn_segment(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append(1, "checkpoint", {"step": 1})
    spool.close()
    (segment,) = spool.directory.glob("seg-*.jsonl")
    segment.write_bytes(segment.read_bytes() + b'0badf00d {"seq": 2, "ki')  # died mid-write
    later = Spool(spool.directory)
    later.append(5, "checkpoint", {"step": 5})
    later.close()
    assert [e.seq for e in Spool(spool.directory).pending()] == [1, 5]


def test_the_spool_keeps_the_run_spec_for_sync(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    assert Spool.folders(tmp_path) == [spool.directory]
    assert spool.spec() == {"server": "http://127.0.0.1:1", "run": SPEC}


def test_only_one_process_holds_the_replay_lock(tmp_path: Path) -> None:
    first, second = _spool(tmp_path), Spool(_spool(tmp_path).directory)
    assert first.try_lock()
    assert not second.try_lock()
    first.close()
    assert second.try_lock()
    second.close()


class CountingSpool(Spool):
    syncs = 0

    def _sync(self, f: IO[bytes]) -> None:
        CountingSpool.syncs += 1
        super()._sync(f)


def test_a_batch_of_records_costs_one_fsync_and_replays_in_sequence_order(
    tmp_path: Path,
) -> None:
    spool = CountingSpool(_spool(tmp_path).directory)
    spool.append(5, "checkpoint", {"step": 5})
    CountingSpool.syncs = 0
    batch = [
        (s, "checkpoint", encode_record({"seq": s, "kind": "checkpoint", "body": {"step": s}}))
        for s in (7, 3, 9)
    ]
    spool.append_lines(batch)
    assert CountingSpool.syncs == 1
    assert spool.count == 4
    spool.close()
    reopened = Spool(spool.directory)
    assert [reopened.read(e)["step"] for e in reopened.pending()] == [3, 5, 7, 9]
