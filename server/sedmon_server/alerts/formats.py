"""What a person reads: one-line summaries, and the body of one message per webhook format.

Alerts raised by one ingest (or one sweep) travel together as one message. Formats:
- slack: `text` (notification fallback) + `blocks`, each section under Slack's 3,000
  characters and at most 50 blocks;
- discord: `content` (<= 2,000 chars) + `embeds` (<= 10, title <= 256, description <=
  4,096);
- teams: a Workflows ("When a Teams webhook request is received") message carrying an
  Adaptive Card 1.4;
- generic: Alertmanager's webhook JSON (version 4: status, alerts[] with labels,
  annotations, startsAt, endsAt, generatorURL, fingerprint) plus run, step, window,
  gap_ratio, signal_rank and dashboard_url.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FORMATS: tuple[str, ...] = ("slack", "discord", "teams", "generic")
SLACK_SECTION_CHARS = 3000
SLACK_MAX_BLOCKS = 50
DISCORD_CONTENT_CHARS = 2000
DISCORD_MAX_EMBEDS = 10
DISCORD_TITLE_CHARS = 256
DISCORD_DESCRIPTION_CHARS = 4096
ALERTMANAGER_ZERO_TIME = "0001-01-01T00:00:00Z"

_COLOURS = {"firing": 0xD93F0B, "resolved": 0x2EA44F}


@dataclass(frozen=True)
class Notice:
    """One alert in a message. status: "firing" or "resolved"; repeat: sent again while firing."""

    alert_id: int
    rule: str
    status: str
    fingerprint: str
    project: str
    run_id: int
    run_name: str
    window: int | None
    group: str | None
    step: int | None
    summary: str
    started_at: datetime
    resolved_at: datetime | None
    url: str
    details: Mapping[str, Any] = field(default_factory=dict)
    repeat: bool = False


# ---------------------------------------------------------------- summaries


def _num(x: Any, digits: int = 2) -> str:
    return f"{float(x):.{digits}f}" if isinstance(x, int | float) else "?"


def _step(x: Any) -> str:
    return f"{int(x):,}" if isinstance(x, int | float) else "?"


def _where(window: int | None, group: str | None) -> str:
    parts = [f"W = {window}"] if window is not None else []
    if group and group != "all":
        parts.append(f"group {group}")
    return ", ".join(parts)


def _metric_tail(metric: tuple[str, float] | None) -> str:
    if metric is None:
        return ""
    name = metric[0].replace("/", " ").replace("_", " ")
    return f"; {name} {metric[1]:.3g}"


def summary_text(
    rule: str,
    run_name: str,
    facts: Mapping[str, Any],
    window: int | None = None,
    group: str | None = None,
    metric: tuple[str, float] | None = None,
) -> str:
    """The one line a person reads, e.g. "run gpt2-ft: spectral edge collapsed at step 7,400
    (sigma2/sigma3 = 1.12 < 1.20, W = 10); val loss 3.41"."""
    where = _where(window, group)
    tail = _metric_tail(metric)
    head = f"run {run_name}: "
    if rule == "edge_collapse":
        k = int(facts.get("k", 1))
        return (
            f"{head}spectral edge collapsed at step {_step(facts.get('step'))} "
            f"(sigma{k}/sigma{k + 1} = {_num(facts.get('key_ratio'))} < {_num(facts.get('tau'))}, "
            f"{where}){tail}"
        )
    if rule == "distribution_shift":
        series = ", ".join(str(s).replace("_", " ") for s in facts.get("series", []))
        delay = facts.get("delay_checkpoints")
        delay_txt = (
            f", detected {delay} checkpoint{'s' if delay != 1 else ''} later" if delay else ""
        )
        return (
            f"{head}distribution shift at step {_step(facts.get('change_step'))} "
            f"({series}{delay_txt}; gap ratio {_num(facts.get('gap_ratio'))}, "
            f"signal rank {facts.get('signal_rank', '?')}, {where}){tail}"
        )
    if rule == "rank_change":
        return (
            f"{head}signal rank changed {facts.get('from_rank', '?')} -> "
            f"{facts.get('to_rank', '?')} "
            f"at step {_step(facts.get('change_step'))} (held {facts.get('held', '?')} windows, "
            f"gap ratio {_num(facts.get('gap_ratio'))}, {where}){tail}"
        )
    if rule == "non_finite":
        what = facts.get("what") or "non-finite values"
        return f"{head}{what} at step {_step(facts.get('step'))}; checkpoint rejected"
    if rule == "stalled":
        usual = facts.get("usual_s")
        usual_txt = f", usual interval {_duration(usual)}" if isinstance(usual, int | float) else ""
        return (
            f"{head}no checkpoint for {_duration(facts.get('silent_s'))} "
            f"(last step {_step(facts.get('last_step'))}{usual_txt})"
        )
    return f"{head}{rule}"


def resolved_text(rule: str, run_name: str, facts: Mapping[str, Any]) -> str:
    head = f"run {run_name}: "
    if rule == "edge_collapse":
        return f"{head}spectral edge re-established (step {_step(facts.get('step'))})"
    if rule == "stalled":
        return f"{head}checkpoints resumed (step {_step(facts.get('step'))})"
    if rule == "non_finite":
        return f"{head}finite checkpoint accepted again (step {_step(facts.get('step'))})"
    return f"{head}{rule.replace('_', ' ')} resolved"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(n: Notice) -> str:
    prefix = "[RESOLVED] " if n.status == "resolved" else ("[STILL FIRING] " if n.repeat else "")
    return prefix + n.summary


