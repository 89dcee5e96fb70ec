"""The `sedmon` command: analyze a checkpoint folder, backfill it to a server, sync the spool.

Exit codes: 0 done; 1 the server could not be reached or refused; 2 bad input (no
checkpoints, a key or shape that changes along the folder, a wrong option).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sedmon._errors import CheckpointFolderError, SedmonError
from sedmon._sender import API, Connection, Outcome, TransportSettings, detail, item_path
from sedmon._spool import Spool, default_spool_root
from sedmon_core.schemas import DEFAULT_WINDOWS
from sedmon_core.sketch import SketchSpec
from sedmon_core.spectrum import RANK_RULES

BATCH = 200
"""Checkpoints per backfill request (the batch endpoint is all or nothing)."""


def _warn(msg: str) -> None:
    print(f"sedmon: warning: {msg}", file=sys.stderr)


def _windows(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"windows must be integers like 10,20: {text!r}") from exc
    if not values or any(not 2 <= w <= 100 for w in values):
        raise argparse.ArgumentTypeError("each window must be in 2..100")
    return values


def _sketch_options(p: argparse.ArgumentParser, default_dim: int | None) -> None:
    p.add_argument(
        "--dim",
        type=int,
        default=default_dim,
        metavar="K",
        help="sketch to K numbers per checkpoint"
        + (" (default: exact deltas)" if default_dim is None else " (default: %(default)s)"),
    )
    p.add_argument(
        "--method", default="countsketch", choices=["countsketch", "gaussian", "identity"]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--windows",
        type=_windows,
        default=list(DEFAULT_WINDOWS),
        help="window sizes, comma-separated (default: %(default)s)",
    )
    p.add_argument("--rank-rule", default="half", choices=list(RANK_RULES))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sedmon", description="Spectral Edge Dynamics of training runs (client tools)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="spectral edge of a folder of checkpoints, offline")
    a.add_argument("dir", type=Path)
    _sketch_options(a, None)
    a.add_argument("--group", default="all", help="'all' or a group of the 'layers' grouping")
    a.add_argument("--json", action="store_true", help="print the REST spectrum response shape")
    a.add_argument("--plot", type=Path, metavar="FILE.png", help="plot the gap ratio (matplotlib)")

    b = sub.add_parser("backfill", help="send a folder's checkpoint sketches to a server")
    b.add_argument("dir", type=Path)
    b.add_argument("--project", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--server", default=os.environ.get("SEDMON_SERVER"))
    b.add_argument("--token", default=os.environ.get("SEDMON_TOKEN"))
    _sketch_options(b, 300)

    s = sub.add_parser(
        "sync", help="send what the spool holds (runs that could not reach the server)"
    )
    s.add_argument("--spool-dir", type=Path, default=None, help="default $SEDMON_HOME/spool")
    s.add_argument("--server", default=None, help="override the server recorded in the spool")
    s.add_argument("--project", default=None, help="only the runs of this project")
    s.add_argument(
        "--token",
        default=None,
        help="an ingest token (default $SEDMON_TOKEN, preferred: an argument is visible to "
        "other users in the process list); the spool never holds a token",
    )
    return parser


def _spec(args: argparse.Namespace) -> SketchSpec | None:
    if args.dim is None:
        return None if args.method != "identity" else SketchSpec("identity", 1, args.seed)
    try:
        return SketchSpec(args.method, args.dim, args.seed)
    except ValueError as exc:
        raise SedmonError(str(exc)) from exc


def cmd_analyze(args: argparse.Namespace) -> int:
    from sedmon._analyze import Progress, analyze_folder, edge_table, plot
    from sedmon._checkpoints import list_checkpoints

    files = list_checkpoints(args.dir, _warn)
    if len(files) < 2:
        raise CheckpointFolderError(f"{args.dir}: {len(files)} checkpoint(s); at least 2 needed")
    progress = Progress(len(files), "analyze")
    try:
        analysis = analyze_folder(
            files, args.windows, args.rank_rule, _spec(args), args.group, progress
        )
    finally:
        progress.close()
    if args.json:
        shapes = [analysis.rest_shape(w) for w in analysis.windows]
        print(json.dumps(shapes[0] if len(shapes) == 1 else shapes))
    else:
        print(edge_table(analysis))
    if args.plot is not None:
        try:
            plot(analysis, args.plot)
        except ImportError:
            _warn("--plot needs matplotlib (pip install matplotlib)")
        else:
            print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _need_server(server: str | None, token: str | None) -> tuple[str, str]:
    if not server:
        raise SedmonError("no server: pass --server URL or set SEDMON_SERVER")
    if not token:
        raise SedmonError("no token: pass --token T or set SEDMON_TOKEN")
    return server, token


def _create_run(conn: Connection, spec: dict[str, Any]) -> int | None:
    outcome, response = conn.post(f"{API}/runs", spec, time.monotonic() + 30)
    if outcome is Outcome.OK and response is not None:
        return int(response.json()["id"])
    code = response.status_code if response is not None else "no answer"
    hint = {
        401: ": the server does not know this token (unknown or revoked)",
        403: f": the token is not an ingest token of project {spec['project']}",
    }.get(code if isinstance(code, int) else 0, "")
    print(
        f"sedmon: cannot create run {spec['project']}/{spec['name']} "
        f"({code}: {detail(response)}){hint}",
        file=sys.stderr,
    )
    return None


def cmd_backfill(args: argparse.Namespace) -> int:
    from sedmon._analyze import Progress, read_checkpoints
    from sedmon._checkpoints import list_checkpoints

    server, token = _need_server(args.server, args.token)
    spec = _spec(args)
    assert spec is not None
    files = list_checkpoints(args.dir, _warn)
    if not files:
        raise CheckpointFolderError(f"{args.dir}: no checkpoints")
    run_spec = {
        "project": args.project,
        "name": args.name,
        "sketch": {"method": spec.method, "dim": spec.dim, "seed": spec.seed},
        "groups": ["all"],
        "windows": args.windows,
        "rank_rule": args.rank_rule,
        "config": {"backfill": str(args.dir)},
    }
    conn = Connection(server, token, TransportSettings.from_env())
    try:
        run_id = _create_run(conn, run_spec)
        if run_id is None:
            return 1
        progress = Progress(len(files), "backfill")
        batch: list[dict[str, Any]] = []
        created = unchanged = 0

        def send() -> bool:
            nonlocal created, unchanged
            outcome, response = conn.post(
                f"{API}/runs/{run_id}/checkpoints:batch",
                {"checkpoints": batch},
                time.monotonic() + 60,
            )
            if outcome is not Outcome.OK or response is None:
                code = response.status_code if response is not None else "no answer"
                print(f"sedmon: batch refused ({code}: {detail(response)})", file=sys.stderr)
                return False
            ack = response.json()
            created += int(ack["created"])
            unchanged += int(ack["unchanged"])
            batch.clear()
            return True

        try:
            for cp in read_checkpoints(files, spec, progress=progress):
                batch.append(
                    {
                        "step": cp.step,
                        "sketch": {g: v.tolist() for g, v in cp.vectors.items()},
                        "metrics": cp.metrics,
                    }
                )
                if len(batch) >= BATCH and not send():
                    return 1
            if batch and not send():
                return 1
        finally:
            progress.close()
    finally:
        conn.close()
    print(
        f"run {args.project}/{args.name} (id {run_id}): {created} checkpoint(s) created, "
        f"{unchanged} already there"
    )
    return 0


def sync_folder(spool: Spool, server: str | None, token: str | None) -> tuple[int, int, int]:
    """Replay one run's spool in order: (delivered, refused, left). Raises SedmonError."""
    spec = spool.spec()
    url, tok = _need_server(server or spec.get("server"), token)
    conn = Connection(url, tok, TransportSettings.from_env())
    delivered = refused = 0
    try:
        pending = spool.pending()
        if not pending:
            return 0, 0, 0
        run_id = _create_run(conn, spec["run"])
        if run_id is None:
            return 0, 0, len(pending)
        for entry in pending:
            body = spool.read(entry)
            outcome, response = conn.post(
                item_path(run_id, entry.kind), body, time.monotonic() + 30
            )
            if outcome is Outcome.UNREACHABLE:
                return delivered, refused, len(spool.pending())
            if outcome is Outcome.FINAL:
                refused += 1
                code = response.status_code if response is not None else 0
                _warn(
                    f"{entry.kind} at step {body.get('step')} refused ({code}: {detail(response)})"
                )
            else:
                delivered += 1
            spool.ack(entry.seq)
    finally:
        conn.close()
    return delivered, refused, len(spool.pending())


