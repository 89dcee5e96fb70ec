"""The alerts engine: evaluates the rules inside the ingest transaction, writes alerts and outbox.

`AlertEngine` is the server's CheckpointObserver. Per accepted checkpoint it loads the
run's rule states (one SELECT), evaluates each series rule on each watched (window,
group), applies the lifecycle to the fingerprint's open alert, and writes the changes;
the alerts that went out (fired, repeated, resolved) in this transaction become one
message per enabled webhook of the project, in the outbox, in the same transaction. A
batch ingest calls it per checkpoint in one transaction: later checkpoints add their
alerts to the same outbox messages, so one ingest is still one message per webhook.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import set_json_loads as json_loads
from sqlalchemy import Connection, DateTime, delete, insert, or_, select, update

from sedmon_server.alerts import formats, rules
from sedmon_server.alerts.formats import Notice
from sedmon_server.alerts.signing import new_message_id
from sedmon_server.alerts.tables import (
    alert_outbox,
    alert_settings,
    alert_silences,
    alert_state,
    alerts,
    webhooks,
)
from sedmon_server.database import driver_connection

log = logging.getLogger(__name__)

NO_WINDOW = 0
NO_GROUP = ""
_TXN_KEY = "sedmon_alert_outbox"


def fingerprint(project: str, run_id: int, rule: str, window: int | None, group: str | None) -> str:
    """Stable id of what an alert is about: (project, run, rule, window, group)."""
    key = f"{project}\x1f{run_id}\x1f{rule}\x1f{window or ''}\x1f{group or ''}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes (stored as UTC)
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def run_url(base_url: str, run_id: int) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}"


def resolve_run_settings(
    project_patch: Mapping[str, Any] | None, run: Mapping[str, Any]
) -> rules.AlertSettings:
    """Built-in defaults <- `project_patch` <- the run's config["alerts"]."""
    config = run.get("config") or {}
    run_patch = config.get("alerts") if isinstance(config, Mapping) else None
    settings, errors = rules.resolve_settings(
        project_patch, run_patch if isinstance(run_patch, Mapping) else None
    )
    for error in errors:
        log.warning("run %s: alert settings ignored: %s", run.get("id"), error)
    return settings


def silenced_rules(conn: Connection, project: str, run_id: int, now: float) -> set[str | None]:
    """Rules muted for this run now; None in the set mutes every rule."""
    s = alert_silences
    rows = conn.execute(
        select(s.c.rule).where(
            s.c.project == project,
            or_(s.c.run_id.is_(None), s.c.run_id == run_id),
            s.c.until > _utc(now),
        )
    )
    return {row.rule for row in rows}


@dataclass(frozen=True)
class StateWrite:
    """One alert_state row to insert (when `exists` is False) or update."""

    rule: str
    window: int
    group: str
    fingerprint: str
    state: dict[str, Any]
    alert_id: int | None
    due_at: datetime | None
    exists: bool


_TS_COLUMNS = tuple(c.name for c in alerts.c if isinstance(c.type, DateTime))

# PostgreSQL: everything a pass reads, in one statement (four scalar subqueries).
_PG_PASS_READ = """
SELECT
  (SELECT settings FROM alert_settings WHERE project = %(project)s) AS settings,
  (SELECT coalesce(json_agg(rule), '[]'::json) FROM alert_silences
    WHERE project = %(project)s AND (run_id IS NULL OR run_id = %(run_id)s)
      AND until > %(now)s) AS silenced,
  (SELECT coalesce(json_agg(a), '[]'::json) FROM alerts a
    WHERE run_id = %(run_id)s AND state IN ('pending', 'firing')) AS open_alerts,
  (SELECT coalesce(json_agg(json_build_object('rule', rule, 'window', "window",
      'group_name', group_name, 'state', state, 'alert_id', alert_id)), '[]'::json)
    FROM alert_state WHERE run_id = %(run_id)s AND %(with_states)s) AS states
"""

# PostgreSQL: every rule state of a pass in one upsert, the rows as one JSON parameter.
_PG_STATE_UPSERT = """
INSERT INTO alert_state (run_id, rule, "window", group_name, fingerprint, state, alert_id,
                         due_at, updated_at)
SELECT %(run_id)s::bigint, rule, "window", group_name, fingerprint, state, alert_id, due_at,
       %(now)s::timestamptz
FROM json_populate_recordset(NULL::alert_state, %(rows)s::json)
ON CONFLICT (run_id, rule, "window", group_name) DO UPDATE SET
  state = excluded.state, alert_id = excluded.alert_id, due_at = excluded.due_at,
  updated_at = excluded.updated_at
"""


