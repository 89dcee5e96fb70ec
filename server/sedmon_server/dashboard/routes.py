"""The dashboard's pages, static files and cookie login, as one FastAPI router.

The pages are plain HTML that call the REST API from the browser. A read token is entered
once on the login page and kept in an HttpOnly, SameSite=Strict cookie (`sedmon_token`);
the API's auth accepts that cookie for GET requests that carry no Authorization header, so
the token never appears in a URL, in page script or in a log line.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from sedmon_server.analyses import ANALYSES
from sedmon_server.auth import COOKIE_NAME, Principal, authenticate

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).parent
PAGES = _HERE / "pages"
STATIC = (_HERE / "static").resolve()
COOKIE_MAX_AGE_S = 7 * 24 * 3600
MAX_LOGIN_BODY = 4096
RUN_PREFIX = "/api/v1/runs/{"

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page(name: str) -> FileResponse:
    return FileResponse(PAGES / name, media_type="text/html", headers=_PAGE_HEADERS)


def _safe_next(target: str | None) -> str:
    """A same-site path to go to after login; anything else (other hosts, //x) is /dashboard."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/dashboard"
    return target


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/login?next={_quote(target)}", status_code=303)


def _quote(value: str) -> str:
    return quote(value, safe="/")


def principal_for_token(request: Request, token: str) -> Principal | None:
    """The token's principal when it is valid and may read; None otherwise."""
    state: Any = request.app.state
    try:
        principal = authenticate(state.engine, state.settings.admin_token, f"Bearer {token}")
    except HTTPException:
        return None
    return principal if principal.has_scope("read") else None


def _cookie_principal(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    return principal_for_token(request, token)


def _page_or_login(request: Request, name: str) -> Response:
    if _cookie_principal(request) is None:
        return _to_login(request)
    return _page(name)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
def runs_page(request: Request) -> Response:
    return _page_or_login(request, "runs.html")


@router.get("/dashboard/runs/{run_id}")
def run_page(request: Request, run_id: int) -> Response:
    return _page_or_login(request, "run.html")


@router.get("/dashboard/compare")
def compare_page(request: Request) -> Response:
    return _page_or_login(request, "compare.html")


@router.get("/runs/{run_id}")
def run_page_short(run_id: int) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/runs/{run_id}", status_code=307)


@router.get("/compare")
def compare_page_short(request: Request) -> RedirectResponse:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/dashboard/compare{query}", status_code=307)


@router.get("/dashboard/login")
def login_page() -> FileResponse:
    return _page("login.html")


@router.post("/dashboard/login")
async def login(request: Request) -> RedirectResponse:
    """Form post {token, next}: a valid token sets the cookie; others go back with an error."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise HTTPException(status_code=403, detail="cross-site login refused")
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        raise HTTPException(status_code=413, detail="login form too large")
    form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4)
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or [""])[0])
    principal = principal_for_token(request, token) if token else None
    if principal is None:
        return RedirectResponse(
            f"/dashboard/login?error=invalid&next={_quote(target)}", status_code=303
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/dashboard/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/dashboard/session")
def session(request: Request) -> JSONResponse:
    """Who the cookie is, and which optional API parts exist (so pages never request a 404)."""
    principal = _cookie_principal(request)
    if principal is None:
        raise HTTPException(status_code=401, detail="not logged in")
    # The OpenAPI schema is FastAPI's public, cached list of routes.
    paths: dict[str, Any] = request.app.openapi().get("paths", {})
    gets = [p for p, ops in paths.items() if "get" in ops and p.startswith(RUN_PREFIX)]
    kinds = {p.rsplit("/", 1)[1] for p in gets if "}/analysis/" in p}
    if any(k.startswith("{") for k in kinds):  # one route for every kind, named in the path
        kinds = set(ANALYSES)
    features = {
        "alerts": any(p.endswith("}/alerts") for p in gets),
        "analyses": sorted(kinds),
    }
    return JSONResponse(
        {
            "project": principal.project,
            "scope": principal.scope,
            "features": features,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/dashboard/static/{path:path}")
def static_file(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        raise HTTPException(status_code=404, detail="not found")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".js":
        media_type = "text/javascript"
    return FileResponse(
        target,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
