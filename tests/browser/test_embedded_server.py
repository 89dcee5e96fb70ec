"""The dashboard as `make run` serves it: `sedmon-server serve` on the embedded SQLite default,
a subprocess with its request log on, read in headless Chromium; the token stays out of the log."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsertest import Tab, Trajectory

pytestmark = [pytest.mark.browser]

ADMIN = "embedded-test-admin-token"
N = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`sedmon-server serve --log-level info` with SEDMON_HOME set and no database URL."""
    home = tmp_path_factory.mktemp("embedded")
    port = _free_port()
    env = {**os.environ, "SEDMON_HOME": str(home), "SEDMON_ADMIN_TOKEN": ADMIN}
    env.pop("SEDMON_DATABASE_URL", None)
    log = home / "server.log"
    cli = Path(sys.executable).parent / "sedmon-server"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready in 60 s"
            time.sleep(0.2)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            yield {"base": base, "api": api, "home": home, "log": log, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sqlite_server_shows_a_run_in_the_dashboard_and_never_logs_the_token(
    browser: Any, embedded: dict[str, Any], artifacts: Path
) -> None:
    api: httpx.Client = embedded["api"]
    assert (embedded["home"] / "sedmon.db").is_file()
    project = f"local-{secrets.token_hex(3)}"
    r = api.post("/api/v1/tokens", json={"project": project, "scope": "read"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    body = {
        "project": project,
        "name": "on-sqlite",
        "sketch": {"method": "external", "dim": 48, "seed": 0},
        "groups": ["attn", "mlp"],
        "windows": [5],
    }
    r = api.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    trajectory = Trajectory(N, seed=11)
    for i in range(N):
        r = api.post(
            f"/api/v1/runs/{run_id}/checkpoints",
            json={
                "step": trajectory.step(i),
                "sketch": trajectory.sketch(i),
                "metrics": {"val_loss": trajectory.val_loss(i)},
            },
        )
        assert r.status_code == 201, r.text

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), embedded["base"])
    tab.login(token)
    assert tab.page.locator("#runs-body th a").all_inner_texts() == ["on-sqlite"]
    tab.open(f"/dashboard/runs/{run_id}")
    tab.page.wait_for_selector("#lag-sweep table")
    assert tab.series_lengths("ratios-chart")[1] == N - 5
    tab.shoot(artifacts, "run-on-sqlite")
    tab.open(f"/dashboard/compare?runs={run_id}")
    assert tab.series_lengths("compare-chart") == [N - 5, N - 5]
    context.close()
    assert tab.problems == []
    assert not [u for u in tab.urls if token in u]

    embedded["proc"].terminate()
    embedded["proc"].wait(timeout=15)
    logged = embedded["log"].read_text()
    # The request log is on (so a token in a URL or a header dump would show up here) ...
    assert f"GET /dashboard/runs/{run_id} HTTP/1.1" in logged
    assert "POST /dashboard/login HTTP/1.1" in logged
    # ... and the token is nowhere in it.
    assert token not in logged
    assert ADMIN not in logged
