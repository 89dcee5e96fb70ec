"""`make run` / `make demo`: sedmon watching two real training runs on this machine.

    python -m demo.live            # train, then keep serving the dashboard until Ctrl-C
    python -m demo.live --once     # train, print one JSON summary line last, stop

Starts `sedmon-server serve` on the embedded SQLite default (SEDMON_HOME=.sedmon/demo),
creates a project token, starts a local webhook receiver that prints each alert as a chat
message would read, registers it (format generic), and trains the two demo jobs side by
side with the sedmon client: a character transformer whose corpus switches at a known
step (a distribution shift), and modular-arithmetic grokking. Prints the dashboard address,
one line per checkpoint with the edge, and alerts as they arrive.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from sedmon_server.alerts.signing import verify

PROJECT = "demo"
WEBHOOK_SECRET = "sedmon-demo-webhook"
HOME = Path(".sedmon/demo")
WINDOW = 10


@dataclass(frozen=True)
class Plan:
    """Steps of the two jobs. `full`: the demo (~3-5 min on 2 cores); `quick`: for tests."""

    char_steps: int
    char_every: int
    shift_step: int
    grok_steps: int
    grok_every: int


FULL = Plan(char_steps=1000, char_every=10, shift_step=600, grok_steps=2000, grok_every=20)
QUICK = Plan(char_steps=60, char_every=5, shift_step=40, grok_steps=120, grok_every=10)


# ------------------------------------------------------------------ output


_print_lock = threading.Lock()


def say(line: str) -> None:
    """One line to the terminal, whole, from any thread."""
    with _print_lock:
        print(line, flush=True)


# ------------------------------------------------------------------ webhook receiver


@dataclass
class Inbox:
    """Alerts received by the webhook receiver, in arrival order."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, alert: dict[str, Any]) -> None:
        with self.lock:
            self.alerts.append(alert)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.alerts)


def chat_message(alert: dict[str, Any]) -> str:
    """An alert of the generic (Alertmanager) format as a chat message reads."""
    labels = alert.get("labels", {})
    notes = alert.get("annotations", {})
    status = alert.get("status", "firing")
    icon = "RESOLVED" if status == "resolved" else "ALERT"
    text = notes.get("summary") or labels.get("alertname", "alert")
    link = alert.get("generatorURL", "")
    return f"  [{icon}] sedmon #{labels.get('project', '?')}: {text}  <{link}>"


def start_receiver(inbox: Inbox) -> tuple[ThreadingHTTPServer, str]:
    """A webhook receiver on 127.0.0.1 (a free port); returns the server and its URL.

    It answers 204 to a message signed with WEBHOOK_SECRET, keeps its alerts in `inbox` and
    prints each as a chat line; a message with a bad or stale signature gets 401.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            # Standard Webhooks: signature over id.timestamp.body, timestamp within 5 min.
            signed = verify(WEBHOOK_SECRET, headers, body, time.time())
            self.send_response(204 if signed else 401)
            self.end_headers()
            if not signed:
                say("  (webhook receiver: a message with a bad signature was refused)")
                return
            try:
                doc = json.loads(body)
            except ValueError:
                return
            for alert in doc.get("alerts", []):
                inbox.add(alert)
                say(chat_message(alert))

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


# ------------------------------------------------------------------ server


def free_port(preferred: int) -> int:
    """`preferred` when it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def server_command() -> list[str]:
    """How to start the server CLI: the console script beside this Python, else on PATH."""
    local = Path(sys.executable).parent / "sedmon-server"
    if local.exists():
        return [str(local)]
    found = shutil.which("sedmon-server")
    if found is None:
        raise RuntimeError("sedmon-server is not installed: run `make install`")
    return [found]


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`sedmon-server serve` on 127.0.0.1:port; waits until /readyz answers (60 s)."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [*server_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sedmon-server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"sedmon-server did not become ready in 60 s; see {log}")


