"""Standard Webhooks signatures and the four message formats."""

from __future__ import annotations

from datetime import UTC, datetime

from sedmon_server.alerts import formats, signing
from sedmon_server.alerts.formats import Notice


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    sig = signing.signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_rejects_a_changed_body_and_a_stale_timestamp() -> None:
    headers = signing.signed_headers("s3cret-value", "msg_1", 1000, b"{}")
    assert signing.verify("s3cret-value", headers, b"{}", now=1000)
    assert not signing.verify("s3cret-value", headers, b"{ }", now=1000)
    assert not signing.verify("s3cret-value", headers, b"{}", now=1000 + 301)


def test_collapse_summary_reads_like_the_issue() -> None:
    text = formats.summary_text(
        "edge_collapse",
        "gpt2-ft",
        {"k": 2, "key_ratio": 1.1234, "tau": 1.2, "step": 7400},
        window=10,
        group="all",
        metric=("val_loss", 3.41),
    )
    assert text == (
        "run gpt2-ft: spectral edge collapsed at step 7,400 "
        "(sigma2/sigma3 = 1.12 < 1.20, W = 10); val loss 3.41"
    )


def notice(i: int, summary: str = "x") -> Notice:
    return Notice(
        alert_id=i,
        rule="edge_collapse",
        status="firing",
        fingerprint=f"fp{i}",
        project="lab",
        run_id=7,
        run_name="gpt2-ft",
        window=10,
        group="all",
        step=7400,
        summary=summary,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        resolved_at=None,
        url="http://sedmon.example/runs/7",
        details={"gap_ratio": 1.12, "signal_rank": 1},
    )


def test_slack_sections_stay_within_slacks_limits() -> None:
    body = formats.slack([notice(i, "y" * 5000) for i in range(80)])
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert all(len(b["text"]["text"]) <= 3000 for b in sections)
    assert len(body["blocks"]) <= 50
    assert len(body["text"]) <= 3000


def test_discord_keeps_to_ten_embeds_and_2000_characters() -> None:
    body = formats.discord([notice(i, "z" * 300) for i in range(12)])
    assert len(body["embeds"]) == 10
    assert len(body["content"]) <= 2000


def test_teams_message_carries_an_adaptive_card() -> None:
    body = formats.teams([notice(1, "hello")])
    card = body["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert card["content"]["actions"][0]["url"] == "http://sedmon.example/runs/7"


def test_generic_has_alertmanagers_shape_plus_run_fields() -> None:
    body = formats.generic([notice(1, "hello")], "http://sedmon.example")
    assert body["version"] == "4" and body["status"] == "firing"
    alert = body["alerts"][0]
    assert alert["labels"]["alertname"] == "edge_collapse"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["startsAt"] == "2026-01-01T00:00:00Z"
    assert alert["fingerprint"] == "fp1"
    assert (body["run"]["name"], body["step"], body["window"]) == ("gpt2-ft", 7400, 10)
    assert (body["gap_ratio"], body["signal_rank"]) == (1.12, 1)
    assert body["dashboard_url"] == "http://sedmon.example/runs/7"
