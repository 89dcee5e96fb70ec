"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign and verify.

The signed content is "{webhook-id}.{webhook-timestamp}.{body}"; the signature header is
"v1,<base64 HMAC-SHA256>". A secret of the form "whsec_<base64>" is decoded to its key
bytes, as the specification's libraries do; any other secret is used as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300
"""How old or how far in the future a timestamp may be when verifying (the spec's 5 min)."""


def new_message_id() -> str:
    """A fresh webhook-id: unique per event, kept across every retry of that event."""
    return "msg_" + secrets.token_hex(16)


def secret_key(secret: str) -> bytes:
    """Key bytes of a secret: base64-decoded after "whsec_", else its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str | None, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; the signature only when a secret is set."""
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = signature(secret, message_id, timestamp, body)
    return headers


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when one of the space-separated v1 signatures matches and the timestamp is fresh.

    headers: lower-case names. What a receiver runs; the tests use it against real requests.
    """
    try:
        message_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
