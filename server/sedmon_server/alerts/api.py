"""Routes: webhooks (admin), a run's alerts (read) and acknowledging them (ingest), silences
(admin), a project's default alert settings (read / admin). Thin: SQL Core in the handler,
rules and delivery elsewhere. A token of another project gets 404 for ids it cannot see
and 403 for a project it names in a body or query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, delete, insert, select, update

from sedmon_core.schemas import PROJECT_PATTERN, AlertOut, AlertsOut, WebhookCreate, WebhookOut
from sedmon_server.alerts import rules
from sedmon_server.alerts.engine import enqueue
from sedmon_server.alerts.formats import Notice
from sedmon_server.alerts.tables import (
    alert_outbox,
    alert_settings,
    alert_silences,
    alerts,
    webhook_deliveries,
    webhooks,
)
from sedmon_server.api.dependencies import (
    BAD_INPUT,
    BAD_PARAMS,
    ERROR_RESPONSES,
    NOT_FOUND,
    engine_of,
    error,
    visible_run,
)
from sedmon_server.auth import Principal, check_project, require

Read = Annotated[Principal, Depends(require("read"))]
Ingest = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Db = Annotated[Engine, Depends(engine_of)]
RESPONSES: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, **BAD_INPUT}
"""Errors of a route that reads a body (POST, PUT)."""
READ_RESPONSES: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, **BAD_PARAMS}
"""Errors of a route without a body (GET, DELETE): no malformed JSON, no oversized body."""


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# ---------------------------------------------------------------- webhooks

webhooks_router = APIRouter(prefix="/api/v1/webhooks", tags=["alerts"])


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    run_id: int | None
    alert_ids: list[int]
    history: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class TestQueued(BaseModel):
    outbox_id: int
    message_id: str


def _webhook_out(row: Any) -> WebhookOut:
    return WebhookOut(
        id=int(row.id),
        project=row.project,
        url=row.url,
        format=row.format,
        has_secret=bool(row.secret),
        enabled=bool(row.enabled),
        created_at=_aware(row.created_at) or row.created_at,
    )


def _visible_webhook(engine: Engine, webhook_id: int, principal: Principal) -> Any:
    with engine.connect() as conn:
        row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    if row is None or not principal.sees(row.project):
        raise HTTPException(404, f"webhook {webhook_id} not found")
    return row


@webhooks_router.post("", response_model=WebhookOut, status_code=201, responses=RESPONSES)
def create_webhook(body: WebhookCreate, principal: Admin, engine: Db) -> WebhookOut:
    """Register a webhook for a project's alerts. The secret is never returned."""
    check_project(principal, body.project)
    with engine.begin() as conn:
        new_id = conn.execute(
            insert(webhooks)
            .values(
                project=body.project,
                url=body.url,
                format=body.format,
                secret=body.secret,
                enabled=True,
                disabled_reason=None,
                created_at=datetime.now(UTC),
            )
            .returning(webhooks.c.id)
        ).scalar_one()
        row = conn.execute(select(webhooks).where(webhooks.c.id == new_id)).one()
    return _webhook_out(row)


@webhooks_router.get("", response_model=WebhookList, responses=READ_RESPONSES)
def list_webhooks(
    principal: Admin,
    engine: Db,
    project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None,
) -> WebhookList:
    q = select(webhooks).order_by(webhooks.c.id)
    if project is not None:
        check_project(principal, project)
        q = q.where(webhooks.c.project == project)
    elif principal.project is not None:
        q = q.where(webhooks.c.project == principal.project)
    with engine.connect() as conn:
        return WebhookList(webhooks=[_webhook_out(r) for r in conn.execute(q)])


@webhooks_router.delete("/{webhook_id}", status_code=204, responses={**READ_RESPONSES, **NOT_FOUND})
def delete_webhook(webhook_id: int, principal: Admin, engine: Db) -> Response:
    _visible_webhook(engine, webhook_id, principal)
    with engine.begin() as conn:
        conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    return Response(status_code=204)


@webhooks_router.post(
    "/{webhook_id}/test",
    response_model=TestQueued,
    status_code=202,
    responses={**RESPONSES, **NOT_FOUND, 409: error("The webhook is disabled")},
)
def test_webhook(webhook_id: int, request: Request, principal: Admin, engine: Db) -> TestQueued:
    """Queue a test message to this webhook (same path as alerts: outbox, dispatcher)."""
    hook = _visible_webhook(engine, webhook_id, principal)
    if not hook.enabled:
        raise HTTPException(409, f"webhook {webhook_id} is disabled ({hook.disabled_reason})")
    base_url = request.app.state.settings.public_base_url
    now = datetime.now(UTC)
    notice = Notice(
        alert_id=0,
        rule="test",
        status="firing",
        fingerprint="test",
        project=hook.project,
        run_id=0,
        run_name="sedmon-test",
        window=None,
        group=None,
        step=None,
        summary=f"sedmon test message for project {hook.project}: this webhook works",
        started_at=now,
        resolved_at=None,
        url=base_url,
    )
    with engine.begin() as conn:
        ids = enqueue(conn, hook.project, None, [notice], base_url, now.timestamp(), webhook_id)
        message_id = conn.execute(
            select(alert_outbox.c.message_id).where(alert_outbox.c.id == ids[0])
        ).scalar_one()
    service = getattr(request.app.state, "alerts", None)
    if service is not None:
        service._wake()
    return TestQueued(outbox_id=ids[0], message_id=str(message_id))


