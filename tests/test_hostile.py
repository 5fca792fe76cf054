"""Hostile subscriber data: escaped in HTML, never a new header, never a broken structure."""

from __future__ import annotations

import functools
from email.header import decode_header, make_header
from email.utils import getaddresses
from pathlib import Path

import markupsafe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.errors import UnsafeValueError
from mailer.message.compose import InvitationBuilder
from mailer.message.headers import display_name as shown_name
from mailer.models import Recipient
from mailer.safety import MAX_FIELD_LENGTH, find_unsafe
from test_compose import (
    EXAMPLE,
    SENDER,
    TEMPLATES,
    ZOE,
    assert_well_formed,
    make_builder,
    raw_headers,
)

NASTY = [
    "<script>alert(1)</script>",
    '"Robert"; DROP TABLE',
    'O\'Brien \\ "the" <b>bold</b>',
    "Eve\r\nBcc: victim@example.org",
    "=?utf-8?q?a=0D=0ABcc:_victim@example.org?=",
    "عبد الله \u202eevil\u202c",
    "x" * 998,
    "Zoë " * 200,
]
names = st.one_of(st.sampled_from(NASTY), st.text(max_size=300))


@functools.cache
def builder() -> InvitationBuilder:
    # Module-wide: compiling once per test run is the point (and hypothesis dislikes fixtures).
    return make_builder()


@functools.cache
def personal_builder(directory: str) -> InvitationBuilder:
    event = Path(directory) / "hostile.md"
    body = EXAMPLE.read_text(encoding="utf-8").split("---\n", 2)
    body[2] = "Hello {{ subscriber.name }} of {{ subscriber.attributes.city }}.\n\n" + body[2]
    event.write_text("---\n".join(body), encoding="utf-8")
    subject = 'subject: "Invitation: CWO London Public Meeting, Saturday 11 September"'
    event.write_text(
        event.read_text(encoding="utf-8").replace(subject, 'subject: "For {{ subscriber.name }}"'),
        encoding="utf-8",
    )
    return make_builder(event_path=event, templates=TEMPLATES)


def display_name(raw_to: str) -> str:
    """The name as an RFC 2047 reader shows it: the mailbox parsed from the unfolded
    value, then decoded (email.header joins adjacent encoded-words as the RFC says; the
    policy parser keeps the folding space between them)."""
    ((name, _),) = getaddresses([raw_to.replace("\r\n", "")])
    return str(make_header(decode_header(name)))


def check(built: InvitationBuilder, name: str, city: str, *, personal: bool) -> None:
    recipient = Recipient(
        subscriber_id=9, email="eve@example.org", name=name, attributes={"city": city}
    )
    url = f"{SENDER.base_url}/u/t9"
    unsafe = find_unsafe(name) or find_unsafe(city) or len(name) > MAX_FIELD_LENGTH
    if unsafe:
        with pytest.raises(UnsafeValueError):
            built.build(recipient, unsubscribe_url=url)
        return
    message = built.build(recipient, unsubscribe_url=url)
    parsed = assert_well_formed(message)
    to = parsed["To"]
    if shown_name(name):  # address-like parts never reach the header (issue 10)
        assert display_name(dict(raw_headers(message.data))["To"]) == shown_name(name)
    assert to.addresses[0].addr_spec == "eve@example.org"
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content().replace("\r\n", "\n")
    first_name = name.split()[0] if name.split() else ""
    for value in (name, city) if personal else (first_name,):
        if value:
            assert str(markupsafe.escape(value)) in html
    assert "<script" not in html


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, city=names)
def test_hostile_values_in_the_example_invitation(name: str, city: str) -> None:
    """Any name: either refused as unsafe, or a well-formed message with one To header."""
    check(builder(), name, city, personal=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, city=names)
def test_hostile_values_rendered_into_body_and_subject(
    tmp_path_factory: pytest.TempPathFactory, name: str, city: str
) -> None:
    """Values placed in the body and the Subject are escaped and cannot add headers."""
    directory = personal_builder(str(tmp_path_factory.getbasetemp()))
    check(directory, name, city, personal=True)


@pytest.mark.parametrize("name", [n for n in NASTY if find_unsafe(n)])
def test_newlines_in_a_name_raise_unsafe_value_error(name: str) -> None:
    """CR/LF in a name is refused outright (CVE-2024-6923 defence in depth)."""
    recipient = Recipient(subscriber_id=1, email="eve@example.org", name=name, attributes={})
    with pytest.raises(UnsafeValueError):
        builder().build(recipient, unsubscribe_url=f"{SENDER.base_url}/u/t")


def test_encoded_newline_in_a_name_stays_text() -> None:
    """An RFC 2047 word that decodes to CRLF is sent encoded, so it can never become a header."""
    name = "=?utf-8?q?=0D=0ABcc:_eve=40x.org?="  # one encoded-word long: read back whole
    recipient = Recipient(subscriber_id=1, email="eve@example.org", name=name, attributes={})
    parsed = assert_well_formed(
        builder().build(recipient, unsubscribe_url=f"{SENDER.base_url}/u/t")
    )
    assert "Bcc" not in parsed
    assert parsed["To"].addresses[0].display_name == name


def test_attributes_with_newlines_are_refused() -> None:
    """A CSV attribute holding a newline is refused even when no template uses it."""
    recipient = Recipient(
        subscriber_id=1, email="e@example.org", name="E", attributes={"x": "a\nb"}
    )
    with pytest.raises(UnsafeValueError):
        builder().build(recipient, unsubscribe_url=f"{SENDER.base_url}/u/t")
    assert ZOE.name  # the fixture recipient itself is clean