def _alert_from_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An alerts row as json_agg gives it: timestamps back to aware datetimes."""
    out = dict(row)
    for name in _TS_COLUMNS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = datetime.fromisoformat(value)
    return out


def read_pass(
    conn: Connection, run: Mapping[str, Any], now: float, with_states: bool
) -> tuple[
    Mapping[str, Any] | None,
    set[str | None],
    dict[str, dict[str, Any]],
    dict[tuple[str, int, str], dict[str, Any]],
]:
    """(project settings patch, silenced rules, open alerts by fingerprint, rule states by
    (rule, window, group)) of a run: one statement on PostgreSQL, four elsewhere."""
    project, run_id = str(run["project"]), int(run["id"])
    if conn.dialect.name == "postgresql":
        with driver_connection(conn).cursor() as cur:
            json_loads(orjson.loads, cur)
            params = {"project": project, "run_id": run_id, "now": _utc(now)}
            row = cur.execute(_PG_PASS_READ, {**params, "with_states": with_states}).fetchone()
        assert row is not None
        settings, silenced, open_rows, state_rows = row
        open_alerts = {str(a["fingerprint"]): _alert_from_json(a) for a in open_rows}
        states = {(r["rule"], r["window"], r["group_name"]): r for r in state_rows}
        return settings, set(silenced), open_alerts, states
    settings = conn.execute(
        select(alert_settings.c.settings).where(alert_settings.c.project == project)
    ).scalar_one_or_none()
    states = {}
    if with_states:
        rows = conn.execute(select(alert_state).where(alert_state.c.run_id == run_id)).mappings()
        states = {(r["rule"], r["window"], r["group_name"]): dict(r) for r in rows}
    return (
        settings,
        silenced_rules(conn, project, run_id, now),
        open_alerts_of(conn, run_id),
        states,
    )


def write_states(conn: Connection, run_id: int, now: float, writes: Sequence[StateWrite]) -> None:
    """Store a pass's rule states: one upsert on PostgreSQL, a statement per row elsewhere."""
    if not writes:
        return
    if conn.dialect.name == "postgresql":
        rows = [
            {
                "rule": w.rule,
                "window": w.window,
                "group_name": w.group,
                "fingerprint": w.fingerprint,
                "state": w.state,
                "alert_id": w.alert_id,
                "due_at": w.due_at,
            }
            for w in writes
        ]
        params = {"run_id": run_id, "now": _utc(now), "rows": orjson.dumps(rows).decode()}
        driver_connection(conn).execute(_PG_STATE_UPSERT, params)
        return
    for w in writes:
        values = {"state": w.state, "alert_id": w.alert_id, "due_at": w.due_at}
        values["updated_at"] = _utc(now)
        if not w.exists:
            conn.execute(
                insert(alert_state).values(
                    run_id=run_id,
                    rule=w.rule,
                    window=w.window,
                    group_name=w.group,
                    fingerprint=w.fingerprint,
                    **values,
                )
            )
        else:
            conn.execute(
                update(alert_state)
                .where(
                    alert_state.c.run_id == run_id,
                    alert_state.c.rule == w.rule,
                    alert_state.c.window == w.window,
                    alert_state.c.group_name == w.group,
                )
                .values(**values)
            )


@dataclass
class Pass:
    """One evaluation pass over one run (an ingest call, or one run in a sweep)."""

    conn: Connection
    run: Mapping[str, Any]
    now: float
    base_url: str
    settings: rules.AlertSettings
    silenced: set[str | None]
    open_alerts: dict[str, dict[str, Any]]
    notices: list[Notice] = field(default_factory=list)
    transitions: list[tuple[str, str]] = field(default_factory=list)
    states: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    """The run's rule states by (rule, window, group) as read at the start (on ingest)."""
    state_writes: list[StateWrite] = field(default_factory=list)
    """Rule states to store when the pass finishes (one upsert on PostgreSQL)."""

    @property
    def run_id(self) -> int:
        return int(self.run["id"])

    def is_silenced(self, rule: str) -> bool:
        return None in self.silenced or rule in self.silenced

    def send_resolved(self, rule: str) -> bool:
        return bool(getattr(self.settings.rule(rule), "send_resolved", True))


