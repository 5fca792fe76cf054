"""The wire format of an invitation, checked on the raw bytes and on the parsed message."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.message import EmailMessage, MIMEPart
from pathlib import Path

import icalendar
import pytest

from mailer.errors import UnsafeValueError
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import OutgoingMessage, Recipient, SenderIdentity

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
EXAMPLE = TEMPLATES / "events" / "london-public-meeting.md"
SENDER = SenderIdentity(
    from_address="invitations@leftcom.example",
    from_name="Communist Workers' Organisation",
    base_url="https://lists.leftcom.example",
    unsubscribe_mailto="unsubscribe@leftcom.example",
)
ZOE = Recipient(subscriber_id=7, email="zoe@example.org", name="Zoë Martin", attributes={})
ONCE: tuple[str, ...] = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
ONCE += ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")


def make_builder(
    sender: SenderIdentity = SENDER, *, event_path: Path = EXAMPLE, templates: Path = TEMPLATES
) -> InvitationBuilder:
    return InvitationBuilder(
        load_event(event_path),
        sender=sender,
        campaign_id=42,
        list_name="CWO London",
        templates_dir=templates,
    )


def unsubscribe_url(recipient: Recipient, sender: SenderIdentity = SENDER) -> str:
    return f"{sender.base_url}/u/token-{recipient.subscriber_id}"


def raw_headers(data: bytes) -> list[tuple[str, str]]:
    """(name, raw value with folding kept) for each header of the top-level block."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields = re.split(r"\r\n(?![ \t])", head)
    return [(f.split(":", 1)[0], f.split(":", 1)[1]) for f in fields]


def parts(message: MIMEPart) -> list[MIMEPart]:
    """The sub-parts of a multipart message, in order."""
    assert message.is_multipart(), message.get_content_type()
    return list(message.iter_parts())


def decoded(part: MIMEPart) -> bytes:
    """A leaf part's payload with its transfer encoding undone."""
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes), part.get_content_type()
    return payload


def assert_well_formed(message: OutgoingMessage) -> EmailMessage:
    """Every rule the issue lists for the bytes on the wire; returns the parsed message."""
    data = message.data
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    data.decode("ascii")  # 7-bit on the wire: bodies are QP/base64, headers encoded
    names = [name.lower() for name, _ in raw_headers(data)]
    for name in ONCE:
        assert names.count(name.lower()) == 1, name
    assert "bcc" not in names
    assert "cc" not in names
    for name, value in raw_headers(data):
        if name.lower().startswith("list-"):
            assert "=?" not in value, f"{name} must never be RFC 2047 encoded"
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        assert part.defects == [], part.get_content_type()
        for name, value in part.items():
            assert getattr(value, "defects", ()) == (), name
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, calendar = parts(parsed)
    assert alternative.get_content_type() == "multipart/alternative"
    plain, html = parts(alternative)
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert calendar.get_content_type() == "text/calendar"
    assert calendar.get_param("method") == "PUBLISH"
    assert calendar.get_filename() == "invite.ics"
    icalendar.Calendar.from_ical(decoded(calendar))
    assert parsed["Message-ID"] == message.message_id
    return parsed


def test_example_invitation_has_the_required_structure_and_headers() -> None:
    """The example event's message parses without defects and has every header exactly once."""
    builder = make_builder()
    message = builder.build(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    parsed = assert_well_formed(message)
    raw = dict(raw_headers(message.data))
    assert raw["From"] == ' "Communist Workers\' Organisation" <invitations@leftcom.example>'
    assert parsed["To"].addresses[0].display_name == "Zoë Martin"
    assert parsed["Subject"] == load_event(EXAMPLE).subject
    assert parsed["List-Id"] == '"CWO London" <cwo-london.leftcom.example>'
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Reply-To"] == "events@leftcom.example"  # the organiser, by default
    assert (message.sender, message.recipient) == ("invitations@leftcom.example", ZOE.email)


def test_parts_carry_exactly_what_render_produced() -> None:
    """Quoted-printable round-trips the rendered text and HTML unchanged."""
    builder = make_builder()
    rendered = builder.render(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    parsed = assert_well_formed(builder.build(ZOE, unsubscribe_url=unsubscribe_url(ZOE)))
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    # The wire form ends lines in CRLF; the content is otherwise identical.
    assert plain.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n") == rendered.html
    calendar = parts(parsed)[1]
    assert decoded(calendar) == builder.ics


def test_long_list_unsubscribe_is_never_encoded() -> None:
    """A 400-character URL stays a literal <https://...> in the raw bytes (email's folding trap)."""
    builder = make_builder()
    url = "https://lists.leftcom.example/u/" + "A" * 400
    data = builder.build(ZOE, unsubscribe_url=url).data
    assert f"List-Unsubscribe: <{url}>,".encode() in data
    assert b"<mailto:unsubscribe@leftcom.example?subject=unsubscribe>" in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["List-Unsubscribe"]).startswith(f"<{url}>")


def test_unsubscribe_without_mailto_is_one_https_uri() -> None:
    """Without unsubscribe_mailto, List-Unsubscribe holds exactly the https URI (RFC 8058)."""
    sender = SenderIdentity(
        from_address="invitations@leftcom.example", from_name="CWO", base_url="https://l.example"
    )
    message = make_builder(sender).build(ZOE, unsubscribe_url="https://l.example/u/t")
    assert b"\r\nList-Unsubscribe: <https://l.example/u/t>\r\n" in message.data


def test_message_ids_are_random_and_on_the_sender_domain() -> None:
    """Seen: IDs derived from campaign and subscriber numbers repeated across test sends and
    across stores. Now 128 random bits each; a given one (the ledger row's) is reused."""
    first = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE)).message_id
    again = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE)).message_id
    assert first != again
    assert re.fullmatch(r"<[0-9a-f]{32}@leftcom\.example>", first)
    kept = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE), message_id=first)
    assert kept.message_id == first
    assert f"\r\nMessage-ID: {first}\r\n".encode() in kept.data
    with pytest.raises(UnsafeValueError, match="message_id"):
        make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE), message_id="<a>\r\nBcc: x")


