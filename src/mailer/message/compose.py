"""Rendered parts + headers -> the exact bytes that go on the wire, one invitation each.

    multipart/mixed
    ├── multipart/alternative
    │   ├── text/plain; charset="utf-8"   (quoted-printable)
    │   └── text/html; charset="utf-8"    (quoted-printable)
    └── text/calendar; charset="utf-8"; method=PUBLISH   (base64, invite.ics)

The MIME is assembled by hand rather than with EmailMessage, which costs ~1.6 ms per
message here (and folds a long List-Unsubscribe into an RFC 2047 encoded-word that
receivers must ignore). Everything invariant — boundaries, the base64 .ics, the static
headers — is built once per campaign; per recipient only the personal headers and the two
quoted-printable bodies are made. Every value is checked before it reaches a header
(CVE-2024-6923), every line ends in CRLF and stays far below 998 octets.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import secrets
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import cast

from mailer.errors import UnsafeValueError
from mailer.message.calendar import CONTENT_TYPE as ICS_CONTENT_TYPE
from mailer.message.calendar import build_ics, calendar_links
from mailer.message.event import Event
from mailer.message.headers import mailbox, unstructured
from mailer.message.render import CommonLines, Renderer
from mailer.models import OutgoingMessage, Recipient, RenderedMessage, SenderIdentity
from mailer.safety import ensure_header_safe, find_unsafe

MAX_LINE = 998
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_LINK_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_URL = re.compile(r"https?://[!#-;=?-~]+")  # printable ASCII without space, quote, < and >


def ascii_address(address: str, *, field: str) -> str:
    """`local@domain` with the domain in IDNA (ASCII) form; anything odd is refused."""
    ensure_header_safe(address, field=field, max_length=320)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or not _LOCAL_PART.fullmatch(local):
        # Non-ASCII or quoted local parts would need SMTPUTF8; we do not send those.
        raise UnsafeValueError(f"{field}: {address!r} is not a plain address", field=field)
    if domain.isascii():
        return f"{local}@{domain.lower()}"
    try:
        return f"{local}@{_idna(domain)}"
    except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
        raise UnsafeValueError(f"{field}: bad domain in {address!r}", field=field) from exc


@functools.lru_cache(maxsize=4096)
def _idna(domain: str) -> str:
    # IDNA 2008 with UTS 46 mapping, as email-validator does; ~40 µs, and domains repeat.
    import idna

    return str(idna.encode(domain, uts46=True).decode("ascii"))


def _plain(text: str) -> bool:
    # Printable ASCII that no decoder would mistake for an encoded-word.
    return text.isascii() and text.isprintable() and "=?" not in text


class QuotedPrintable:
    """UTF-8 quoted-printable with CRLF line ends, remembering what it has encoded.

    QP is line-local, and most lines of an invitation are the same for every recipient,
    so a line is encoded once per campaign: binascii.b2a_qp on the example's whole 7 KB
    HTML costs ~60 µs. Even splitting it into its 76 lines and looking them up costs
    ~13 µs, so the lines a message has in common with the others are taken as a whole
    (render.CommonLines): ~3 µs for that HTML, besides encoding its two new lines (~7 µs,
    see _encode_line). The line cache is bounded because personal lines (the greeting,
    the unsubscribe link) never repeat.

    The output is ready for SMTP's DATA as it is: CRLF line ends only, and no physical
    line (soft breaks included) starts with "." (it is written `=2E`), so the transport
    need not scan the message to double leading dots (OutgoingMessage.wire_ready).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._lines: dict[str, bytes] = {}
        self._limit = limit
        self._common: CommonLines[bytes] = CommonLines(b"\r\n")

    def encode(self, text: str) -> bytes:
        if "\r" in text:  # b2a_qp lets a bare CR through; lines must end in CRLF only
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if (encoded := self._common.apply(text, self._line)) is not None:
            return encoded
        lines = text.split("\n")
        # The lookups in C (map); Python runs only for the few lines not seen before.
        found = list(map(self._lines.get, lines))
        if None in found:
            miss = self._miss
            found = [
                miss(line) if done is None else done
                for line, done in zip(lines, found, strict=True)
            ]
        encoded_lines = cast("list[bytes]", found)
        self._common.learn(lines, encoded_lines)
        return b"\r\n".join(encoded_lines)

    def _line(self, line: str) -> bytes:
        encoded = self._lines.get(line)
        return self._miss(line) if encoded is None else encoded

    def _miss(self, line: str) -> bytes:
        encoded = _encode_line(line)
        if len(self._lines) < self._limit:
            self._lines[line] = encoded
        return encoded