def open_alerts_of(conn: Connection, run_id: int) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        select(alerts).where(alerts.c.run_id == run_id, alerts.c.state.in_(("pending", "firing")))
    ).mappings()
    return {row["fingerprint"]: dict(row) for row in rows}


def _notice(
    p: Pass, row: Mapping[str, Any], status: str, summary: str, repeat: bool = False
) -> Notice:
    started = row["started_at"]
    resolved = row.get("resolved_at")
    return Notice(
        alert_id=int(row["id"]),
        rule=str(row["rule"]),
        status=status,
        fingerprint=str(row["fingerprint"]),
        project=str(p.run["project"]),
        run_id=p.run_id,
        run_name=str(p.run["name"]),
        window=row.get("window"),
        group=row.get("group_name"),
        step=row.get("resolved_step") if status == "resolved" else row.get("step"),
        summary=summary,
        started_at=started if started.tzinfo else started.replace(tzinfo=UTC),
        resolved_at=None
        if resolved is None
        else (resolved if resolved.tzinfo else resolved.replace(tzinfo=UTC)),
        url=run_url(p.base_url, p.run_id),
        details=dict(row.get("details") or {}),
        repeat=repeat,
    )


def _notify(p: Pass, row: dict[str, Any], status: str, summary: str, repeat: bool = False) -> None:
    p.notices.append(_notice(p, row, status, summary, repeat))
    row["last_notified_at"] = _utc(p.now)
    row["notifications"] = int(row.get("notifications") or 0) + 1
    p.conn.execute(
        update(alerts)
        .where(alerts.c.id == row["id"])
        .values(last_notified_at=row["last_notified_at"], notifications=row["notifications"])
    )


FOLDED_KEPT = 20
"""At most this many folded alerts are listed in an alert's details (`also`)."""


def _record_folded(p: Pass, alert_id: int, folded: Sequence[rules.Folded]) -> None:
    """Add folded alerts to the details of their event's alert (`also`), open or resolved."""
    row = next((r for r in p.open_alerts.values() if int(r["id"]) == alert_id), None)
    if row is not None:
        details = dict(row.get("details") or {})
    else:
        found = p.conn.execute(select(alerts.c.details).where(alerts.c.id == alert_id)).first()
        if found is None:
            return
        details = dict(found.details or {})
    details["also"] = [*list(details.get("also") or []), *(f.as_dict() for f in folded)][
        :FOLDED_KEPT
    ]
    if row is not None:
        row["details"] = details
    p.conn.execute(update(alerts).where(alerts.c.id == alert_id).values(details=details))