@webhooks_router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses={**READ_RESPONSES, **NOT_FOUND},
)
def list_deliveries(
    webhook_id: int,
    principal: Admin,
    engine: Db,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed|cancelled)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """Messages to this webhook, newest first, with their status and every attempt."""
    _visible_webhook(engine, webhook_id, principal)
    o, d = alert_outbox, webhook_deliveries
    q = select(o).where(o.c.webhook_id == webhook_id).order_by(o.c.id.desc()).limit(limit)
    if status is not None:
        q = q.where(o.c.status == status)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        history: dict[int, list[DeliveryAttempt]] = {int(r.id): [] for r in rows}
        if rows:
            for a in conn.execute(
                select(d).where(d.c.outbox_id.in_(list(history))).order_by(d.c.id)
            ):
                history[int(a.outbox_id)].append(
                    DeliveryAttempt(
                        attempted_at=_aware(a.attempted_at) or a.attempted_at,
                        status_code=a.status_code,
                        error=a.error,
                        duration_ms=a.duration_ms,
                    )
                )
    return DeliveryList(
        deliveries=[
            DeliveryOut(
                id=int(r.id),
                message_id=r.message_id,
                status=r.status,
                attempts=int(r.attempts),
                last_status_code=r.last_status_code,
                last_error=r.last_error,
                created_at=_aware(r.created_at) or r.created_at,
                next_attempt_at=_aware(r.next_attempt_at) if r.status == "pending" else None,
                delivered_at=_aware(r.delivered_at),
                run_id=r.run_id,
                alert_ids=sorted({int(n["alert_id"]) for n in r.notices if n.get("alert_id")}),
                history=history[int(r.id)],
            )
            for r in rows
        ]
    )


# ---------------------------------------------------------------- alerts

alerts_router = APIRouter(prefix="/api/v1", tags=["alerts"])


def _alert_out(row: Any) -> AlertOut:
    return AlertOut(
        id=int(row.id),
        rule=row.rule,
        state=row.state,
        step=row.step,
        window=row.window,
        group=row.group_name,
        started_at=_aware(row.started_at) or row.started_at,
        resolved_at=_aware(row.resolved_at),
        summary=row.summary,
        details=dict(row.details or {}),
        fingerprint=row.fingerprint,
        acknowledged=row.acknowledged_at is not None,
    )


@alerts_router.get(
    "/runs/{run_id}/alerts", response_model=AlertsOut, responses={**READ_RESPONSES, **NOT_FOUND}
)
def run_alerts(
    run_id: int,
    principal: Read,
    engine: Db,
    state: Annotated[str | None, Query(pattern="^(pending|firing|resolved)$")] = None,
    rule: Annotated[str | None, Query(max_length=32)] = None,
) -> AlertsOut:
    """The run's alerts, oldest first."""
    q = select(alerts).where(alerts.c.run_id == run_id).order_by(alerts.c.id)
    if state is not None:
        q = q.where(alerts.c.state == state)
    if rule is not None:
        q = q.where(alerts.c.rule == rule)
    with engine.connect() as conn:
        visible_run(conn, run_id, principal)
        return AlertsOut(alerts=[_alert_out(r) for r in conn.execute(q)])


@alerts_router.post(
    "/alerts/{alert_id}/ack", response_model=AlertOut, responses={**RESPONSES, **NOT_FOUND}
)
def acknowledge(alert_id: int, principal: Ingest, engine: Db) -> AlertOut:
    """Acknowledge an alert: a firing one is no longer sent again (repeat interval)."""
    with engine.begin() as conn:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        if row is None or not principal.sees(row.project):
            raise HTTPException(404, f"alert {alert_id} not found")
        if row.acknowledged_at is None:
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id)
                .values(acknowledged_at=datetime.now(UTC))
            )
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).one()
    return _alert_out(row)


# ---------------------------------------------------------------- silences


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(pattern=PROJECT_PATTERN)
    run_id: int | None = None
    rule: str | None = None
    until: datetime
    comment: str | None = Field(default=None, max_length=500)


class SilenceOut(BaseModel):
    id: int
    project: str
    run_id: int | None
    rule: str | None
    until: datetime
    comment: str | None
    created_at: datetime
    active: bool


class SilenceList(BaseModel):
    silences: list[SilenceOut]