def _title(notices: Sequence[Notice]) -> str:
    firing = sum(1 for n in notices if n.status == "firing")
    resolved = len(notices) - firing
    parts = []
    if firing:
        parts.append(f"{firing} firing")
    if resolved:
        parts.append(f"{resolved} resolved")
    runs = sorted({n.run_name for n in notices})
    return f"sedmon: {', '.join(parts)} ({', '.join(runs)})"


# ---------------------------------------------------------------- bodies


def render(fmt: str, notices: Sequence[Notice], base_url: str) -> dict[str, Any]:
    """JSON body of one message carrying `notices` in webhook format `fmt`."""
    if not notices:
        raise ValueError("a message needs at least one alert")
    if fmt == "slack":
        return slack(notices)
    if fmt == "discord":
        return discord(notices)
    if fmt == "teams":
        return teams(notices)
    if fmt == "generic":
        return generic(notices, base_url)
    raise ValueError(f"unknown webhook format {fmt!r}")


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def slack(notices: Sequence[Notice]) -> dict[str, Any]:
    text = _clip("\n".join(_line(n) for n in notices), SLACK_SECTION_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(_title(notices), 150)}}
    ]
    room = SLACK_MAX_BLOCKS - 2
    for n in notices[:room]:
        mark = ":white_check_mark:" if n.status == "resolved" else ":rotating_light:"
        body = f"{mark} {_line(n)}\n<{n.url}|Open run {n.run_name}>"
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(body, SLACK_SECTION_CHARS)},
            }
        )
    if len(notices) > room:
        more = f"and {len(notices) - room} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return {"text": text, "blocks": blocks}


def discord(notices: Sequence[Notice]) -> dict[str, Any]:
    embeds = []
    for n in notices[:DISCORD_MAX_EMBEDS]:
        embed_fields = [{"name": "rule", "value": n.rule, "inline": True}]
        if n.step is not None:
            embed_fields.append({"name": "step", "value": f"{n.step:,}", "inline": True})
        if n.window is not None:
            embed_fields.append({"name": "window", "value": str(n.window), "inline": True})
        embeds.append(
            {
                "title": _clip(f"{n.status}: {n.rule} on {n.run_name}", DISCORD_TITLE_CHARS),
                "description": _clip(_line(n), DISCORD_DESCRIPTION_CHARS),
                "url": n.url,
                "color": _COLOURS.get(n.status, 0),
                "timestamp": (n.resolved_at or n.started_at).isoformat(),
                "fields": embed_fields,
            }
        )
    content = "\n".join(_line(n) for n in notices)
    if len(notices) > DISCORD_MAX_EMBEDS:
        content += f"\n(and {len(notices) - DISCORD_MAX_EMBEDS} more)"
    return {"content": _clip(content, DISCORD_CONTENT_CHARS), "embeds": embeds}


def teams(notices: Sequence[Notice]) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _title(notices),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        }
    ]
    for n in notices:
        colour = "Good" if n.status == "resolved" else "Attention"
        body.append({"type": "TextBlock", "text": _line(n), "wrap": True, "color": colour})
    actions = []
    for url, name in sorted({(n.url, n.run_name) for n in notices})[:5]:
        actions.append({"type": "Action.OpenUrl", "title": f"Open run {name}", "url": url})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _iso(at: datetime | None) -> str:
    return at.isoformat().replace("+00:00", "Z") if at is not None else ALERTMANAGER_ZERO_TIME


def generic(notices: Sequence[Notice], base_url: str) -> dict[str, Any]:
    alerts = []
    for n in notices:
        labels = {
            "alertname": n.rule,
            "project": n.project,
            "run": n.run_name,
            "run_id": str(n.run_id),
        }
        if n.window is not None:
            labels["window"] = str(n.window)
        if n.group is not None:
            labels["group"] = n.group
        alerts.append(
            {
                "status": n.status,
                "labels": labels,
                "annotations": {"summary": n.summary, "description": _line(n)},
                "startsAt": _iso(n.started_at),
                "endsAt": _iso(n.resolved_at) if n.status == "resolved" else ALERTMANAGER_ZERO_TIME,
                "generatorURL": n.url,
                "fingerprint": n.fingerprint,
                "alert_id": n.alert_id,
                "step": n.step,
                "repeat": n.repeat,
                "details": dict(n.details),
            }
        )
    first = notices[0]
    common = {"project": first.project} if len({n.project for n in notices}) == 1 else {}
    return {
        "version": "4",
        "groupKey": f"{first.project}/{first.run_id}",
        "truncatedAlerts": 0,
        "status": "firing" if any(n.status == "firing" for n in notices) else "resolved",
        "receiver": "sedmon",
        "groupLabels": common,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": base_url,
        "alerts": alerts,
        "run": {"id": first.run_id, "name": first.run_name, "project": first.project},
        "step": first.step,
        "window": first.window,
        "gap_ratio": first.details.get("gap_ratio"),
        "signal_rank": first.details.get("signal_rank"),
        "dashboard_url": first.url,
    }
