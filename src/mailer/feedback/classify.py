"""One returned message (raw bytes) -> one `Feedback`: what it says, about whom.

The order, first match wins:

1. Too large (over `max_bytes`, 10 MB by default): OTHER, not parsed at all.
2. Who it was addressed to: `bounces+TOKEN@` (VERP: the envelope recipient the reader
   saw, Delivered-To, X-Original-To, To) names the ledger row; `unsubscribe+TOKEN@`
   (or a token in the Subject of mail to the unsubscribe address) is a mailed unsubscribe.
3. An RFC 3464 DSN: failed 5.x.x -> HARD_BOUNCE; delayed, 4.x.x -> SOFT_BOUNCE.
4. An RFC 5965 abuse report -> COMPLAINT.
5. An RFC 3834 auto-reply or out-of-office notice -> AUTO_REPLY, never a bounce.
6. Mail to the unsubscribe address -> UNSUBSCRIBE (with a token) or OTHER (without).
7. flufl.bounce's detectors (Mailman's; the formats of servers that send no DSN):
   permanent -> HARD_BOUNCE, temporary -> SOFT_BOUNCE.
8. Anything else that came back to a VERP address -> SOFT_BOUNCE: only a mail system
   answers an envelope sender, and counting it soft (suppressed only when it repeats, see
   the policy) keeps a challenge-response robot from removing a reader at once.
9. OTHER: a person's mail, left for a person.

Pure: bytes in, a record out; nothing is looked up and no token is verified here (the
feedback use case does that against the store's keys). It never raises on bad input:
malformed MIME, undecodable headers and a detector's crash all end as OTHER with a reason,
logged. Tokens and addresses are never logged.
"""

from __future__ import annotations

import email
import email.policy
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message

import flufl.bounce

from mailer.feedback.arf import read_arf
from mailer.feedback.autoreply import auto_reply_reason
from mailer.feedback.dsn import read_dsn
from mailer.feedback.mime import (
    MAX_PARTS,
    header_text,
    header_values,
    message_id,
    normal_address,
    returned_headers,
    sender_address,
    walk,
)
from mailer.logs import fields
from mailer.models import Feedback, FeedbackKind

log = logging.getLogger("mailer.feedback")

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
"""A DSN or an abuse report is a few KiB plus the returned message; ours are under
100 KiB. Anything this large is not a report we sent for, and parsing it costs memory."""

PARSE_BYTES = 256 * 1024
"""Only the start of a message is parsed. A report's machine-readable parts come first
and the returned message last (RFC 3464, 5965, 6522), so the start holds all we read;
and the email package's cost grows with the parts (10 MB of tiny parts: 9 s here)."""

MAX_BOUNDARY_LINES = 2000
MAX_MULTIPARTS = 100
"""Lines starting `--`, and `multipart/` types, in the parsed start: a report has a
handful of each. More are a crafted tree (thousands of tiny parts, nesting a thousand
deep), which costs the parser seconds: refused before parsing."""

_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "To")
_SUBJECT_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{20,64})(?![A-Za-z0-9_-])")


@dataclass(frozen=True, slots=True)
class OwnAddresses:
    """Our own mailboxes, as configured (either may be unset)."""

    bounce: str | None = None
    """MAILER_BOUNCE_ADDRESS, e.g. `bounces@lists.example.org` (VERP: `bounces+TOKEN@`)."""
    unsubscribe: str | None = None
    """MAILER_UNSUBSCRIBE_MAILTO, e.g. `unsubscribe@lists.example.org`."""