def apply_outcome(
    p: Pass,
    rule: str,
    window: int | None,
    group: str | None,
    outcome: rules.Outcome,
    step: int,
    metric: tuple[str, float] | None,
) -> int | None:
    """Apply the lifecycle to the fingerprint's open alert; returns the open alert's id after."""
    fp = fingerprint(str(p.run["project"]), p.run_id, rule, window, group)
    current = p.open_alerts.get(fp)
    action = rules.lifecycle(current["state"] if current else None, outcome)
    if action == "none":
        return None
    now = _utc(p.now)
    facts = {**outcome.facts, "step": outcome.step}
    details = {**outcome.facts, "window": window, "group": group}
    if metric is not None:
        details["metric"] = {"name": metric[0], "value": metric[1]}
    summary = formats.summary_text(rule, str(p.run["name"]), facts, window, group, metric)

    if action in ("resolve", "reopen") and current is not None:
        resolved_step = step
        current.update(state="resolved", resolved_at=now, resolved_step=resolved_step)
        done = {**(current.get("details") or {}), "resolved_step": resolved_step}
        p.conn.execute(
            update(alerts)
            .where(alerts.c.id == current["id"])
            .values(state="resolved", resolved_at=now, resolved_step=resolved_step, details=done)
        )
        p.transitions.append((rule, "resolved"))
        p.open_alerts.pop(fp, None)
        notified = current.get("last_notified_at") is not None
        if action == "resolve" and notified and p.send_resolved(rule) and not p.is_silenced(rule):
            text = formats.resolved_text(rule, str(p.run["name"]), {"step": step})
            _notify(p, current, "resolved", text)
        if action == "resolve":
            return None
    if action == "drop" and current is not None:
        p.conn.execute(delete(alerts).where(alerts.c.id == current["id"]))
        p.open_alerts.pop(fp, None)
        return None
    if action in ("open_pending", "open_firing", "reopen"):
        state = "pending" if action == "open_pending" else "firing"
        values = {
            "project": p.run["project"],
            "run_id": p.run_id,
            "rule": rule,
            "window": window,
            "group_name": group,
            "fingerprint": fp,
            "state": state,
            "step": outcome.step,
            "started_at": now,
            "fired_at": now if state == "firing" else None,
            "resolved_at": None,
            "resolved_step": None,
            "summary": summary,
            "details": details,
            "acknowledged_at": None,
            "last_notified_at": None,
            "notifications": 0,
        }
        new_id = p.conn.execute(insert(alerts).values(**values).returning(alerts.c.id)).scalar_one()
        row = {"id": int(new_id), **values}
        p.open_alerts[fp] = row
        p.transitions.append((rule, state))
        if state == "firing" and not p.is_silenced(rule):
            _notify(p, row, "firing", summary)
        return int(new_id)
    assert current is not None
    if action == "fire":
        current.update(
            state="firing", fired_at=now, step=outcome.step, summary=summary, details=details
        )
        p.conn.execute(
            update(alerts)
            .where(alerts.c.id == current["id"])
            .values(
                state="firing", fired_at=now, step=outcome.step, summary=summary, details=details
            )
        )
        p.transitions.append((rule, "firing"))
        if not p.is_silenced(rule):
            _notify(p, current, "firing", summary)
        return int(current["id"])
    # update: refresh what a pending alert shows; a firing one keeps its summary, may repeat
    if current["state"] == "pending":
        current.update(step=outcome.step, summary=summary, details=details)
        p.conn.execute(
            update(alerts)
            .where(alerts.c.id == current["id"])
            .values(step=outcome.step, summary=summary, details=details)
        )
    elif not p.is_silenced(rule) and rules.repeat_due(
        _ts(current.get("last_notified_at")),
        p.now,
        p.settings.repeat_interval_s,
        current.get("acknowledged_at") is not None,
    ):
        # Sent again, or sent for the first time after a silence ended (not a repeat then).
        repeat = current.get("last_notified_at") is not None
        _notify(p, current, "firing", str(current["summary"]), repeat=repeat)
    return int(current["id"])


# ---------------------------------------------------------------- outbox


def enqueue(
    conn: Connection,
    project: str,
    run_id: int | None,
    notices: Sequence[Notice],
    base_url: str,
    now: float,
    only_webhook: int | None = None,
) -> list[int]:
    """Write the notices as one outbox message per enabled webhook of the project (or to
    `only_webhook`).

    Within one transaction, later calls append to the messages the first one wrote (a
    batch ingest is one ingest). Returns the outbox ids written or extended.
    """
    if not notices:
        return []
    txn = conn.get_transaction()
    cache = conn.info.get(_TXN_KEY)
    if cache is None or cache[0] is not txn:
        cache = (txn, {})
        conn.info[_TXN_KEY] = cache
    pending: dict[tuple[int, int | None], int] = cache[1]
    q = select(webhooks.c.id, webhooks.c.format).where(
        webhooks.c.project == project, webhooks.c.enabled.is_(True)
    )
    if only_webhook is not None:
        q = q.where(webhooks.c.id == only_webhook)
    hooks = conn.execute(q).all()
    ids = []
    for hook in hooks:
        key = (int(hook.id), run_id)
        existing = pending.get(key)
        if existing is not None:
            row = conn.execute(
                select(alert_outbox.c.notices).where(
                    alert_outbox.c.id == existing, alert_outbox.c.status == "pending"
                )
            ).first()
            if row is not None:
                merged = [*(notice_from_json(n) for n in row.notices), *notices]
                body = formats.body_bytes(formats.render(hook.format, merged, base_url))
                conn.execute(
                    update(alert_outbox)
                    .where(alert_outbox.c.id == existing)
                    .values(notices=[notice_json(n) for n in merged], body=body)
                )
                ids.append(existing)
                continue
        body = formats.body_bytes(formats.render(hook.format, notices, base_url))
        new_id = conn.execute(
            insert(alert_outbox)
            .values(
                webhook_id=hook.id,
                project=project,
                run_id=run_id,
                message_id=new_message_id(),
                notices=[notice_json(n) for n in notices],
                body=body,
                status="pending",
                attempts=0,
                next_attempt_at=_utc(now),
                created_at=_utc(now),
            )
            .returning(alert_outbox.c.id)
        ).scalar_one()
        pending[key] = int(new_id)
        ids.append(int(new_id))
    return ids


