"""Rendering: Markdown + layout -> inlined, sanitised HTML and a wrapped text part."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.errors import TemplateError
from mailer.message.compose import InvitationBuilder
from mailer.message.dates import format_when
from mailer.message.render import markdown_text
from mailer.models import Recipient
from test_compose import FRONT_FOR_TESTS, SENDER, TEMPLATES, ZOE, make_builder

LONDON = ZoneInfo("Europe/London")
URL = f"{SENDER.base_url}/u/preview-token"


def builder_for(tmp_path: Path, body: str, *, templates: Path = TEMPLATES) -> InvitationBuilder:
    path = tmp_path / "event.md"
    path.write_text(FRONT_FOR_TESTS + body, encoding="utf-8")
    return make_builder(event_path=path, templates=templates)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2021, 9, 11, 14, 30, tzinfo=LONDON), "Saturday 11 September 2021, 2:30pm BST"),
        (datetime(2022, 1, 15, 19, 0, tzinfo=LONDON), "Saturday 15 January 2022, 7pm GMT"),
        (datetime(2022, 1, 16, 12, 5, tzinfo=LONDON), "Sunday 16 January 2022, 12:05pm GMT"),
        (datetime(2022, 1, 16, 0, 0, tzinfo=LONDON), "Sunday 16 January 2022, 12am GMT"),
    ],
)
def test_dates_read_naturally_in_the_event_zone(moment: datetime, expected: str) -> None:
    """Day name, day, month, 12-hour clock and the zone's abbreviation."""
    assert format_when(moment) == expected


def test_example_html_is_inlined_personal_and_has_the_links() -> None:
    """CSS is inlined onto elements; greeting, calendar and unsubscribe links are present."""
    html = make_builder().render(ZOE, unsubscribe_url=URL).html
    assert re.search(r'<p style="[^"]*margin', html)
    assert "<p" in html
    assert "Dear Zoë," in html
    assert f'href="{URL}"' in html
    assert 'href="https://calendar.google.com/calendar/render?action=TEMPLATE&amp;' in html
    assert "Saturday 11 September 2021, 2:30pm BST" in html
    assert "<img" not in html  # readable without images
    assert 'name="viewport"' in html


def test_example_text_is_wrapped_and_keeps_urls_visible() -> None:
    """Text lines stay near 72 columns, except lines that are a single URL."""
    text = make_builder().render(ZOE, unsubscribe_url=URL).text
    for line in text.splitlines():
        assert len(line) <= 72 or " " not in line.strip(), line
    assert URL in text.splitlines()
    assert any(line.startswith("https://calendar.google.com/") for line in text.splitlines())
    assert "Dear Zoë," in text
    assert "**" not in text


def test_empty_name_gets_the_fallback() -> None:
    """`default("comrade", true)` covers an empty name."""
    nameless = Recipient(subscriber_id=1, email="x@example.org", name="", attributes={})
    rendered = make_builder().render(nameless, unsubscribe_url=URL)
    assert "Dear comrade," in rendered.text
    assert "Dear comrade," in rendered.html


def test_raw_html_in_markdown_is_sanitised(tmp_path: Path) -> None:
    """Scripts, event handlers and javascript: links written in the Markdown are removed."""
    body = (
        'Hi <b onclick="steal()">there</b><script>alert(1)</script>\n\n'
        "[click](javascript:alert(1)) and <a href='https://ok.example/'>ok</a>\n"
    )
    html = builder_for(tmp_path, body).render(ZOE, unsubscribe_url=URL).html
    assert "<script" not in html
    assert "onclick" not in html
    assert 'href="javascript' not in html
    assert "<b>there</b>" in html
    assert 'href="https://ok.example/"' in html


def test_conditional_blocks_leave_no_empty_paragraphs(tmp_path: Path) -> None:
    """A {% if %} on its own line neither wraps in <p> nor leaves blank-line runs in text."""
    body = (
        "Hello.\n\n{% if subscriber.attributes.city == 'Leeds' %}\n\n"
        "Leeds people: meet at the station.\n\n{% endif %}\n\nBye.\n"
    )
    built = builder_for(tmp_path, body)
    london = Recipient(2, "l@example.org", "L", {"city": "London"})
    leeds = Recipient(3, "d@example.org", "D", {"city": "Leeds"})
    away = built.render(london, unsubscribe_url=URL)
    assert "Leeds people" not in away.html
    assert "<p></p>" not in away.html
    assert "\n\n\n" not in away.text
    assert "Leeds people" in built.render(leeds, unsubscribe_url=URL).text


def test_missing_attribute_without_fallback_raises_template_error(tmp_path: Path) -> None:
    """StrictUndefined: a CSV column the subscriber lacks is an error, unless defaulted."""
    built = builder_for(tmp_path, "From {{ subscriber.attributes.city }}.\n")
    with pytest.raises(TemplateError, match="city"):
        built.render(ZOE, unsubscribe_url=URL)
    (tmp_path / "second").mkdir()
    ok = builder_for(tmp_path / "second", "From {{ subscriber.attributes.city | default('x') }}.\n")
    assert "From x." in ok.render(ZOE, unsubscribe_url=URL).text


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    """Organiser templates cannot reach Python internals (ImmutableSandboxedEnvironment)."""
    with pytest.raises(TemplateError, match="unsafe"):
        builder_for(tmp_path, "{{ subscriber.name.__class__.__mro__ }}\n")


def test_layout_tags_between_table_rows_are_refused(tmp_path: Path) -> None:
    """A tag the HTML parser would move (between <tr>s) is a TemplateError, not a silent bug."""
    layouts = tmp_path / "templates" / "layouts"
    layouts.mkdir(parents=True)
    (layouts / "default.txt.j2").write_text("{{ content }}", encoding="utf-8")
    (layouts / "default.html.j2").write_text(
        "<table>{% if list_name %}<tr><td>{{ content }}</td></tr>{% endif %}</table>",
        encoding="utf-8",
    )
    with pytest.raises(TemplateError, match="would move"):
        builder_for(tmp_path, "Hi\n", templates=tmp_path / "templates")


def test_markdown_text_formats_blocks() -> None:
    """Headings are underlined, tight lists stay tight, links show their URL."""
    text = markdown_text("# Title\n\n- a [site](https://x.example/)\n- b\n\n> quoted\n")
    assert text == ("Title\n=====\n\n* a site <https://x.example/>\n* b\n\n> quoted\n")
