"""Body lines beginning `From ` (issue 10): encoded as `=46rom`, so an mbox store on the way
has nothing to rewrite and the body (and a DKIM signature over it) arrives unchanged.
Lines beginning "." (issue 15): encoded as `=2E`, so an invitation needs no dot-stuffing
pass on its way out (OutgoingMessage.wire_ready)."""

from __future__ import annotations

import binascii
import mailbox
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer.delivery.smtp import _dot_stuff
from mailer.message.compose import QuotedPrintable
from mailer.models import Recipient
from test_compose import FRONT_FOR_TESTS, SENDER, TEMPLATES, ZOE, assert_well_formed, make_builder

MBOX_FROM = re.compile(rb"^>*From ", re.MULTILINE)
BODY = """\
From the archives: our 1921 pamphlet, reprinted.

Please read it before the meeting.
From Monday, copies are at the bookshop.

> From: a comrade
> >From the floor: a question
"""


def test_from_lines_in_an_invitation_survive_an_mbox_store(tmp_path: Path) -> None:
    """Seen: a body line beginning `From ` went out raw; an mbox on the way stored it as
    `>From ` and DKIM failed. Now no line of the message starts that way, Python's
    mailbox module (mboxo, which mangles such lines) hands back the very same bytes, and
    both parts still decode to exactly what was rendered."""
    event = tmp_path / "archive.md"
    event.write_text(FRONT_FOR_TESTS + BODY, encoding="utf-8")
    builder = make_builder(event_path=event, templates=TEMPLATES)
    url = f"{SENDER.base_url}/u/t7"
    rendered = builder.render(ZOE, unsubscribe_url=url)
    assert re.search(r"(?m)^From the archives", rendered.text)  # the case is really there
    assert re.search(r"(?m)^From Monday", rendered.html)
    message = builder.build(ZOE, unsubscribe_url=url)

    assert MBOX_FROM.findall(message.data.replace(b"\r\n", b"\n")) == []
    store = mailbox.mbox(tmp_path / "inbox.mbox")
    key = store.add(message.data)
    store.close()
    store = mailbox.mbox(tmp_path / "inbox.mbox")
    stored = store.get_bytes(key)
    store.close()
    assert stored.replace(b"\r\n", b"\n") == message.data.replace(b"\r\n", b"\n")
    parsed = assert_well_formed(message)
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n") == rendered.html


@pytest.mark.parametrize(
    "line",
    [
        "From here on",
        ">From a quote",
        ">>>From deeper",
        "x" * 75 + "From after a soft break",  # b2a_qp wraps right before "From "
        "x" * 74 + " From after a soft break",
        ">" * 80 + "From after many quotes",
        "Zoë " * 18 + "From " + "é" * 40,
        "x" * 75 + ".",
        ".leading dot",
        "x" * 75 + ".example.org/after-a-soft-break",
        "x" * 74 + "=.after an escape",
    ],
)
def test_no_physical_line_starts_with_from(line: str) -> None:
    """Whatever the wrapping, no encoded line starts with `>*From `, every line is at most
    76 characters (RFC 2045) and the text decodes back unchanged."""
    encoded = QuotedPrintable().encode(f"{line}\n{line}")
    lines = encoded.split(b"\r\n")
    assert not [ln for ln in lines if MBOX_FROM.match(ln)]
    assert not [ln for ln in lines if ln.startswith(b".")]
    assert max(len(ln) for ln in lines) <= 76
    assert lines[-1] not in (b".", b"")  # a lone "." would end the SMTP data
    assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode() == f"{line}\n{line}"


_PIECES = st.sampled_from(
    [".", "..", "x" * 37, "y" * 75, " ", "=", "é", "From ", ">", "\n", "\r\n", "\r", "\t", "ab"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
@example("." + "x" * 74 + "." * 3 + "\n.")
def test_encoded_text_is_wire_ready(text: str) -> None:
    """Whatever the text (dots and "From " where soft breaks fall, bare CRs, empty
    lines), the encoding has CRLF line ends only, no line starting with "." or `>*From `,
    lines of at most 76 characters that do not end in a blank, decodes back to the text
    (line ends as LF), and the transport's dot-stuffing would leave it as it is, twice
    over (a warm cache)."""
    encoder = QuotedPrintable()
    for _ in range(2):
        encoded = encoder.encode(text)
        wire = encoded + b"\r\n"
        assert _dot_stuff(wire) == wire
        lines = encoded.split(b"\r\n")
        assert not [ln for ln in lines if ln.startswith(b".") or MBOX_FROM.match(ln)]
        assert max(len(ln) for ln in lines) <= 76
        assert not [ln for ln in lines if ln.endswith((b" ", b"\t"))]  # RFC 2045 6.7 (3)
        decoded = binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode()
        assert decoded == text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=60, deadline=None)
@given(
    name=st.lists(st.sampled_from(["Zoë", ".", "x" * 40, " ", "From ", "Martin"]), max_size=8)
    .map("".join)
    .map(str.strip),
    token=st.text(alphabet="ABCxyz019_-.", min_size=16, max_size=60),
)
def test_an_invitation_says_wire_ready_only_when_it_is(name: str, token: str) -> None:
    """Every invitation the builder makes, whatever the name and however long the links
    (dots after soft breaks), is marked wire-ready and is: the transport's dot-stuffing
    pass would not change a byte of it."""
    builder = _BUILDER
    message = builder.build(
        Recipient(7, "zoe@example.org", name, {}),
        unsubscribe_url=f"{SENDER.base_url}/u/{token}",
        rsvp_url=f"{SENDER.base_url}/r/{token}.{token}" if builder.event.rsvp_enabled else None,
    )
    assert message.wire_ready
    assert _dot_stuff(message.data) == message.data


_BUILDER = make_builder()


def test_the_move_up_notice_has_crlf_line_ends_and_no_line_starting_with_a_dot() -> None:
    """The waiting-list notice (not built by InvitationBuilder) uses the same encoder: its
    long links' soft breaks are CRLF (b2a_qp alone wrote bare LF ones, which the relay got
    only because the transport normalises), no line starts with "." or `From `, and the
    body decodes to the notice's text."""
    from mailer.message.event import load_event
    from mailer.message.rsvp_notice import build_promotion_notice, promotion_text

    event = load_event(TEMPLATES / "events" / "london-public-meeting.md")
    rsvp_url = f"{SENDER.base_url}/r/{'R' * 43}.{'s' * 40}"  # "." right after a soft break
    ics_url = f"{SENDER.base_url}/c/{'C' * 43}.{'t' * 40}"
    message = build_promotion_notice(
        event,
        sender=SENDER,
        name="Zoë Martin",
        email="zoe@example.org",
        guests=1,
        rsvp_url=rsvp_url,
        ics_url=ics_url,
    )
    data = message.data
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    assert _dot_stuff(data) == data
    assert b"=\r\n=2E" in data  # the case is really there
    body = data.partition(b"\r\n\r\n")[2]
    text = promotion_text(event, name="Zoë Martin", guests=1, rsvp_url=rsvp_url, ics_url=ics_url)
    assert binascii.a2b_qp(body.replace(b"\r\n", b"\n")).decode() == text + "\n"