def classify(
    raw: bytes,
    *,
    own: OwnAddresses,
    source: str,
    envelope_recipient: str | None = None,
    size: int | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Feedback:
    """What `raw` (one whole message as received, or its start) says. `envelope_recipient`:
    the RCPT TO the reader knows (a Maildir's or a pipe's), when it knows one; `size`: the
    whole message's size when the reader read only its start.

    Messages left for a person (OTHER, AUTO_REPLY) are logged here with the reason (and
    the parser's count of MIME defects); the feedback use case logs what acts."""
    size = max(size or 0, len(raw))
    if size > max_bytes:
        log.warning(fields(event="feedback-too-large", source=source, bytes=size))
        return _other(source, f"larger than {max_bytes} bytes: not parsed")
    head = raw[:PARSE_BYTES]
    if (
        head.count(b"\n--") > MAX_BOUNDARY_LINES
        or head.lower().count(b"multipart/") > MAX_MULTIPARTS
    ):
        log.warning(fields(event="feedback-too-many-parts", source=source))
        return _other(source, "a crafted MIME tree (thousands of parts, or deep nesting)")
    try:
        message = email.message_from_bytes(head, policy=email.policy.compat32)
        feedback = _classify(message, own=own, source=source, envelope_recipient=envelope_recipient)
    except Exception as exc:  # hostile input must never stop the mailbox
        # A parser or a detector tripped over a crafted or broken message: it is left for a
        # person, and the next message is read.
        log.warning(fields(event="feedback-unreadable", source=source, error=type(exc).__name__))
        return _other(source, f"could not be read ({type(exc).__name__})")
    if feedback.kind in (FeedbackKind.OTHER, FeedbackKind.AUTO_REPLY) and log.isEnabledFor(
        logging.INFO
    ):
        defects = sum(len(part.defects) for part in walk(message))
        log.info(
            fields(
                event="feedback-left-alone",
                source=source,
                kind=feedback.kind.value,
                reason=feedback.diagnostic,  # our own words: no address, no token
                mime_defects=defects or None,
            )
        )
    return feedback


def _classify(
    message: Message, *, own: OwnAddresses, source: str, envelope_recipient: str | None
) -> Feedback:
    # The raw header values, searched with one pattern per own address: parsing every
    # address list with email.utils costs more than the rest of a DSN's reading.
    addressed = [envelope_recipient or ""]
    for name in _RECIPIENT_HEADERS:
        addressed += header_values(message, name)
    verp_token = tagged_token(addressed, own.bounce)
    mailed_unsubscribe_token = tagged_token(addressed, own.unsubscribe)
    to_unsubscribe = mailed_unsubscribe_token is not None or _addressed_to(
        addressed, own.unsubscribe
    )

    # One walk for what the readers look for (the tree is at most MAX_PARTS + 1 deep here).
    parts: dict[str, Message] = {}
    counted = 0
    for part in walk(message, limit=MAX_PARTS + 1):
        counted += 1
        parts.setdefault(part.get_content_type(), part)
    status_part = parts.get("message/delivery-status")
    report = read_dsn(message, status_part) if status_part is not None else None
    if report is not None:
        return Feedback(
            kind=report.kind,
            recipients=report.recipients,
            verp_token=verp_token,
            message_id=report.message_id,
            status=report.status,
            diagnostic=report.diagnostic,
            unsubscribe_token=None,
            source=source,
        )
    report_part = parts.get("message/feedback-report")
    abuse = read_arf(message, report_part) if report_part is not None else None
    if abuse is not None:
        return Feedback(
            kind=FeedbackKind.COMPLAINT if abuse.is_complaint else FeedbackKind.OTHER,
            recipients=abuse.recipients,
            verp_token=verp_token or tagged_token(abuse.envelope_senders, own.bounce),
            message_id=abuse.message_id,
            status=None,
            diagnostic=f"Feedback-Type: {abuse.feedback_type}",
            unsubscribe_token=abuse.unsubscribe_token,
            source=source,
        )
    reason = auto_reply_reason(message)
    if reason is not None:
        return _other(source, reason, kind=FeedbackKind.AUTO_REPLY)
    if to_unsubscribe:
        token = mailed_unsubscribe_token or _subject_token(message)
        if token is None:
            return _other(source, "mail to the unsubscribe address without a token")
        sender = sender_address(message)
        return Feedback(
            kind=FeedbackKind.UNSUBSCRIBE,
            recipients=(sender,) if sender else (),
            verp_token=None,
            message_id=None,
            status=None,
            diagnostic=None,
            unsubscribe_token=token,
            source=source,
        )
    if counted > MAX_PARTS:
        # The detectors walk every part with several patterns each (a 1 MB tree of tiny
        # parts: 10 s); no server's bounce has more than a handful.
        return _other(source, f"more than {MAX_PARTS} MIME parts: not a bounce we know")
    if not str(message.get("From") or "").strip():
        # flufl.bounce's Yale detector takes the first From address unchecked, and
        # getaddresses gives none for a missing or empty From: the crash would end the
        # scan before the detectors after it. `<>` is what MTAs write for "no sender".
        del message["From"]
        message["From"] = "<>"
    _drop_returned_bodies(message)
    temporary, permanent = flufl.bounce.all_failures(message)
    for kind, found in (
        (FeedbackKind.HARD_BOUNCE, permanent),
        (FeedbackKind.SOFT_BOUNCE, temporary),
    ):
        if found:
            return Feedback(
                kind=kind,
                recipients=tuple(sorted(_plain(found))),
                verp_token=verp_token,
                # Without VERP, what ties it to our mail (a returned message's headers).
                message_id=_returned_message_id(message),
                status=None,
                diagnostic="a non-standard bounce (flufl.bounce)",
                unsubscribe_token=None,
                source=source,
            )
    if verp_token is not None:
        return Feedback(
            kind=FeedbackKind.SOFT_BOUNCE,
            recipients=(),
            verp_token=verp_token,
            message_id=None,
            status=None,
            diagnostic="an unrecognised message to a VERP address",
            unsubscribe_token=None,
            source=source,
        )
    return _other(source, "not a bounce, complaint or unsubscribe")


def tagged_token(values: Sequence[str], base: str | None) -> str | None:
    """TOKEN of the first `local+TOKEN@domain` in `values` (header values, addresses) for
    base `local@domain`; local part and domain compared without case, as servers deliver."""
    if not base or "@" not in base:
        return None
    match = _tagged_pattern(base).search("\n".join(values))
    return match.group(1) if match else None


def _addressed_to(values: Sequence[str], base: str | None) -> bool:
    return bool(base) and _plain_pattern(str(base)).search("\n".join(values)) is not None


@functools.lru_cache(maxsize=16)
def _tagged_pattern(base: str) -> re.Pattern[str]:
    local, _, domain = base.rpartition("@")
    return re.compile(
        rf"(?<![\w.+-]){re.escape(local)}\+([A-Za-z0-9_-]{{8,128}})@{re.escape(domain)}(?![\w.-])",
        re.IGNORECASE,
    )


@functools.lru_cache(maxsize=16)
def _plain_pattern(base: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.+-]){re.escape(base)}(?![\w.-])", re.IGNORECASE)


