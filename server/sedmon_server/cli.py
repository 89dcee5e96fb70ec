"""`sedmon-server`: serve, migrate, and manage tokens.

    sedmon-server serve [--database-url URL] [--host H] [--port P] [--workers N]
    sedmon-server migrate [--database-url URL]
    sedmon-server token create --project P --scope S [--label L]   (prints the token)
    sedmon-server token list [--project P]
    sedmon-server token revoke ID

Every command reads SEDMON_* settings; --database-url overrides SEDMON_DATABASE_URL.
With several workers the listening socket is bound here with IPPROTO_TCP, so accepted
connections get TCP_NODELAY (uvicorn issue #3149: its own pre-bound socket leaves it off,
which costs ~40 ms per keep-alive request), and /metrics is shared by the workers: `serve`
gives them a private PROMETHEUS_MULTIPROC_DIR, removed at exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import select

from sedmon_server import migrations, tables
from sedmon_server.auth import SCOPES, create_token, revoke_token
from sedmon_server.database import make_engine
from sedmon_server.observability import MULTIPROC_ENV
from sedmon_server.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sedmon-server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (migrates first)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite under $SEDMON_HOME)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="warning")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url")

    token = sub.add_parser("token", help="manage API tokens")
    token.add_argument("--database-url")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token and print it")
    create.add_argument("--project", help="project (omit for a global admin token)")
    create.add_argument("--scope", choices=SCOPES, required=True)
    create.add_argument("--label")
    listing = tsub.add_parser("list", help="list tokens (never their secret)")
    listing.add_argument("--project")
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    return parser


def _settings(database_url: str | None) -> Settings:
    if database_url:
        os.environ["SEDMON_DATABASE_URL"] = database_url
    return Settings()


def tcp_listener(host: str, port: int) -> socket.socket:
    """A bound listening socket whose accepted connections asyncio sets TCP_NODELAY on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(
    settings: Settings, host: str, port: int, workers: int, log_level: str, loop: str = "auto"
) -> None:
    import uvicorn

    engine = make_engine(settings.resolved_database_url())
    migrations.upgrade(engine)
    engine.dispose()
    config = uvicorn.Config(
        "sedmon_server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        loop=loop,
        timeout_keep_alive=75,
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        with shared_metrics_dir():
            Multiprocess(config, sockets=[tcp_listener(host, port)]).run()
    else:
        uvicorn.Server(config).run()


@contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh private PROMETHEUS_MULTIPROC_DIR for the workers (spawned, so they inherit it
    and import prometheus_client after it is set); removed at exit. Every worker's /metrics
    then reports all workers (see sedmon_server.observability)."""
    saved = os.environ.get(MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="sedmon-metrics-")  # mode 0700
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if saved is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = saved
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings(getattr(args, "database_url", None))
    if args.command == "serve":
        serve(settings, args.host, args.port, args.workers, args.log_level, args.loop)
        return 0
    engine = make_engine(settings.resolved_database_url())
    try:
        migrations.upgrade(engine)
        if args.command == "migrate":
            print(f"database at revision {migrations.current_revision(engine)}")
            return 0
        t = tables.tokens
        if args.token_command == "create":
            if args.project is None and args.scope != "admin":
                print("a read or ingest token needs --project", file=sys.stderr)
                return 2
            with engine.begin() as conn:
                _, token = create_token(conn, args.project, args.scope, args.label)
            print(token)
            return 0
        if args.token_command == "list":
            stmt = select(t).order_by(t.c.id)
            if args.project:
                stmt = stmt.where(t.c.project == args.project)
            with engine.connect() as conn:
                for row in conn.execute(stmt).mappings():
                    state = "revoked" if row["revoked_at"] else "active"
                    print(
                        f"{row['id']}\t{row['prefix']}...\t{row['project'] or '*'}\t"
                        f"{row['scope']}\t{state}\t{row['label'] or ''}"
                    )
            return 0
        with engine.begin() as conn:
            if not revoke_token(conn, args.id):
                print(f"token {args.id} not found or already revoked", file=sys.stderr)
                return 1
        print(f"revoked token {args.id}")
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
