"""Bearer tokens: per project, one scope each, stored as sha256 hashes.

Scopes nest: `admin` can do what `ingest` can, and `ingest` what `read` can (a training
job reads back its own run). A token of project P sees only P's runs; another project's
run answers 404, exactly like a run that does not exist. The bootstrap token from
SEDMON_ADMIN_TOKEN is an admin of every project; so is a stored admin token created
without a project. 401 (with WWW-Authenticate) without a token or with an unknown or
revoked one, 403 for a scope too small or a project not the token's.
The dashboard's HttpOnly cookie `sedmon_token` stands in for the header on GET and HEAD
requests that carry none (`credentials`).

Stored tokens are looked up once per `TokenCache.ttl_s` (SEDMON_TOKEN_CACHE_SECONDS,
default 5 s) per process, not on every request: a revocation through the API takes effect
at once in the process that served it and within the TTL in every other process (other
workers, replicas, `sedmon-server token revoke`). Unknown tokens are never cached, so a new
token works at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine, select
from starlette.concurrency import run_in_threadpool

from sedmon_server import tables

SCOPES: tuple[str, ...] = ("read", "ingest", "admin")
TOKEN_PREFIX = "sedmon_"
COOKIE_NAME = "sedmon_token"
"""The dashboard's session cookie: a token, accepted for GET/HEAD requests only."""

BEARER = HTTPBearer(
    scheme_name="bearer",
    description="`Authorization: Bearer <token>` (a sedmon token or SEDMON_ADMIN_TOKEN). "
    "The dashboard's `sedmon_token` cookie stands in for it on GET and HEAD.",
    auto_error=False,
)
"""The OpenAPI security scheme of every route behind `require`. Documentation only: it never
refuses a request (auto_error off) and `require` reads the credentials itself."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's project (None: every project) and scope."""

    project: str | None
    scope: str
    token_id: int | None = None

    def has_scope(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def sees(self, project: str) -> bool:
        return self.project is None or self.project == project


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token: "sedmon_" + 43 url-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(
    conn: Connection, project: str | None, scope: str, label: str | None
) -> tuple[int, str]:
    """Store a new token (hashed); returns (id, the token in clear, shown once)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if project is None and scope != "admin":
        raise ValueError("a read or ingest token needs a project")
    token = new_token()
    row = conn.execute(
        tables.tokens.insert()
        .values(
            token_hash=hash_token(token),
            prefix=token[: len(TOKEN_PREFIX) + 4],
            project=project,
            scope=scope,
            label=label,
            created_at=datetime.now(UTC),
        )
        .returning(tables.tokens.c.id)
    ).one()
    return int(row.id), token


def revoke_token(conn: Connection, token_id: int, project: str | None = None) -> bool:
    """Revoke a token (of `project` when given); False when there is none to revoke."""
    t = tables.tokens
    stmt = t.update().where(t.c.id == token_id, t.c.revoked_at.is_(None))
    if project is not None:
        stmt = stmt.where(t.c.project == project)
    return conn.execute(stmt.values(revoked_at=datetime.now(UTC))).rowcount > 0


class TokenCache:
    """Principals of stored tokens by token hash, each for `ttl_s` seconds (0: no cache).

    Bounded (`max_entries`); `forget` drops a revoked token at once and makes lookups that
    were in flight when it ran not store what they read (the generation check).
    """

    def __init__(
        self,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._entries.pop(token_hash, None)
            return None
        return entry[0]

    def put(self, token_hash: str, principal: Principal, generation: int) -> None:
        """Remember a principal read from the database when no `forget` ran since `generation`."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= self.max_entries:
                now = self.clock()
                self._entries = {h: e for h, e in self._entries.items() if e[1] > now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[token_hash] = (principal, self.clock() + self.ttl_s)

    def forget(self, token_id: int) -> None:
        """Drop a token (revoked in this process) from the cache."""
        with self._lock:
            self._generation += 1
            self._entries = {h: e for h, e in self._entries.items() if e[0].token_id != token_id}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="sedmon"'})


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorized("missing bearer token")
    kind, _, token = authorization.partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    return token


def _is_admin_token(token: str, admin_token: str) -> bool:
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


def _stored_principal(engine: Engine, token_hash: str, cache: TokenCache | None) -> Principal:
    generation = cache.generation if cache is not None else 0
    t = tables.tokens
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.id, t.c.project, t.c.scope).where(
                t.c.token_hash == token_hash, t.c.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        raise _unauthorized("unknown or revoked token")
    principal = Principal(project=row.project, scope=row.scope, token_id=int(row.id))
    if cache is not None:
        cache.put(token_hash, principal, generation)
    return principal


def authenticate(
    engine: Engine, admin_token: str, authorization: str | None, cache: TokenCache | None = None
) -> Principal:
    """The principal of an Authorization header; raises 401 when there is none."""
    token = _bearer(authorization)
    if _is_admin_token(token, admin_token):
        return Principal(project=None, scope="admin")
    token_hash = hash_token(token)
    cached = cache.get(token_hash) if cache is not None else None
    if cached is not None:
        return cached
    return _stored_principal(engine, token_hash, cache)


def credentials(request: Request) -> str | None:
    """The Authorization header; for GET/HEAD without one, the dashboard's cookie as a bearer.

    The cookie is HttpOnly and SameSite=Strict, and never counts for writes, so no other site
    can act with it.
    """
    header = request.headers.get("authorization")
    if header or request.method not in ("GET", "HEAD"):
        return header
    cookie = request.cookies.get(COOKIE_NAME)
    return f"Bearer {cookie}" if cookie else None


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: the caller's principal, which must hold at least `scope`.

    Async, so the bootstrap token and cached tokens cost no hop to a worker thread; only a
    database lookup (a token not cached) runs in the threadpool. Depends on `BEARER` so that
    every route using it shows the bearer security scheme in the OpenAPI document.
    """

    async def dependency(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal:
        state: Any = request.app.state
        cache: TokenCache | None = getattr(state, "token_cache", None)
        token = _bearer(credentials(request))
        if _is_admin_token(token, state.settings.admin_token):
            principal = Principal(project=None, scope="admin")
        else:
            token_hash = hash_token(token)
            found = cache.get(token_hash) if cache is not None else None
            if found is None:
                found = await run_in_threadpool(_stored_principal, state.engine, token_hash, cache)
            principal = found
        if not principal.has_scope(scope):
            raise HTTPException(403, f"this token's scope is {principal.scope!r}; needs {scope!r}")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


def check_project(principal: Principal, project: str) -> None:
    """403 when the principal may not act on `project` (used for bodies naming a project)."""
    if not principal.sees(project):
        raise HTTPException(403, f"this token is not valid for project {project!r}")