def notice_json(n: Notice) -> dict[str, Any]:
    return {
        "alert_id": n.alert_id,
        "rule": n.rule,
        "status": n.status,
        "fingerprint": n.fingerprint,
        "project": n.project,
        "run_id": n.run_id,
        "run_name": n.run_name,
        "window": n.window,
        "group": n.group,
        "step": n.step,
        "summary": n.summary,
        "started_at": n.started_at.isoformat(),
        "resolved_at": None if n.resolved_at is None else n.resolved_at.isoformat(),
        "url": n.url,
        "details": dict(n.details),
        "repeat": n.repeat,
    }


def notice_from_json(d: Mapping[str, Any]) -> Notice:
    return Notice(
        alert_id=int(d["alert_id"]),
        rule=str(d["rule"]),
        status=str(d["status"]),
        fingerprint=str(d["fingerprint"]),
        project=str(d["project"]),
        run_id=int(d["run_id"]),
        run_name=str(d["run_name"]),
        window=d.get("window"),
        group=d.get("group"),
        step=d.get("step"),
        summary=str(d["summary"]),
        started_at=datetime.fromisoformat(d["started_at"]),
        resolved_at=None
        if d.get("resolved_at") is None
        else datetime.fromisoformat(d["resolved_at"]),
        url=str(d["url"]),
        details=dict(d.get("details") or {}),
        repeat=bool(d.get("repeat")),
    )


# ---------------------------------------------------------------- the observer