def create_token(scope: str, env: dict[str, str]) -> str:
    """`sedmon-server token create --project demo --scope S` -> the token it prints."""
    done = subprocess.run(
        [*server_command(), "token", "create", "--project", PROJECT, "--scope", scope],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


def register_receiver(api: httpx.Client, hook_url: str) -> int:
    """Registers the receiver as the demo project's only webhook (format generic, signed);
    returns its id. Receivers of earlier demos on this SEDMON_HOME are gone with their
    process, so their registrations are removed first (the dispatcher would retry them)."""
    listed = api.get("/api/v1/webhooks", params={"project": PROJECT})
    listed.raise_for_status()
    for hook in listed.json()["webhooks"]:
        api.delete(f"/api/v1/webhooks/{hook['id']}").raise_for_status()
    resp = api.post(
        "/api/v1/webhooks",
        json={"project": PROJECT, "url": hook_url, "format": "generic", "secret": WEBHOOK_SECRET},
    )
    resp.raise_for_status()
    return int(resp.json()["id"])


# ------------------------------------------------------------------ jobs


class Watched:
    """A sedmon run that also remembers each step's metrics (for the checkpoint lines)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.metrics: dict[int, dict[str, float]] = {}

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        if step is not None:
            self.metrics[step] = dict(values)
        self.run.log(values, step=step)

    def checkpoint(self, step: int) -> None:
        self.run.checkpoint(step)


def _describe(label: str, point: dict[str, Any], metrics: dict[str, float]) -> str:
    extra = ""
    if "test_accuracy" in metrics:
        extra = (
            f"  train acc {metrics['train_accuracy']:.2f}  test acc {metrics['test_accuracy']:.2f}"
        )
    elif "val_loss" in metrics:
        extra = f"  val loss {metrics['val_loss']:.3f}"
    return (
        f"[{label:5s}] step {point['step']:5d}  k* = {point['signal_rank']}  "
        f"gap ratio {point['gap_ratio']:.2f}  eff. rank {point['effective_rank']:.1f}{extra}"
    )


def follow(
    api: httpx.Client, label: str, watched: Watched, stop: threading.Event
) -> Callable[[], None]:
    """A loop (run it in a thread) printing each new W = 10 spectrum point of a run."""

    def loop() -> None:
        seen = -1
        while True:
            final = stop.is_set()
            run_id = watched.run.id
            if run_id is not None:
                try:
                    resp = api.get(f"/api/v1/runs/{run_id}/spectrum", params={"window": WINDOW})
                    points = resp.json().get("points", []) if resp.status_code == 200 else []
                except (httpx.HTTPError, ValueError):
                    points = []
                for p in points:
                    if p["step"] > seen:
                        seen = p["step"]
                        say(_describe(label, p, watched.metrics.get(seen, {})))
            if final:
                return
            stop.wait(1.0)

    return loop


# ------------------------------------------------------------------ summary


def wait_for_deliveries(api: httpx.Client, webhook_id: int, timeout_s: float = 30.0) -> int:
    """Waits until no message to the webhook is pending (delivered, or given up on by the
    dispatcher); returns how many are still pending when it stops (0 unless timed out)."""
    deadline = time.monotonic() + timeout_s
    pending = -1
    while time.monotonic() < deadline:
        try:
            resp = api.get(
                f"/api/v1/webhooks/{webhook_id}/deliveries", params={"status": "pending"}
            )
            if resp.status_code == 200:
                pending = len(resp.json()["deliveries"])
                if pending == 0:
                    return 0
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    return pending


def _get(api: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    try:
        resp = api.get(path, params=params)
    except httpx.HTTPError:
        return {}
    return dict(resp.json()) if resp.status_code == 200 else {}


def summarise(
    api: httpx.Client,
    runs: dict[str, tuple[Any, Any]],
    plan: Plan,
    inbox: Inbox,
    url: str,
) -> dict[str, Any]:
    """The --once JSON: runs, true vs detected shift, collapse, test-accuracy step, alerts."""
    from demo.jobs import JobResult

    out_runs = []
    alerts: list[dict[str, Any]] = []
    detected: int | None = None
    change: int | None = None
    collapse: dict[str, int | None] = {}
    test95: int | None = None
    for label, (run, result) in runs.items():
        assert isinstance(result, JobResult)
        run_id = run.id
        out_runs.append(
            {
                "name": run.name,
                "id": run_id,
                "job": result.job,
                "parameters": result.parameters,
                "steps": result.steps,
                "every": result.every,
                "checkpoints": len(result.records),
                "train_seconds": round(result.seconds, 1),
                "url": f"{url}/runs/{run_id}",
            }
        )
        if run_id is None:
            continue
        for a in _get(api, f"/api/v1/runs/{run_id}/alerts").get("alerts", []):
            alerts.append(
                {
                    "run": run.name,
                    "rule": a.get("rule"),
                    "step": a.get("step"),
                    "state": a.get("state"),
                    "summary": a.get("summary"),
                }
            )
            details = a.get("details") or {}
            if a.get("rule") == "distribution_shift" and label == "char" and detected is None:
                detected = details.get("detected_step", a.get("step"))
                change = details.get("change_step", a.get("step"))
        phases = _get(
            api, f"/api/v1/runs/{run_id}/analysis/phases", window=WINDOW, method="threshold"
        )
        result_doc = phases.get("result", phases)
        collapse[label] = result_doc.get("collapse_step") if result_doc else None
        if result.job == "grok":
            test95 = result.first_step_at_or_above("test_accuracy", 0.95)
    return {
        "runs": out_runs,
        "shift": {
            "true_step": plan.shift_step,
            "detected_step": detected,
            "change_step": change,
            "delay_steps": None if detected is None else detected - plan.shift_step,
        },
        "collapse_step": collapse,
        "test_accuracy_95_step": test95,
        "alerts": alerts,
        "webhook_messages": len(inbox.snapshot()),
        "dashboard": f"{url}/dashboard",
    }


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.live", description=__doc__)
    parser.add_argument("--once", action="store_true", help="run to completion, print JSON")
    parser.add_argument("--quick", action="store_true", help="a few steps only (tests)")
    parser.add_argument("--port", type=int, default=8000, help="server port (else a free one)")
    parser.add_argument("--home", type=Path, default=HOME, help="SEDMON_HOME for the server")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    # The client's own per-checkpoint INFO lines would repeat ours: warnings only.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import sedmon
    from demo.jobs import build_char_model, build_grok_model, char_job, grok_job

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port(args.port)
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SEDMON_HOME": str(home),
        "SEDMON_PUBLIC_BASE_URL": url,
        "SEDMON_ALERTS_POLL_S": "0.5",
    }
    env.pop("SEDMON_DATABASE_URL", None)
    say(f"starting sedmon-server on {url} (SQLite under {home}) ...")
    server = start_server(port, env, home / "server.log")
    inbox = Inbox()
    receiver, hook_url = start_receiver(inbox)
    try:
        token = create_token("admin", env)
        read_token = create_token("read", env)
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        webhook_id = register_receiver(api, hook_url)
        say(f"webhook receiver on {hook_url} (registered, format generic)")
        say(f"dashboard: {url}/dashboard  (sign in with the read token {read_token})")

        stamp = time.strftime("%H%M%S")
        char_model = build_char_model(args.seed)
        grok_model = build_grok_model(args.seed)

        def start(name: str, model: Any, every: int, config: dict[str, Any]) -> Any:
            return sedmon.init(
                project=PROJECT,
                name=f"{name}-{stamp}",
                model=model,
                server=url,
                token=token,
                every=every,
                groups="layers",
                windows=[10, 20, 30],
                config=config,
                spool_dir=home / "spool",
            )

        char_run = start(
            "char-shift", char_model, plan.char_every, {"job": "char", "shift": plan.shift_step}
        )
        grok_run = start("grok-add97", grok_model, plan.grok_every, {"job": "grok"})
        watched = {"char": Watched(char_run), "grok": Watched(grok_run)}
        say(
            f"training: {char_run.name} ({plan.char_steps} steps, corpus switch at "
            f"{plan.shift_step}) and {grok_run.name} ({plan.grok_steps} steps), side by side"
        )
        say(
            f"a line per checkpoint with the edge at W = {WINDOW}, from the first full window"
            f" ({WINDOW + 1} checkpoints) on"
        )
        stop = threading.Event()
        followers = [
            threading.Thread(target=follow(api, label, w, stop), daemon=True)
            for label, w in watched.items()
        ]
        for t in followers:
            t.start()
        results: dict[str, Any] = {}

        def train(label: str) -> None:
            if label == "char":
                results[label] = char_job(
                    watched[label],
                    args.seed,
                    plan.char_steps,
                    plan.char_every,
                    plan.shift_step,
                    model=char_model,
                )
            else:
                results[label] = grok_job(
                    watched[label], args.seed, plan.grok_steps, plan.grok_every, model=grok_model
                )

        workers = [threading.Thread(target=train, args=(label,)) for label in watched]
        started = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        for run in (char_run, grok_run):
            run.finish(timeout=60)
        stop.set()
        for t in followers:
            t.join(timeout=15)
        # Ingest queued every alert with its checkpoint: let the dispatcher deliver them.
        undelivered = wait_for_deliveries(api, webhook_id)
        if undelivered:
            say(f"  ({undelivered} webhook message(s) still pending after 30 s)")
        say(f"training done in {time.perf_counter() - started:.0f} s")
        runs = {"char": (char_run, results["char"]), "grok": (grok_run, results["grok"])}
        summary = summarise(api, runs, plan, inbox, url)
        if not args.once:
            say(f"dashboard: {url}/dashboard  (read token {read_token}); Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                say("stopping")
        else:
            print(json.dumps(summary), flush=True)
    finally:
        receiver.shutdown()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
