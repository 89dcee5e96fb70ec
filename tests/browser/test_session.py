"""The dashboard's login cookie over plain HTTP: how it is set, what it may do, what it may not."""

from __future__ import annotations

import secrets

import httpx
import pytest
from browsertest import LiveServer

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def read_token(live_server: LiveServer) -> str:
    return live_server.token(f"sess-{secrets.token_hex(3)}")


def _login(
    base_url: str, token: str, next_path: str = "/dashboard", **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{base_url}/dashboard/login",
        data={"token": token, "next": next_path},
        headers=headers,
        follow_redirects=False,
    )


def test_login_sets_an_http_only_same_site_strict_cookie_and_goes_to_next(
    live_server: LiveServer, read_token: str
) -> None:
    r = _login(live_server.base_url, read_token, "/dashboard/compare?runs=1")
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/compare?runs=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"sedmon_token={read_token};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert read_token not in r.headers["location"]


def test_login_with_an_unknown_token_sets_no_cookie(live_server: LiveServer) -> None:
    r = _login(live_server.base_url, "sedmon_unknown")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/dashboard/login?error=invalid")
    assert "set-cookie" not in r.headers


def test_login_from_another_origin_is_refused(live_server: LiveServer, read_token: str) -> None:
    r = _login(live_server.base_url, read_token, Origin="http://evil.example")
    assert r.status_code == 403
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil", ""])
def test_login_never_redirects_off_site(
    live_server: LiveServer, read_token: str, target: str
) -> None:
    assert _login(live_server.base_url, read_token, target).headers["location"] == "/dashboard"


def test_the_cookie_reads_the_api_but_never_writes(live_server: LiveServer) -> None:
    project = f"sess-{secrets.token_hex(3)}"
    ingest = live_server.token(project, scope="ingest")
    cookies = {"sedmon_token": ingest}
    with httpx.Client(base_url=live_server.base_url, cookies=cookies) as browser_like:
        assert browser_like.get("/api/v1/runs").status_code == 200
        body = {"project": project, "name": "via-cookie"}
        assert browser_like.post("/api/v1/runs", json=body).status_code == 401


def test_pages_without_a_cookie_lead_to_login_with_the_page_to_come_back_to(
    live_server: LiveServer,
) -> None:
    r = httpx.get(f"{live_server.base_url}/dashboard/runs/7?window=10", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?next=/dashboard/runs/7%3Fwindow%3D10"


def test_pages_with_a_revoked_token_lead_to_login(live_server: LiveServer) -> None:
    project = f"sess-{secrets.token_hex(3)}"
    r = live_server.api.post("/api/v1/tokens", json={"project": project, "scope": "read"})
    token, token_id = r.json()["token"], r.json()["id"]
    assert live_server.api.delete(f"/api/v1/tokens/{token_id}").status_code in (200, 204)
    r = httpx.get(
        f"{live_server.base_url}/dashboard",
        cookies={"sedmon_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_logout_clears_the_cookie(live_server: LiveServer) -> None:
    r = httpx.post(f"{live_server.base_url}/dashboard/logout", follow_redirects=False)
    assert r.status_code == 303
    assert 'sedmon_token=""' in r.headers["set-cookie"]
    assert "Max-Age=0" in r.headers["set-cookie"]


@pytest.mark.parametrize(
    "path", ["../routes.py", "..%2Froutes.py", "%2e%2e/%2e%2e/auth.py", "vendor", "nope.js"]
)
def test_static_files_never_leave_their_folder(live_server: LiveServer, path: str) -> None:
    r = httpx.get(f"{live_server.base_url}/dashboard/static/{path}")
    assert r.status_code == 404


def test_static_files_are_served_with_their_types(live_server: LiveServer) -> None:
    js = httpx.get(f"{live_server.base_url}/dashboard/static/run.js")
    assert js.headers["content-type"].startswith("text/javascript")
    css = httpx.get(f"{live_server.base_url}/dashboard/static/vendor/uplot/uPlot.min.css")
    assert css.headers["content-type"].startswith("text/css")


def test_session_says_which_optional_api_parts_the_server_has(
    live_server: LiveServer, bare_server: LiveServer, read_token: str
) -> None:
    cookies = {"sedmon_token": read_token}
    full = httpx.get(f"{live_server.base_url}/dashboard/session", cookies=cookies).json()
    bare = httpx.get(f"{bare_server.base_url}/dashboard/session", cookies=cookies).json()
    assert full["features"]["alerts"] is True
    assert bare["features"]["alerts"] is False
    assert {"coupling", "lag-sweep", "phases", "shifts"} <= set(full["features"]["analyses"])
    assert full["scope"] == "read"
