"""RFC 3464 delivery status notifications: which recipients failed, for good or for now.

A DSN is `multipart/report; report-type=delivery-status` whose `message/delivery-status`
part holds one block of per-message fields and then one block per recipient:

    Final-Recipient: rfc822; ana@example.org
    Original-Recipient: rfc822; ana@example.org
    Action: failed
    Status: 5.1.1
    Diagnostic-Code: smtp; 550 5.1.1 <ana@example.org>: Recipient address rejected

Some servers put that part in a `multipart/mixed` instead; it is looked for wherever it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from mailer.feedback.mime import (
    field_blocks,
    header_text,
    message_id,
    normal_address,
    returned_headers,
    walk,
)
from mailer.models import FeedbackKind

_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})")
_MAX_DIAGNOSTIC = 500


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What a DSN says, reduced to what the bounce policy needs."""

    kind: FeedbackKind
    """HARD_BOUNCE, SOFT_BOUNCE, or OTHER for a report of success (delivered, relayed)."""
    recipients: tuple[str, ...]
    status: str | None
    diagnostic: str | None
    message_id: str | None
    """The returned message's Message-ID (message/rfc822 or text/rfc822-headers part)."""


@dataclass(frozen=True, slots=True)
class _Recipient:
    address: str
    kind: FeedbackKind
    status: str | None
    diagnostic: str | None


def read_dsn(message: Message, status_part: Message | None = None) -> DeliveryReport | None:
    """The report, or None when `message` holds no readable delivery-status part (then the
    heuristic detectors get their turn). `status_part`: that part, when the caller has
    already walked the tree for it."""
    if status_part is None:
        status_part = next(
            (p for p in walk(message) if p.get_content_type() == "message/delivery-status"),
            None,
        )
    if status_part is None:
        return None
    blocks = field_blocks(status_part)
    recipients = [r for r in (_recipient(b) for b in blocks[1:]) if r is not None]
    if not recipients:
        return None
    returned = returned_headers(message)
    returned_id = message_id(header_text(returned, "Message-ID")) if returned else None
    for kind in (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE):
        chosen = [r for r in recipients if r.kind is kind]
        if chosen:
            return DeliveryReport(
                kind=kind,
                recipients=tuple(dict.fromkeys(r.address for r in chosen)),
                status=chosen[0].status,
                diagnostic=chosen[0].diagnostic,
                message_id=returned_id,
            )
    return DeliveryReport(
        kind=FeedbackKind.OTHER,
        recipients=tuple(dict.fromkeys(r.address for r in recipients)),
        status=recipients[0].status,
        diagnostic="a report of delivery, not of failure",
        message_id=returned_id,
    )


def _recipient(block: Message) -> _Recipient | None:
    # Original-Recipient is the address we mailed (when the reporting MTA kept it); the
    # Final-Recipient may be where an alias forwarded it.
    address = _typed_address(header_text(block, "Original-Recipient")) or _typed_address(
        header_text(block, "Final-Recipient")
    )
    if not address:
        return None
    action = header_text(block, "Action").strip().lower()
    match = _STATUS.match(header_text(block, "Status"))
    status = ".".join(match.groups()) if match else None
    diagnostic = " ".join(header_text(block, "Diagnostic-Code").split())[:_MAX_DIAGNOSTIC]
    return _Recipient(
        address=address,
        kind=_kind(action, status),
        status=status,
        diagnostic=diagnostic or None,
    )


def _kind(action: str, status: str | None) -> FeedbackKind:
    """failed + 5.x.x (or no status) is for good; delayed, or a 4.x.x (a server that gave
    up retrying a temporary failure), may pass; delivered, relayed, expanded are no
    failure at all.

    5.7.x is the exception: a policy refusal (the receiver blocked the message as spam,
    or our sender's reputation) says nothing about the address, so it counts as soft and
    suppresses only when it repeats (the soft-bounce limit)."""
    status = status or ""
    if action.startswith("delayed") or status.startswith(("4", "5.7.")):
        return FeedbackKind.SOFT_BOUNCE
    if action.startswith("fail") or status.startswith("5"):  # "failure": seen in the wild
        return FeedbackKind.HARD_BOUNCE
    return FeedbackKind.OTHER


def _typed_address(value: str) -> str:
    """`rfc822; ana@example.org` -> `ana@example.org` ('' for other address types)."""
    kind, semicolon, address = value.partition(";")
    if not semicolon:
        address = kind  # some servers leave the type out
    elif kind.strip().lower() not in ("rfc822", "rfc 822"):
        return ""
    return normal_address(address)