class AlertEngine:
    """CheckpointObserver: rules on ingest, outbox in the same transaction.

    base_url: public base URL for links. clock: unix seconds (tests may pass their own).
    wake: called after a message is queued (the dispatcher's event). record: the
    Prometheus hook `(rule, state) -> None` counting transitions.
    """

    def __init__(
        self,
        base_url: str,
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] | None = None,
        record: Callable[[str, str], None] | None = None,
    ) -> None:
        self.base_url = base_url
        self.clock = clock
        self.wake = wake
        self.record = record

    def start_pass(
        self, conn: Connection, run: Mapping[str, Any], with_states: bool = False
    ) -> Pass:
        """Read what a pass needs (with the run's rule states when `with_states`)."""
        now = self.clock()
        patch, silenced, open_alerts, states = read_pass(conn, run, now, with_states)
        return Pass(
            conn=conn,
            run=run,
            now=now,
            base_url=self.base_url,
            settings=resolve_run_settings(patch, run),
            silenced=silenced,
            open_alerts=open_alerts,
            states=states,
        )

    def finish_pass(self, p: Pass) -> None:
        write_states(p.conn, p.run_id, p.now, p.state_writes)
        p.state_writes.clear()
        if self.record is not None:
            for rule, state in p.transitions:
                self.record(rule, state)
        if p.notices:
            enqueue(p.conn, str(p.run["project"]), p.run_id, p.notices, self.base_url, p.now)
            if self.wake is not None:
                self.wake()

    def on_checkpoint(
        self,
        conn: Connection,
        run: Mapping[str, Any],
        step: int,
        spectra: Mapping[tuple[str, int], Any],
        metrics: Mapping[str, float],
    ) -> None:
        p = self.start_pass(conn, run, with_states=True)
        states = p.states
        metric = rules.pick_metric(p.settings, metrics)
        run_level = states.get(("stalled", NO_WINDOW, NO_GROUP))
        cached = (run_level or {}).get("state", {}).get("metric") if run_level else None
        if metric is None and cached:
            metric = (str(cached[0]), float(cached[1]))

        for window in rules.watched_windows(p.settings, run["windows"]):
            for group in p.settings.groups:
                spectrum = spectra.get((group, window))
                if spectrum is None:
                    continue
                obs = rules.Observation.of(step, spectrum)
                evaluated = {
                    rule: rules.evaluate(
                        rule,
                        p.settings,
                        (states.get((rule, window, group)) or {}).get("state", {}),
                        obs,
                    )
                    for rule in rules.SERIES_RULES
                }
                self._series_event(p, states, window, group, step, evaluated, metric)

        # Run-level rules: a checkpoint resolves `non_finite` and `stalled`, and is an arrival.
        for rule in ("non_finite", "stalled"):
            apply_outcome(p, rule, None, None, rules.INACTIVE, step, metric)
        st = rules.record_arrival((run_level or {}).get("state", {}), p.now)
        if metric is not None:
            st["metric"] = [metric[0], metric[1]]
        check = rules.stalled_check(p.settings.stalled, st["arrivals"], p.now)
        due = None if check.threshold_s is None else _utc(p.now + check.threshold_s)
        self._save_state(p, run_level, "stalled", NO_WINDOW, NO_GROUP, st, None, due)
        self.finish_pass(p)

    def on_non_finite(
        self, conn: Connection, run: Mapping[str, Any], step: int, details: Mapping[str, Any]
    ) -> None:
        p = self.start_pass(conn, run)
        if not p.settings.non_finite.enabled:
            return
        groups = list(details.get("groups") or [])
        names = list(details.get("metrics") or [])
        parts = []
        if groups:
            parts.append(f"parameters of group{'s' if len(groups) > 1 else ''} {', '.join(groups)}")
        if names:
            parts.append(f"metric{'s' if len(names) > 1 else ''} {', '.join(names)}")
        what = f"NaN/inf in {' and '.join(parts)}" if parts else "non-finite values"
        facts = {**dict(details), "what": what, "step": step}
        apply_outcome(p, "non_finite", None, None, rules.Outcome("firing", step, facts), step, None)
        self.finish_pass(p)

    def _series_event(
        self,
        p: Pass,
        states: Mapping[tuple[str, int, str], Mapping[str, Any]],
        window: int,
        group: str,
        step: int,
        evaluated: Mapping[str, tuple[dict[str, Any], rules.Outcome]],
        metric: tuple[str, float] | None,
    ) -> None:
        """Apply the series rules' outcomes of one window and group, one event one alert
        (`rules.fold_event`): what is folded is recorded in the event's alert, not raised."""
        project = str(p.run["project"])
        open_states = {}
        for rule in rules.SERIES_RULES:
            row = p.open_alerts.get(fingerprint(project, p.run_id, rule, window, group))
            open_states[rule] = None if row is None else str(row["state"])
        event_before = states.get((rules.EVENT_STATE, window, group))
        event, outcomes, folded = rules.fold_event(
            p.settings,
            window,
            (event_before or {}).get("state", {}),
            {rule: outcome for rule, (_, outcome) in evaluated.items()},
            open_states,
            step,
            p.is_silenced,
        )
        anchor = event.get("anchor")
        for rule in rules.SERIES_RULES:
            alert_id = apply_outcome(p, rule, window, group, outcomes[rule], step, metric)
            before = states.get((rule, window, group))
            self._save_state(p, before, rule, window, group, evaluated[rule][0], alert_id, None)
            if anchor and anchor["n"] == event["n"] and anchor["rule"] == rule:
                anchor["alert_id"] = alert_id
        if folded and anchor and anchor.get("alert_id") is not None:
            _record_folded(p, int(anchor["alert_id"]), folded)
        self._save_state(p, event_before, rules.EVENT_STATE, window, group, event, None, None)

    def _save_state(
        self,
        p: Pass,
        before: Mapping[str, Any] | None,
        rule: str,
        window: int,
        group: str,
        state: dict[str, Any],
        alert_id: int | None,
        due_at: datetime | None,
    ) -> None:
        """Queue the rule state for `finish_pass` to store."""
        fp = fingerprint(str(p.run["project"]), p.run_id, rule, window or None, group or None)
        p.state_writes.append(
            StateWrite(rule, window, group, fp, state, alert_id, due_at, before is not None)
        )


def firing_counts(conn: Connection, run_ids: Iterable[int]) -> dict[int, int]:
    """Firing alerts per run (the runs listing's `firing_alerts`)."""
    from sqlalchemy import func

    ids = list(run_ids)
    if not ids:
        return {}
    rows = conn.execute(
        select(alerts.c.run_id, func.count())
        .where(alerts.c.run_id.in_(ids), alerts.c.state == "firing")
        .group_by(alerts.c.run_id)
    ).all()
    return {int(r[0]): int(r[1]) for r in rows}
