"""`make demo` in miniature: the demo jobs, a few steps each, through the real client and
server (SQLite default, subprocess) and a real webhook receiver; its last line is JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
