"""The workspace's promises: the two commands, CI, and `make bench` covering every benchmark."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(*targets: str) -> str:
    """The commands `make` would run for the targets (nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "-B", *targets], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_make_bench_runs_every_script_in_bench() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")}
    assert scripts, "bench/ has no scripts"
    ran = set(re.findall(r"bench/(\w+\.py)", _dry_run("bench")))
    assert ran == scripts


def test_make_bench_quick_passes_each_script_its_small_size() -> None:
    for line in _dry_run("bench", "QUICK=1").splitlines():
        if re.search(r"bench/\w+\.py", line):
            assert line.split(".py", 1)[1].strip(), f"no smoke-size option in: {line}"


def test_make_test_installs_starts_postgres_lints_and_runs_the_whole_suite() -> None:
    commands = _dry_run("test")
    order = [
        "pip install",
        "ensure-postgres.sh",
        "ensure-browser.sh",
        "ruff check",
        "ruff format --check",
        "mypy",
        "-m pytest",
    ]
    positions = [commands.find(c) for c in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    assert "torch==2.13.0" in commands


def test_ci_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, re.M)


def test_readme_shows_make_run_and_make_test_at_its_top() -> None:
    top = (ROOT / "README.md").read_text().splitlines()[:15]
    assert any(line.startswith("make run") for line in top)
    assert any(line.startswith("make test") for line in top)


def test_pytest_with_no_tests_fails(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text('"""No tests here."""\n')
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 5, done.stdout
