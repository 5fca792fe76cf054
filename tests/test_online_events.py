"""Online and hybrid events: `online_url` instead of (or beside) a venue, a join link that
can be clicked in the HTML and the text part, and bare URLs in the body made links."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import icalendar
import pytest

from mailer.errors import EventFileError
from mailer.message.event import load_event
from mailer.message.lint import validate_event
from test_compose import TEMPLATES, ZOE, make_builder, unsubscribe_url

JOIN = "https://meet.jit.si/cwo-london-2030"
HEAD = """---
title: Public meeting
subject: "Invitation"
timezone: Europe/London
starts_at: 2030-09-11T14:30
"""
ORGANISER = """organiser:
  name: CWO
  email: events@leftcom.example
---
"""
PLACE = "venue: Calthorpe Arms\naddress: 252 Grays Inn Rd, London\n"
BODY = "Dear {{ subscriber.first_name }},\n\nThe slides: https://example.org/slides.pdf today.\n"


class Anchors(HTMLParser):
    """(href, text) of every <a> in an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._open: list[str] | None = None
        self._href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._open = dict(attrs).get("href") or "", []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.found.append((self._href, " ".join("".join(self._open).split())))
            self._open = None


def anchors(html: str) -> list[tuple[str, str]]:
    parser = Anchors()
    parser.feed(html)
    parser.close()
    return parser.found


def write(tmp_path: Path, front: str, body: str = BODY) -> Path:
    path = tmp_path / "meeting.md"
    path.write_text(HEAD + front + ORGANISER + body, encoding="utf-8")
    return path


def composed(path: Path) -> tuple[str, str, icalendar.Event]:
    """The text part, HTML part and VEVENT of the message Zoë would receive."""
    message = make_builder(event_path=path).build(ZOE, unsubscribe_url=unsubscribe_url(ZOE))
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = {part.get_content_type(): part for part in parsed.walk()}
    text = parts["text/plain"].get_content()
    html = parts["text/html"].get_content()
    ics = parts["text/calendar"].get_payload(decode=True)
    assert isinstance(ics, bytes)
    calendar = icalendar.Calendar.from_ical(ics)
    (vevent,) = calendar.walk("VEVENT")
    assert isinstance(vevent, icalendar.Event)
    return str(text), str(html), vevent


def test_online_event_needs_no_venue_and_has_a_join_link_in_every_part(tmp_path: Path) -> None:
    """An online-only event (no venue, no address) validates; the HTML has a "Join online"
    button to the link, the text part has the link on a line of its own words, and the
    invite's LOCATION and URL are the link."""
    path = write(tmp_path, f"online_url: {JOIN}\n")
    assert validate_event(path, templates_dir=TEMPLATES) == []
    text, html, vevent = composed(path)
    links = anchors(html)
    assert (JOIN, "Join online") in links
    assert "Where: online" in " ".join(text.split())
    assert "None" not in text
    assert any(JOIN in line.split() for line in text.splitlines()), text
    assert str(vevent["LOCATION"]) == JOIN
    assert str(vevent["URL"]) == JOIN


def test_hybrid_event_shows_the_place_and_the_join_link(tmp_path: Path) -> None:
    """With venue, address and online_url, the place stays the invite's LOCATION and the
    join link is clickable in the HTML and present in the text."""
    path = write(tmp_path, PLACE + f"online_url: {JOIN}\n")
    text, html, vevent = composed(path)
    assert (JOIN, "Join online") in anchors(html)
    assert "Calthorpe Arms, 252 Grays Inn Rd, London, and online" in " ".join(text.split())
    assert any(JOIN in line.split() for line in text.splitlines()), text
    assert str(vevent["LOCATION"]) == "Calthorpe Arms, 252 Grays Inn Rd, London"
    assert str(vevent["URL"]) == JOIN


def test_bare_urls_and_the_event_url_become_links(tmp_path: Path) -> None:
    """A URL written bare in the body is a link in the HTML (it was plain text), and the
    front matter's `url` is shown as a link (it was never shown at all)."""
    path = write(tmp_path, PLACE + "url: https://leftcom.example/meetings/2030\n")
    text, html, _ = composed(path)
    links = anchors(html)
    assert ("https://example.org/slides.pdf", "https://example.org/slides.pdf") in links
    page = "https://leftcom.example/meetings/2030"
    assert (page, page) in links
    assert "https://example.org/slides.pdf today." in text  # the text part keeps it once
    assert page in text.split()


def test_names_without_a_scheme_stay_text(tmp_path: Path) -> None:
    """Only http(s):// URLs and e-mail addresses are linked: "readme.md" is a file name,
    not a website in Moldova."""
    path = write(tmp_path, PLACE, "See readme.md or write to events@leftcom.org.\n")
    _, html, _ = composed(path)
    assert anchors(html).count(("mailto:events@leftcom.org", "events@leftcom.org")) == 1
    assert not any("readme.md" in href for href, _ in anchors(html))


def test_a_personal_value_inside_a_bare_url_stays_escaped(tmp_path: Path) -> None:
    """A tag inside a bare URL is filled in per subscriber, escaped inside the href."""
    body = "Your branch: https://example.org/b/{{ subscriber.attributes.branch }}\n"
    path = write(tmp_path, PLACE, body)
    builder = make_builder(event_path=path)
    recipient = dataclasses.replace(ZOE, attributes={"branch": 'x"><script>'})
    html = builder.render(recipient, unsubscribe_url=unsubscribe_url(ZOE)).html
    assert "<script>" not in html
    assert ('https://example.org/b/x"><script>', 'https://example.org/b/x"><script>') in (
        anchors(html)
    )


@pytest.mark.parametrize(
    ("front", "field", "line", "words"),
    [
        ("", "venue", 1, "online-only event gives online_url"),
        ("venue: Calthorpe Arms\n", "address", 1, "where is Calthorpe Arms?"),
        (f"online_url: {JOIN}\naddress: 252 Grays Inn Rd\n", "address", 7, "needs its venue"),
        ("online_url: meet.jit.si/x\n", "online_url", 6, "plain http(s):// URL"),
    ],
)
def test_place_rules_are_reported_on_their_line(
    tmp_path: Path, front: str, field: str, line: int, words: str
) -> None:
    """Without online_url an event needs a venue and an address; an address needs a venue;
    a bad online_url is one error, not followed by "venue: required"."""
    path = write(tmp_path, front)
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert all(isinstance(p, EventFileError) for p in problems)
    assert str(problems[0]).startswith(f"{path}:{line}: {field}: "), problems
    assert words in str(problems[0])
    if field == "online_url":
        assert len(problems) == 1, problems
    with pytest.raises(EventFileError):
        load_event(path)
