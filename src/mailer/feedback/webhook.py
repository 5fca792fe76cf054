"""The generic bounce webhook, for relays that report by HTTP: a small JSON body signed
with a shared secret (MAILER_WEBHOOK_SECRET).

    POST /webhooks/bounce
    X-Mailer-Signature: sha256=<hex HMAC-SHA256 of the raw body under the secret>

    {"type": "bounce", "email": "ana@example.org", "message_id": "<...>", "permanent": true}
    {"type": "complaint", "email": "ana@example.org", "message_id": "<...>"}

`message_id` is optional (it ties the report to the message; without it the last message
sent to the address is taken); `permanent` is required for a bounce (true: hard, false:
soft); `status` (e.g. "5.1.1") and `diagnostic` may be given. The signature covers the
exact bytes received and is compared in constant time; a body sent again is recognised
by its digest and counts once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from mailer.errors import WebhookError
from mailer.feedback.mime import addresses, message_id
from mailer.models import Feedback, FeedbackKind

SIGNATURE_HEADER = "X-Mailer-Signature"
_PREFIX = "sha256="
_MAX_TEXT = 500


def sign(body: bytes, secret: bytes) -> str:
    """The header value a sender puts on `body` (what the tests and a relay's glue do)."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, secret: bytes) -> bool:
    if not header or not header.startswith(_PREFIX):
        return False
    expected = sign(body, secret).encode("ascii")
    return hmac.compare_digest(expected, header.strip().lower().encode("utf-8", "replace"))


def body_key(body: bytes) -> str:
    """How a body sent twice is recognised (the store records it with the outcome)."""
    return "webhook:sha256:" + hashlib.sha256(body).hexdigest()


def generic_feedback(body: bytes) -> Feedback:
    """What a signed body says; WebhookError (authenticated) if it cannot be read."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookError("the body is not JSON", authenticated=True) from exc
    if not isinstance(value, dict):
        raise WebhookError("the body is not a JSON object", authenticated=True)
    kind = _kind(value)
    email = value.get("email")
    found = addresses([email]) if isinstance(email, str) else []
    if len(found) != 1:
        raise WebhookError('"email" must be one address', authenticated=True)
    return Feedback(
        kind=kind,
        recipients=(found[0],),
        verp_token=None,
        message_id=message_id(_optional_text(value, "message_id") or ""),
        status=_optional_text(value, "status"),
        diagnostic=_optional_text(value, "diagnostic"),
        unsubscribe_token=None,
        source="webhook",
    )


def _kind(value: dict[str, Any]) -> FeedbackKind:
    match value.get("type"):
        case "complaint":
            return FeedbackKind.COMPLAINT
        case "bounce":
            permanent = value.get("permanent")
            if not isinstance(permanent, bool):
                raise WebhookError('a bounce needs "permanent": true or false', authenticated=True)
            return FeedbackKind.HARD_BOUNCE if permanent else FeedbackKind.SOFT_BOUNCE
    raise WebhookError('"type" must be "bounce" or "complaint"', authenticated=True)


def _optional_text(value: dict[str, Any], name: str) -> str | None:
    text = value.get(name)
    if text is None:
        return None
    if not isinstance(text, str):
        raise WebhookError(f'"{name}" must be a string', authenticated=True)
    return " ".join(text.split())[:_MAX_TEXT] or None
