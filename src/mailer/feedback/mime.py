"""Defensive reading of returned mail: bounded walks, header text that never raises,
addresses and Message-IDs in the form the store keeps.

Returned mail is written by every broken MTA there is (and by anyone who wants to confuse
us), so nothing here trusts a header to be decodable or a MIME tree to be small.
"""

from __future__ import annotations

import email.header
import re
from collections.abc import Iterator
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

MAX_PARTS = 200
"""Parts looked at per message. A real report has three or four; a crafted tree of
thousands must not cost more than a few."""

_MESSAGE_ID = re.compile(r"([^<>\s@]+@[^<>\s@]+)")


def walk(message: Message, *, limit: int = MAX_PARTS) -> Iterator[Message]:
    """The parts of `message`, breadth first, at most `limit` of them (no recursion, so a
    tree nested thousands deep costs no stack)."""
    queue = [message]
    seen = 0
    while queue and seen < limit:
        part = queue.pop(0)
        seen += 1
        yield part
        payload = part.get_payload()
        if isinstance(payload, list):
            queue.extend(p for p in payload if isinstance(p, Message))


def header_text(message: Message, name: str) -> str:
    """The header's value as text (RFC 2047 words decoded), '' when absent or undecodable."""
    value = message.get(name)
    if value is None:
        return ""
    return decoded(value)


def decoded(value: object) -> str:
    """RFC 2047 words of a header value decoded; anything undecodable kept as it was."""
    text = str(value)
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # bad charset, bad base64
        return text


def header_values(message: Message, name: str) -> list[str]:
    """Every occurrence of the header, as text."""
    return [str(v) for v in message.get_all(name, [])]


def addresses(values: list[str]) -> list[str]:
    """The addr-specs named in header values (`"Ana" <ana@example.org>, bob@...`)."""
    found = []
    for _, address in getaddresses(values):
        clean = normal_address(address)
        if clean:
            found.append(clean)
    return found


def sender_address(message: Message) -> str:
    """The From address ('' when there is none)."""
    return normal_address(parseaddr(str(message.get("From", "")))[1])


def normal_address(address: str) -> str:
    """`<User@Example.COM>` -> `User@example.com`: the domain is case-insensitive, the
    local part is left to the store's own comparison. '' for anything without an @."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        return ""
    return f"{local}@{domain.lower()}"


def message_id(value: str) -> str | None:
    """`<id@host>` as the store keeps it, from a header value with or without brackets."""
    match = _MESSAGE_ID.search(value) if value else None
    return f"<{match.group(1)}>" if match else None


def returned_headers(report: Message) -> Message | None:
    """The headers of the message a report returns: the message/rfc822 part, or the
    text/rfc822-headers part (RFC 6522) parsed as headers."""
    for part in walk(report):
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif content_type == "text/rfc822-headers":
            return HeaderParser().parsestr(payload_text(part), headersonly=True)
    return None


def payload_text(part: Message) -> str:
    """A leaf part's body as text, transfer encoding undone, never raising on bad bytes."""
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return raw.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return raw.decode("latin-1")
    payload = part.get_payload()
    return payload if isinstance(payload, str) else ""


def field_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part: the
    email package parses them into a list of Messages itself; when it did not (an odd
    transfer encoding), the text is split at blank lines and each block parsed."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload_text(part).replace("\r\n", "\n")
    parser = HeaderParser()
    return [parser.parsestr(block) for block in re.split(r"\n\s*\n", text) if block.strip()]