def _silence_out(row: Any) -> SilenceOut:
    until = _aware(row.until) or row.until
    return SilenceOut(
        id=int(row.id),
        project=row.project,
        run_id=row.run_id,
        rule=row.rule,
        until=until,
        comment=row.comment,
        created_at=_aware(row.created_at) or row.created_at,
        active=until > datetime.now(UTC),
    )


@alerts_router.post("/silences", response_model=SilenceOut, status_code=201, responses=RESPONSES)
def create_silence(body: SilenceCreate, principal: Admin, engine: Db) -> SilenceOut:
    """Mute a rule (or, without `rule`, every rule) of a run (or, without `run_id`, of the
    whole project) until a time (ISO 8601; a time without a zone is UTC)."""
    check_project(principal, body.project)
    if body.rule is not None and body.rule not in rules.RULES:
        raise HTTPException(422, f"rule must be one of {', '.join(rules.RULES)}")
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=UTC)
    with engine.begin() as conn:
        if body.run_id is not None:
            run = visible_run(conn, body.run_id, principal)
            if run["project"] != body.project:
                raise HTTPException(422, f"run {body.run_id} is not in project {body.project!r}")
        new_id = conn.execute(
            insert(alert_silences)
            .values(
                project=body.project,
                run_id=body.run_id,
                rule=body.rule,
                until=until,
                comment=body.comment,
                created_at=datetime.now(UTC),
            )
            .returning(alert_silences.c.id)
        ).scalar_one()
        row = conn.execute(select(alert_silences).where(alert_silences.c.id == new_id)).one()
    return _silence_out(row)


@alerts_router.get("/silences", response_model=SilenceList, responses=READ_RESPONSES)
def list_silences(
    principal: Read,
    engine: Db,
    project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None,
    run_id: int | None = None,
    active: bool | None = None,
) -> SilenceList:
    s = alert_silences
    q = select(s).order_by(s.c.id)
    if project is not None:
        check_project(principal, project)
        q = q.where(s.c.project == project)
    elif principal.project is not None:
        q = q.where(s.c.project == principal.project)
    if run_id is not None:
        q = q.where(s.c.run_id == run_id)
    now = datetime.now(UTC)
    if active is True:
        q = q.where(s.c.until > now)
    elif active is False:
        q = q.where(s.c.until <= now)
    with engine.connect() as conn:
        return SilenceList(silences=[_silence_out(r) for r in conn.execute(q)])


@alerts_router.delete(
    "/silences/{silence_id}", status_code=204, responses={**READ_RESPONSES, **NOT_FOUND}
)
def delete_silence(silence_id: int, principal: Admin, engine: Db) -> Response:
    with engine.begin() as conn:
        row = conn.execute(select(alert_silences).where(alert_silences.c.id == silence_id)).first()
        if row is None or not principal.sees(row.project):
            raise HTTPException(404, f"silence {silence_id} not found")
        conn.execute(delete(alert_silences).where(alert_silences.c.id == silence_id))
    return Response(status_code=204)


# ---------------------------------------------------------------- project settings


class AlertSettingsOut(BaseModel):
    project: str
    overrides: dict[str, Any]
    effective: dict[str, Any]


@alerts_router.get(
    "/projects/{project}/alert-settings",
    response_model=AlertSettingsOut,
    responses=READ_RESPONSES,
)
def get_settings(
    project: Annotated[str, Path(pattern=PROJECT_PATTERN)], principal: Read, engine: Db
) -> AlertSettingsOut:
    """A project's alert defaults: its overrides and the effective settings they give."""
    check_project(principal, project)
    with engine.connect() as conn:
        patch = conn.execute(
            select(alert_settings.c.settings).where(alert_settings.c.project == project)
        ).scalar_one_or_none()
    effective, _ = rules.resolve_settings(patch, None)
    return AlertSettingsOut(
        project=project, overrides=patch or {}, effective=rules.settings_as_dict(effective)
    )


@alerts_router.put(
    "/projects/{project}/alert-settings", response_model=AlertSettingsOut, responses=RESPONSES
)
def put_settings(
    project: Annotated[str, Path(pattern=PROJECT_PATTERN)],
    body: dict[str, Any],
    principal: Admin,
    engine: Db,
) -> AlertSettingsOut:
    """Replace a project's alert defaults (a patch over the built-ins; 422 on unknown keys)."""
    check_project(principal, project)
    try:
        effective = rules.merge_settings(rules.AlertSettings(), body)
    except rules.SettingsError as exc:
        raise HTTPException(422, str(exc)) from exc
    now = datetime.now(UTC)
    with engine.begin() as conn:
        done = conn.execute(
            update(alert_settings)
            .where(alert_settings.c.project == project)
            .values(settings=body, updated_at=now)
        ).rowcount
        if not done:
            conn.execute(
                insert(alert_settings).values(project=project, settings=body, updated_at=now)
            )
    return AlertSettingsOut(
        project=project, overrides=body, effective=rules.settings_as_dict(effective)
    )


routers = (webhooks_router, alerts_router)
