"""`make demo` in miniature: the demo jobs, a few steps each, through the real client and
server (SQLite default, subprocess) and a real webhook receiver; its last line is JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from demo.live import (
    PROJECT,
    WEBHOOK_SECRET,
    Inbox,
    create_token,
    free_port,
    register_receiver,
    start_receiver,
    start_server,
    wait_for_deliveries,
)
from sedmon_server.alerts.formats import Notice, body_bytes, generic
from sedmon_server.alerts.signing import new_message_id, signed_headers

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "runs",
    "shift",
    "collapse_step",
    "test_accuracy_95_step",
    "alerts",
    "webhook_messages",
    "dashboard",
}


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    home = tmp_path_factory.mktemp("sedmon-demo")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo.live",
            "--once",
            "--quick",
            "--port",
            "0",
            "--home",
            str(home),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout.strip().splitlines()


def test_the_last_line_is_one_json_summary_with_every_key(demo_output: list[str]) -> None:
    summary = json.loads(demo_output[-1])
    assert set(summary) == SUMMARY_KEYS


def test_the_summary_names_both_runs_with_every_checkpoint(demo_output: list[str]) -> None:
    runs = json.loads(demo_output[-1])["runs"]
    assert [r["job"] for r in runs] == ["char", "grok"]
    assert [r["checkpoints"] for r in runs] == [60 // 5 + 1, 120 // 10 + 1]
    assert all(isinstance(r["id"], int) for r in runs)


def test_the_true_shift_step_is_the_quick_plan_switch(demo_output: list[str]) -> None:
    shift = json.loads(demo_output[-1])["shift"]
    assert shift["true_step"] == 40
    assert set(shift) == {"true_step", "detected_step", "change_step", "delay_steps"}


def test_no_checkpoint_is_rejected_for_non_finite_metrics(demo_output: list[str]) -> None:
    alerts = json.loads(demo_output[-1])["alerts"]
    assert [a for a in alerts if a["rule"] == "non_finite"] == []


def test_a_line_per_checkpoint_shows_the_edge_once_a_window_is_full(
    demo_output: list[str],
) -> None:
    char_lines = [line for line in demo_output if line.startswith("[char ]")]
    # 12 deltas, W = 10: windows end at checkpoints 10, 11, 12 (steps 50, 55, 60).
    assert [int(line.split()[3]) for line in char_lines] == [50, 55, 60]
    assert all("gap ratio" in line for line in char_lines)


def test_the_output_names_the_dashboard_and_the_webhook_receiver(demo_output: list[str]) -> None:
    summary = json.loads(demo_output[-1])
    dashboard = summary["dashboard"]
    assert dashboard.startswith("http://127.0.0.1:") and dashboard.endswith("/dashboard")
    assert any(line.startswith(f"dashboard: {dashboard}") for line in demo_output)
    assert any(line.startswith("webhook receiver on http://127.0.0.1:") for line in demo_output)
    assert all(r["url"].startswith(dashboard.rsplit("/", 1)[0]) for r in summary["runs"])


def test_grokking_lines_show_the_accuracies(demo_output: list[str]) -> None:
    grok_lines = [line for line in demo_output if line.startswith("[grok ]")]
    # 12 deltas every 10 steps, W = 10: windows end at steps 100, 110, 120.
    assert [int(line.split()[3]) for line in grok_lines] == [100, 110, 120]
    assert all("train acc" in line and "test acc" in line for line in grok_lines)


def test_the_summary_reports_collapse_per_run_and_the_accuracy_step(
    demo_output: list[str],
) -> None:
    summary = json.loads(demo_output[-1])
    assert set(summary["collapse_step"]) == {"char", "grok"}
    assert "test_accuracy_95_step" in summary
    assert summary["webhook_messages"] == len(
        [line for line in demo_output if line.startswith("  [ALERT]")]
    ) + len([line for line in demo_output if line.startswith("  [RESOLVED]")])


def _notice(summary: str, status: str = "firing") -> Notice:
    return Notice(
        alert_id=7,
        rule="edge_collapse",
        status=status,
        fingerprint="f" * 32,
        project=PROJECT,
        run_id=3,
        run_name="char-shift",
        window=10,
        group="all",
        step=860,
        summary=summary,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        resolved_at=None,
        url="http://127.0.0.1:8000/runs/3",
    )


def _post_signed(url: str, body: bytes, secret: str, timestamp: int) -> int:
    headers = signed_headers(secret, new_message_id(), timestamp, body)
    headers["Content-Type"] = "application/json"
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


def test_receiver_prints_a_signed_alert_as_a_chat_line(capsys: pytest.CaptureFixture[str]) -> None:
    inbox = Inbox()
    receiver, url = start_receiver(inbox)
    try:
        body = body_bytes(generic([_notice("edge collapsed at step 860")], "http://x"))
        assert _post_signed(url, body, WEBHOOK_SECRET, int(time.time())) == 204
    finally:
        receiver.shutdown()
    assert [a["labels"]["alertname"] for a in inbox.snapshot()] == ["edge_collapse"]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "  [ALERT] sedmon #demo: edge collapsed at step 860  <http://127.0.0.1:8000/runs/3>"
    ]


@pytest.mark.parametrize(
    ("secret", "age_s"), [("not-the-demo-secret", 0), (WEBHOOK_SECRET, 600)], ids=["key", "stale"]
)
def test_receiver_refuses_a_message_with_a_bad_or_stale_signature(
    secret: str, age_s: int, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = Inbox()
    receiver, url = start_receiver(inbox)
    try:
        body = body_bytes(generic([_notice("forged")], "http://x"))
        assert _post_signed(url, body, secret, int(time.time()) - age_s) == 401
    finally:
        receiver.shutdown()
    assert inbox.snapshot() == []
    assert "forged" not in capsys.readouterr().out


def test_an_alert_of_the_demo_server_reaches_the_terminal_as_a_chat_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chain `make run` relies on: ingest -> alert -> outbox -> dispatcher -> receiver."""
    port = free_port(0)
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SEDMON_HOME": str(tmp_path),
        "SEDMON_PUBLIC_BASE_URL": base,
        "SEDMON_ALERTS_POLL_S": "0.5",
    }
    env.pop("SEDMON_DATABASE_URL", None)
    server = start_server(port, env, tmp_path / "server.log")
    inbox = Inbox()
    receiver, hook_url = start_receiver(inbox)
    try:
        token = create_token("admin", env)
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        stale = api.post(
            "/api/v1/webhooks",
            json={"project": PROJECT, "url": "http://127.0.0.1:9/gone", "format": "generic"},
        )
        assert stale.status_code == 201, stale.text
        hook_id = register_receiver(api, hook_url)
        hooks = api.get("/api/v1/webhooks", params={"project": PROJECT}).json()["webhooks"]
        assert [(h["id"], h["url"]) for h in hooks] == [(hook_id, hook_url)]
        run = api.post(
            "/api/v1/runs",
            json={
                "project": PROJECT,
                "name": "nan-run",
                "sketch": {"method": "external", "dim": 4},
            },
        )
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        ok = api.post(
            f"/api/v1/runs/{run_id}/checkpoints", json={"step": 1, "sketch": {"all": [0.0] * 4}}
        )
        assert ok.status_code == 201, ok.text
        bad = api.post(
            f"/api/v1/runs/{run_id}/checkpoints",
            content='{"step": 2, "sketch": {"all": [0.0, NaN, 0.0, 0.0]}}',
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 422
        assert wait_for_deliveries(api, hook_id) == 0
        (alert,) = api.get(f"/api/v1/runs/{run_id}/alerts").json()["alerts"]
        api.close()
    finally:
        receiver.shutdown()
        server.terminate()
        server.wait(timeout=15)
    assert alert["rule"] == "non_finite"
    assert [a["labels"]["alertname"] for a in inbox.snapshot()] == ["non_finite"]
    out = capsys.readouterr().out
    assert f"  [ALERT] sedmon #demo: {alert['summary']}  <{base}/runs/{run_id}>" in out