def _encode_line(line: str) -> bytes:
    """One line (without CR or LF) in quoted-printable, soft breaks CRLF, no physical line
    starting with "." or `>*From `."""
    if line.isascii():
        data = line.encode("ascii")
        # Personal lines are mostly printable ASCII (links): for those b2a_qp only writes
        # "=" as "=3D" and breaks lines, which _wrap_printable does in one pass. For the
        # example's 930-character RSVP line that is ~6 µs instead of ~15 (b2a_qp 7, the
        # checks after it 1.5, the re-wrap for its "." after a soft break 5). Left to
        # b2a_qp: controls and tabs, a trailing blank and a lone "." (which it escapes),
        # and "From " anywhere (which decides in _b2a_line whether to re-wrap).
        if (
            len(data.translate(None, _CONTROLS)) == len(data)
            and not data.endswith(b" ")
            and data != b"."
            and b"From " not in data
        ):
            return _wrap_printable(data.replace(b"=", b"=3D"))
    return _b2a_line(line)


def _b2a_line(line: str) -> bytes:
    """`_encode_line` by binascii.b2a_qp, for any line."""
    # b2a_qp escapes "=", 8-bit bytes, trailing blanks and a lone "." (SMTP end of data),
    # but not a "." that starts a longer line or lands after a soft break (a long
    # link's "=\r\n.example.org").
    encoded = binascii.b2a_qp(line.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if b"From " in encoded or b"\n." in encoded or encoded.startswith(b"."):
        encoded = _escape_line_starts(encoded)
    return encoded


_CONTROLS = bytes(range(32)) + b"\x7f"
_MBOX_FROM = re.compile(rb">*From ")
_MAY_START_FROM = frozenset(b">F")
_DOT, _EQUALS = ord("."), ord("=")
_QP_LINE = 76  # RFC 2045: encoded lines of at most 76 characters, a soft break's "=" included


def _wrap_printable(flat: bytes) -> bytes:
    """What `_b2a_line` gives for a line of printable ASCII, not ending in a blank, not
    ".", without "From ", that is `flat` once its "=" are written "=3D": one pass where
    that took two or three.

    For such a line b2a_qp only breaks it: 75 characters and a soft break's "=" a line,
    fewer where an escape would reach column 76 (it breaks before it), and the last line
    may have 76 if it ends in a literal. `_escape_line_starts`, which `_b2a_line` calls
    when a line starts with ".", wraps the same way up to that line; there it writes the
    "." as `=2E`, and it lets any last line have 76. So b2a_qp's rule holds until a line
    starts with ".", and `_escape_line_starts`'s from there.
    """
    if not flat:
        return flat
    pieces: list[bytes] = []
    start, end = 0, len(flat)
    dotted = False
    while True:
        lead, room = b"", _QP_LINE
        if flat[start] == _DOT:
            dotted = True
            lead, room = b"=2E", _QP_LINE - 3
            start += 1
        rest = end - start
        if rest < room or (rest == room and (dotted or flat[end - 3] != _EQUALS)):
            pieces.append(lead + flat[start:])
            return b"=\r\n".join(pieces)
        cut = start + room - 1  # room for the soft break's "="
        cut = _before_escape(flat, cut)
        pieces.append(lead + flat[start:cut])
        start = cut


def _before_escape(flat: bytes, cut: int) -> int:
    """Where to break a flattened QP line at `cut`: moved back to before an "=XY" escape
    the break would split (every "=" starts one: a literal "=" is "=3D")."""
    if flat[cut - 1] == _EQUALS:
        return cut - 1
    if flat[cut - 2] == _EQUALS:
        return cut - 2
    return cut


def _escape_line_starts(encoded: bytes) -> bytes:
    """One QP-encoded line, re-wrapped so that no physical line starts with `>*From ` or
    with ".".

    An mbox store on the way rewrites a `From ` line to `>From ` (and mboxo cannot undo
    it), which changes the body and breaks its DKIM signature. A leading "." would have
    to be doubled on the wire (RFC 5321 4.5.2); written `=2E`, the message needs no
    dot-stuffing pass. Encoding the first character (`=46rom`, `=2E`) keeps the line
    intact. b2a_qp may have put either at the start of a line with a soft break, so the
    line is wrapped again here. A long link's "." lands after a soft break in many
    messages (those of printable ASCII skip this, see _wrap_printable), so the wrap takes
    a slice per physical line, not a step per character, and looks at single bytes
    rather than calling a method or a regex on each line (5 µs instead of 11 for the
    example's 930-character RSVP line): every "=" of the flattened line starts an
    escape "=XY" (a literal "=" is "=3D"), so a break is moved back to before an escape
    it would split.
    """
    flat = encoded.replace(b"=\r\n", b"")
    if not flat:
        return flat
    pieces: list[bytes] = []
    start, end = 0, len(flat)
    while True:
        first = flat[start]
        if first == _DOT or (first in _MAY_START_FROM and _MBOX_FROM.match(flat, start)):
            escaped = b"=%02X" % first
            start += 1
            if len(escaped) + end - start <= _QP_LINE:
                pieces.append(escaped + flat[start:])
                break
            cut = start + _QP_LINE - 1 - len(escaped)  # room for the soft break's "="
        else:
            escaped = b""
            if end - start <= _QP_LINE:
                pieces.append(flat[start:])
                break
            cut = start + _QP_LINE - 1
        cut = _before_escape(flat, cut)
        pieces.append(escaped + flat[start:cut])
        start = cut
    return b"=\r\n".join(pieces)


def list_slug(list_name: str) -> str:
    """The list's name as one lower-case token (List-Id, Feedback-ID)."""
    return re.sub(r"[^a-z0-9]+", "-", list_name.lower()).strip("-")[:60] or "list"


def list_id(list_name: str, domain: str, *, title: str | None = None) -> str:
    """`"Title" <slug.domain>` (RFC 2919: the phrase describes the list, the id is made
    of its name); List-* headers are never encoded, so a title that is not plain ASCII
    is left out rather than encoded."""
    phrase = title or list_name
    if _plain(phrase) and len(phrase) <= 100:
        quoted = phrase.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{list_slug(list_name)}.{domain}>'
    return f"<{list_slug(list_name)}.{domain}>"


_FEEDBACK_SENDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def feedback_id(campaign_id: int, list_name: str, sender_id: str | None) -> list[str]:
    """`Feedback-ID: CAMPAIGN:LIST:SENDER` (Gmail's feedback loop reports complaint rates
    per value of each field), or nothing without a sender id."""
    if sender_id is None:
        return []
    if not _FEEDBACK_SENDER.fullmatch(sender_id):
        raise UnsafeValueError(
            "feedback_id_sender: letters, digits, '.', '_' or '-' only", field="feedback_id"
        )
    return [f"Feedback-ID: {campaign_id}:{list_slug(list_name)}:{sender_id}"]


_MESSAGE_ID = re.compile(r"<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+>")


def new_message_id(domain: str) -> str:
    """`<32 random hex digits@domain>`: 128 bits, so no two messages anywhere share one
    (receivers that drop repeated Message-IDs would hide a later invitation)."""
    return f"<{secrets.token_hex(16)}@{domain}>"


class InvitationBuilder:
    """One campaign's invitations: templates and invariant MIME compiled once in __init__."""

    def __init__(
        self,
        event: Event,
        *,
        sender: SenderIdentity,
        campaign_id: int,
        list_name: str,
        templates_dir: Path,
        list_title: str | None = None,
        sequence: int = 0,
        ics_url: str | None = None,
    ) -> None:
        """`sequence`: the invite's SEQUENCE (calendar.revision); `ics_url`: this campaign's
        .ics as `mailer serve` has it (tokens.calendar_url), offered as "add to calendar"."""
        self.event = event
        self.campaign_id = campaign_id
        self.sender_address = ascii_address(sender.from_address, field="from_address")
        self.domain = self.sender_address.rpartition("@")[2]
        ensure_header_safe(sender.from_name, field="from_name")
        ensure_header_safe(list_name, field="list_name")
        # Readers see the list's public title (footer, List-Id), else its name.
        shown_list = ensure_header_safe(list_title or list_name, field="list_title")
        postal_address = ensure_header_safe(sender.postal_address or "", field="postal_address")
        self.unsubscribe_mailto = (
            ascii_address(sender.unsubscribe_mailto, field="unsubscribe_mailto")
            if sender.unsubscribe_mailto
            else None
        )
        if ics_url is not None and not _URL.fullmatch(ics_url):
            raise UnsafeValueError("ics_url: not a plain http(s) URL", field="ics_url")
        links = calendar_links(event, ics_url=ics_url)
        self.calendar_url = links.google
        self.renderer = Renderer(
            event,
            templates_dir=templates_dir,
            list_name=shown_list,
            calendar_url=links.google,
            postal_address=postal_address,
            calendar={"google": links.google, "outlook": links.outlook, "ics": links.ics or ""},
        )
        self._ics = build_ics(
            event,
            domain=self.domain,
            url=event.online_url or event.url or event.map_url or sender.base_url,
            sequence=sequence,
        )
        tag = hashlib.sha256(f"{campaign_id}\0{event.slug}\0{self.domain}".encode()).hexdigest()
        mixed, alt = f"=_m{tag[:16]}", f"=_a{tag[:16]}"  # "=_" never occurs in QP or base64
        static = [f"From: {mailbox(sender.from_name, self.sender_address, field='From')}"]
        # "Just reply to this email" must reach a person: the organiser, unless the
        # settings name another address.
        reply_to = sender.reply_to or event.organiser.email
        static.append(f"Reply-To: {ascii_address(reply_to, field='reply_to')}")
        static += [
            f"List-Id: {list_id(list_name, self.domain, title=shown_list)}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            *feedback_id(campaign_id, list_name, sender.feedback_id_sender),
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{mixed}"',
            "",
            f"--{mixed}",
            f'Content-Type: multipart/alternative; boundary="{alt}"',
            "",
            f"--{alt}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            "",
        ]
        self._head_tail = "\r\n".join(static).encode("ascii")
        self._between = (
            f'\r\n--{alt}\r\nContent-Type: text/html; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode("ascii")
        ics_b64 = base64.encodebytes(self._ics).replace(b"\n", b"\r\n")
        self._tail = (
            (
                f"\r\n--{alt}--\r\n\r\n--{mixed}\r\nContent-Type: {ICS_CONTENT_TYPE}\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                'Content-Disposition: attachment; filename="invite.ics"\r\n\r\n'
            ).encode("ascii")
            + ics_b64
            + f"\r\n--{mixed}--\r\n".encode("ascii")
        )
        self._text_qp, self._html_qp = QuotedPrintable(), QuotedPrintable()
        # The quoted-printable parts are wire-ready by construction (QuotedPrintable);
        # the fixed pieces are checked here once, the personal head in build().
        self._fixed_ready = all(
            _wire_ready(piece) for piece in (self._head_tail, self._between, self._tail)
        ) and self._tail.endswith(b"\r\n")
        self._date_second = -1
        self._date = ""

    @property
    def ics(self) -> bytes:
        """The campaign's calendar invite (identical for every recipient)."""
        return self._ics

    def render(
        self, recipient: Recipient, *, unsubscribe_url: str, rsvp_url: str | None = None
    ) -> RenderedMessage:
        """Subject, text and HTML for one recipient (used by preview and validate too).

        `rsvp_url`: the guest's RSVP page (tokens.rsvp_url), for an event that takes
        answers (Event.rsvp_enabled); None leaves the RSVP links out."""
        _check_recipient(recipient)
        if rsvp_url is not None and not _URL.fullmatch(rsvp_url):
            raise UnsafeValueError("rsvp_url: not a plain http(s) URL", field="rsvp_url")
        return self.renderer.render(recipient, unsubscribe_url=unsubscribe_url, rsvp_url=rsvp_url)

    def build(
        self,
        recipient: Recipient,
        *,
        unsubscribe_url: str,
        test: bool = False,
        message_id: str | None = None,
        rsvp_url: str | None = None,
    ) -> OutgoingMessage:
        """The complete message for one recipient; raises UnsafeValueError, TemplateError.

        `message_id`: the one the ledger row holds (a resend reuses it); None makes a new
        random one (test sends, dry runs)."""
        to_address = ascii_address(recipient.email, field="email")
        if not _URL.fullmatch(unsubscribe_url):
            raise UnsafeValueError(
                "unsubscribe_url: not a plain http(s) URL", field="unsubscribe_url"
            )
        rendered = self.render(recipient, unsubscribe_url=unsubscribe_url, rsvp_url=rsvp_url)
        subject = f"[TEST] {rendered.subject}" if test else rendered.subject
        if (problem := find_unsafe(subject)) is not None:
            raise UnsafeValueError(f"subject: {problem}", field="subject")
        unsubscribe = f"<{unsubscribe_url}>"
        if self.unsubscribe_mailto:
            # Folding after the comma is the only break allowed; the URIs stay whole.
            fold = "\r\n " if len(unsubscribe_url) + len(self.unsubscribe_mailto) > 900 else " "
            subject_field = _mailto_subject(unsubscribe_url)
            unsubscribe += f",{fold}<mailto:{self.unsubscribe_mailto}?subject={subject_field}>"
        if len(unsubscribe_url) > MAX_LINE - 30:
            raise UnsafeValueError(
                "unsubscribe_url: too long for a header", field="unsubscribe_url"
            )
        if message_id is None:
            message_id = new_message_id(self.domain)
        elif not _MESSAGE_ID.fullmatch(message_id):
            raise UnsafeValueError("message_id: not a plain <id@domain>", field="message_id")
        head = (
            f"Date: {self._now()}\r\n"
            f"To: {mailbox(recipient.name, to_address, field='To')}\r\n"
            f"Subject: {unstructured(subject)}\r\n"
            f"Message-ID: {message_id}\r\n"
            f"List-Unsubscribe: {unsubscribe}\r\n"
        )
        try:
            head_bytes = head.encode("ascii")
            text = self._text_qp.encode(rendered.text)
            html = self._html_qp.encode(rendered.html)
            data = b"".join((head_bytes, self._head_tail, text, self._between, html, self._tail))
        except UnicodeError as exc:  # lone surrogates from broken input
            raise UnsafeValueError(f"unencodable text: {exc}", field="body") from exc
        return OutgoingMessage(
            sender=self.sender_address,
            recipient=to_address,
            message_id=message_id,
            data=data,
            # The head is 0.5 KB: checking it costs ~1 µs, the whole message ~46 µs.
            wire_ready=self._fixed_ready and _wire_ready(head_bytes),
        )

    def _now(self) -> str:
        # format_datetime costs ~5 µs; the header only changes once a second.
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = format_datetime(datetime.fromtimestamp(second, UTC))
        return self._date


def _wire_ready(piece: bytes) -> bool:
    """Whether a piece that starts a line (or with CRLF) has CRLF line ends only and no
    line starting with "." (OutgoingMessage.wire_ready)."""
    crlf = piece.count(b"\r\n")
    return (
        piece.count(b"\n") == crlf
        and piece.count(b"\r") == crlf
        and b"\n." not in piece
        and not piece.startswith(b".")
    )


def _mailto_subject(unsubscribe_url: str) -> str:
    """The subject a mail client sends the List-Unsubscribe mailto with: the link's token
    after `unsubscribe`, so the mailed request names the person as the link does (the
    bounce mailbox reader acts on it); plain `unsubscribe` for a link without one."""
    token = unsubscribe_url.rpartition("/u/")[2]
    return f"unsubscribe%20{token}" if _LINK_TOKEN.fullmatch(token) else "unsubscribe"


def _check_recipient(recipient: Recipient) -> None:
    """Defence in depth: import already refuses these, but a header must never be split."""
    ensure_header_safe(recipient.name, field="name")
    ensure_header_safe(recipient.email, field="email", max_length=320)
    for key, value in recipient.attributes.items():
        if (problem := find_unsafe(key) or find_unsafe(value)) is not None:
            raise UnsafeValueError(f"attributes.{key!r}: {problem}", field=f"attributes.{key}")