def test_reply_to_is_the_organiser_unless_the_settings_name_one() -> None:
    """The example says "just reply to this email": with no MAILER_REPLY_TO that must reach
    the event's organiser, not the sending address."""
    default = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    organiser = make_builder().event.organiser.email
    assert f"\r\nReply-To: {organiser}\r\n".encode() in default.data
    sender = SenderIdentity(
        from_address="invitations@leftcom.example",
        from_name="CWO",
        base_url="https://l.example",
        reply_to="replies@leftcom.example",
    )
    chosen = make_builder(sender).build(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    assert b"\r\nReply-To: replies@leftcom.example\r\n" in chosen.data
    assert chosen.data.count(b"\r\nReply-To: ") == 1


def test_internationalised_domains_go_out_in_ascii() -> None:
    """IDN sender and recipient domains appear only in IDNA form: headers and envelope."""
    sender = SenderIdentity(
        from_address="einladung@bücher.example",
        from_name="Bücherei",
        base_url="https://xn--bcher-kva.example",
        reply_to="antwort@bücher.example",
    )
    recipient = Recipient(subscriber_id=1, email="jorg@müller.example", name="", attributes={})
    message = make_builder(sender).build(
        recipient, unsubscribe_url="https://xn--bcher-kva.example/u/t"
    )
    parsed = assert_well_formed(message)
    assert message.sender == "einladung@xn--bcher-kva.example"
    assert message.recipient == "jorg@xn--mller-kva.example"
    assert parsed["To"] == "jorg@xn--mller-kva.example"
    assert parsed["Reply-To"] == "antwort@xn--bcher-kva.example"
    assert message.message_id.endswith("@xn--bcher-kva.example>")
    assert dict(raw_headers(message.data))["From"].startswith(" =?utf-8?b?")


def test_test_sends_are_marked_in_the_subject() -> None:
    """test=True prefixes the subject with [TEST]; nothing else changes."""
    message = make_builder().build(ZOE, unsubscribe_url=unsubscribe_url(ZOE), test=True)
    assert assert_well_formed(message)["Subject"].startswith("[TEST] Invitation:")


def test_reply_to_is_added_when_configured() -> None:
    """A configured Reply-To appears exactly once."""
    sender = dataclasses.replace(SENDER, reply_to="cwo@leftcom.example")
    parsed = assert_well_formed(
        make_builder(sender).build(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    )
    assert parsed["Reply-To"] == "cwo@leftcom.example"


@pytest.mark.parametrize(
    "url",
    ["https://l.example/u/a b", "https://l.example/u/a\r\nBcc: x@evil.example", "javascript:x", ""],
)
def test_unsafe_unsubscribe_urls_are_refused(url: str) -> None:
    """An unsubscribe URL with spaces, newlines or another scheme never reaches a header."""
    with pytest.raises(UnsafeValueError):
        make_builder().build(ZOE, unsubscribe_url=url)


def test_emailmessage_would_have_encoded_the_header() -> None:
    """The trap avoided here: the stdlib turns a long List-Unsubscribe into encoded-words."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["List-Unsubscribe"] = "<https://lists.leftcom.example/u/" + "A" * 100 + ">"
    assert b"List-Unsubscribe: =?utf-8?q?=3Chttps" in msg.as_bytes()


FRONT_FOR_TESTS = """---
title: Test meeting
subject: "Invitation"
timezone: Europe/London
starts_at: 2021-09-11T14:30
venue: Calthorpe Arms
address: 252 Grays Inn Rd, London
organiser:
  name: CWO
  email: events@leftcom.example
---
"""