def _project_of(folder: Path) -> str | None:
    try:
        return str(Spool(folder).spec()["run"]["project"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_sync(args: argparse.Namespace) -> int:
    root = args.spool_dir if args.spool_dir is not None else default_spool_root()
    folders = Spool.folders(root)
    if args.project is not None:
        folders = [f for f in folders if _project_of(f) == args.project]
    if not folders:
        print(f"nothing to sync in {root}" + (f" for {args.project}" if args.project else ""))
        return 0
    # Tokens are never written to the spool: the replay needs one from the environment.
    args.token = args.token or os.environ.get("SEDMON_TOKEN")
    if not args.token:
        projects = sorted({p for p in map(_project_of, folders) if p is not None})
        raise SedmonError(
            f"no token: set SEDMON_TOKEN to an ingest token of project {', '.join(projects)} "
            f"({len(folders)} run(s) waiting in {root}; the spool keeps no token)"
        )
    status = 0
    for folder in folders:
        spool = Spool(folder)
        if not spool.try_lock():
            _warn(f"{folder.name} is in use by a running process; skipped")
            continue
        try:
            run = spool.spec()["run"]
            delivered, refused, left = sync_folder(spool, args.server, args.token)
            print(
                f"{run['project']}/{run['name']}: {delivered} sent, {refused} refused, "
                f"{left} left" + (f", {spool.torn} torn line(s) skipped" if spool.torn else "")
            )
            if left:
                status = 1
        finally:
            spool.close(remove_if_done=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"analyze": cmd_analyze, "backfill": cmd_backfill, "sync": cmd_sync}[args.command]
    try:
        return handler(args)
    except CheckpointFolderError as exc:
        print(f"sedmon: error: {exc}", file=sys.stderr)
        return 2
    except SedmonError as exc:
        print(f"sedmon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
