"""The periodic `stalled` sweep: runs whose next checkpoint is overdue.

Ingest records each checkpoint's arrival in the run's `stalled` state row and sets
`due_at` = last arrival + max(multiple x usual interval, floor). The sweep reads only the
rows whose `due_at` has passed (an index range), locks each run like ingest does (on
PostgreSQL `FOR UPDATE SKIP LOCKED`: a run being ingested is not stalled, and several
server processes never sweep the same run at once), and fires `stalled`, or repeats it.
The next checkpoint resolves it (in ingest). The alert of a run that ended (finished or
failed) is closed quietly.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from sedmon_server import tables
from sedmon_server.alerts import rules
from sedmon_server.alerts.engine import NO_GROUP, NO_WINDOW, AlertEngine, apply_outcome, fingerprint
from sedmon_server.alerts.tables import alert_state, alerts

log = logging.getLogger(__name__)

BATCH = 500


def sweep_stalled(engine: Engine, alerting: AlertEngine) -> int:
    """One sweep; returns how many runs it looked at."""
    now = alerting.clock()
    st = alert_state
    with engine.connect() as conn:
        run_ids = [
            int(r.run_id)
            for r in conn.execute(
                select(st.c.run_id)
                .where(st.c.rule == "stalled", st.c.due_at <= datetime.fromtimestamp(now, UTC))
                .order_by(st.c.due_at)
                .limit(BATCH)
            )
        ]
    for run_id in run_ids:
        try:
            _sweep_run(engine, alerting, run_id)
        except Exception:
            log.exception("stalled sweep failed for run %s", run_id)
    return len(run_ids)


def _sweep_run(engine: Engine, alerting: AlertEngine, run_id: int) -> None:
    st = alert_state
    where = (
        st.c.run_id == run_id,
        st.c.rule == "stalled",
        st.c.window == NO_WINDOW,
        st.c.group_name == NO_GROUP,
    )
    with engine.connect().execution_options(immediate=True) as conn, conn.begin():
        q = select(tables.runs).where(tables.runs.c.id == run_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        found = conn.execute(q).mappings().first()
        if found is None:
            return  # being ingested right now (or gone): not stalled
        run = dict(found)
        row = conn.execute(select(st).where(*where)).mappings().first()
        p = alerting.start_pass(conn, run)
        if row is None or row["due_at"] is None:
            return
        due = row["due_at"] if row["due_at"].tzinfo else row["due_at"].replace(tzinfo=UTC)
        if due.timestamp() > p.now:
            return  # a checkpoint arrived since the sweep's query
        fp = fingerprint(str(run["project"]), run_id, "stalled", None, None)
        if run["state"] != "running" or not p.settings.stalled.enabled:
            current = p.open_alerts.get(fp)
            if current is not None:
                conn.execute(
                    update(alerts)
                    .where(alerts.c.id == current["id"])
                    .values(state="resolved", resolved_at=datetime.fromtimestamp(p.now, UTC))
                )
            conn.execute(update(st).where(*where).values(due_at=None))
            return
        arrivals = list((row["state"] or {}).get("arrivals", []))
        check = rules.stalled_check(p.settings.stalled, arrivals, p.now)
        if check.stalled:
            facts = {
                "silent_s": round(check.silent_s, 1),
                "usual_s": None if check.usual_s is None else round(check.usual_s, 1),
                "threshold_s": check.threshold_s,
                "last_step": run["last_step"],
                "last_checkpoint_at": run["last_checkpoint_at"].isoformat()
                if run["last_checkpoint_at"] is not None
                else None,
            }
            outcome = rules.Outcome("firing", run["last_step"], facts)
            apply_outcome(p, "stalled", None, None, outcome, int(run["last_step"] or 0), None)
        else:
            next_due = None
            if check.threshold_s is not None and arrivals:
                next_due = datetime.fromtimestamp(arrivals[-1] + check.threshold_s, UTC)
            conn.execute(update(st).where(*where).values(due_at=next_due))
        alerting.finish_pass(p)
