"""API tokens: create (shown once), list, revoke. Admin scope only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy import Engine, select

from sedmon_server import tables
from sedmon_server.api.dependencies import BAD_INPUT, BAD_PARAMS, ERROR_RESPONSES, engine_of, error
from sedmon_server.api.schemas import TokenCreate, TokenCreated, TokenList, TokenOut
from sedmon_server.auth import Principal, check_project, create_token, require, revoke_token

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


def _out(row: Mapping[Any, Any]) -> TokenOut:
    return TokenOut(
        id=int(row["id"]),
        prefix=row["prefix"],
        project=row["project"],
        scope=row["scope"],
        label=row["label"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


@router.post(
    "", response_model=TokenCreated, status_code=201, responses={**ERROR_RESPONSES, **BAD_INPUT}
)
def create(
    body: TokenCreate,
    principal: Annotated[Principal, Depends(require("admin"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> TokenCreated:
    """A new token for a project (or, by a global admin, a global admin token)."""
    if body.project is None:
        if principal.project is not None:
            raise HTTPException(403, "only a global admin creates tokens without a project")
        if body.scope != "admin":
            raise HTTPException(422, "a read or ingest token needs a project")
    else:
        check_project(principal, body.project)
    t = tables.tokens
    with engine.begin() as conn:
        token_id, token = create_token(conn, body.project, body.scope, body.label)
        row = conn.execute(select(t).where(t.c.id == token_id)).mappings().one()
    return TokenCreated(**_out(row).model_dump(), token=token)


@router.get("", response_model=TokenList, responses=ERROR_RESPONSES)
def list_(
    principal: Annotated[Principal, Depends(require("admin"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> TokenList:
    """Tokens (never their secret) the caller administers, oldest first."""
    t = tables.tokens
    stmt = select(t).order_by(t.c.id)
    if principal.project is not None:
        stmt = stmt.where(t.c.project == principal.project)
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return TokenList(tokens=[_out(r) for r in rows])


@router.delete(
    "/{token_id}",
    status_code=204,
    responses={**ERROR_RESPONSES, **BAD_PARAMS, 404: error("No such active token")},
)
def revoke(
    token_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("admin"))],
    engine: Annotated[Engine, Depends(engine_of)],
) -> Response:
    """Revoke a token; it stops working at once here, within SEDMON_TOKEN_CACHE_SECONDS in
    other server processes."""
    with engine.begin() as conn:
        if not revoke_token(conn, token_id, principal.project):
            raise HTTPException(404, f"token {token_id} not found or already revoked")
    request.app.state.token_cache.forget(token_id)
    return Response(status_code=204)