def _drop_returned_bodies(message: Message) -> None:
    """Empty the bodies of returned messages (message/rfc822 parts; their headers stay).

    flufl.bounce's text detectors read every line of every part some forty times over,
    the returned message included: that is our own invitation (tens of KiB of text and
    HTML), which says nothing about the failure. Without it the detectors take a quarter
    less time on the samples, with the same results (the one sample whose address only
    flufl's DSN detector found in a returned part is a DSN, read before this)."""
    for part in walk(message):
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        for returned in payload if isinstance(payload, list) else ():
            if isinstance(returned, Message):
                returned.set_payload("")


def _returned_message_id(message: Message) -> str | None:
    returned = returned_headers(message)
    return message_id(header_text(returned, "Message-ID")) if returned is not None else None


def _plain(found: frozenset[bytes]) -> set[str]:
    """flufl.bounce's addresses (bare addr-specs, as bytes) in the store's form."""
    return {a for a in (normal_address(b.decode("utf-8", "replace")) for b in found) if a}


def _subject_token(message: Message) -> str | None:
    match = _SUBJECT_TOKEN.search(header_text(message, "Subject"))
    return match.group(1) if match else None


def _other(source: str, reason: str, *, kind: FeedbackKind = FeedbackKind.OTHER) -> Feedback:
    return Feedback(
        kind=kind,
        recipients=(),
        verp_token=None,
        message_id=None,
        status=None,
        diagnostic=reason,
        unsubscribe_token=None,
        source=source,
    )
