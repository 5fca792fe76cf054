"""Organiser templates are bounded, cannot switch escaping off, and fail as TemplateError.

Each runaway template below finishes on the old code only after building a huge value or
running long loops (and then renders "fine"); here it stops at a limit, reported like any
template problem: the file and the line the tag was written on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.errors import TemplateError
from mailer.message.compose import InvitationBuilder
from mailer.message.lint import validate_event
from mailer.models import Recipient
from test_compose import FRONT_FOR_TESTS, SENDER, TEMPLATES, make_builder

URL = f"{SENDER.base_url}/u/preview-token"
BODY_LINE = FRONT_FOR_TESTS.count("\n") + 1  # the event file's line of the body's first line
CHER = Recipient(3, "cher@example.org", "Cher", {})
LEEDS = Recipient(4, "ann.lee@example.org", "Ann Lee", {"city": "Leeds"})


def event_file(tmp_path: Path, body: str, *, front: str = FRONT_FOR_TESTS) -> Path:
    path = tmp_path / "meeting.md"
    path.write_text(front + body, encoding="utf-8")
    return path


def builder_for(tmp_path: Path, body: str, *, templates: Path = TEMPLATES) -> InvitationBuilder:
    return make_builder(event_path=event_file(tmp_path, body), templates=templates)


RUNAWAY = [
    # (second line of the body, words of the error)
    ("{{ 'a' * 30000000 }}", "'*' would make a value of more than 100,000 characters"),
    ("{{ 7 ** 10000000 }}", "'**' gives a number of more than 4096 bits"),
    ("{{ '{:>30000000}'.format('x') }}", "a format field would make a value"),
    ("{{ ('{0}' * 200).format('x' * 90000) }}", "the formatted string would make a value"),
    ("{{ '%30000000d' % 1 }}", "'%' would make a value"),
    ("{{ 'x'|center(30000000) }}", "the 'center' filter would make a value"),
    ("{{ 'x'.ljust(30000000) }}", "str.ljust() would make a value"),
    ("{{ ('ab' * 40000)|replace('a', 'aaaa') }}", "the 'replace' filter would make a value"),
    ("{{ ['x' * 60000, 'y' * 60000]|join('-') }}", "the 'join' filter would make a value"),
    ("{% set a = 'x' * 60000 %}{% set b = a ~ a %}{{ b }}", "joining strings with '~'"),
    (
        "{% for a in 'x' * 1000 %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}",
        "loops or calls more than 20,000 times",
    ),
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(15) }}",
        "loops or calls more than 20,000 times",
    ),
    (
        "{% for a in 'x' * 15000 %}" + "static text " * 25 + "{% endfor %}",
        "produces more than 2,000,000 characters",
    ),
    ("{{ (5).to_bytes(3000000, 'big') }}", "calling 'to_bytes' is not allowed"),
    ("{{ 5|round(-1000000) }}", "precision of at most 1000"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
]


@pytest.mark.parametrize(("expression", "words"), RUNAWAY)
def test_runaway_templates_stop_at_a_limit_with_file_and_line(
    tmp_path: Path, expression: str, words: str
) -> None:
    """Sizes (repetition, powers, format widths, replace/join/~ results), loop and call
    steps, and output are bounded; the error names the event file and the tag's line."""
    path = event_file(tmp_path, f"Hello.\n{expression}\n")
    with pytest.raises(TemplateError) as caught:
        make_builder(event_path=path)
    assert (caught.value.path, caught.value.line) == (path, BODY_LINE + 1)
    assert words in str(caught.value)


def test_validate_reports_a_runaway_template_instead_of_ok(tmp_path: Path) -> None:
    """The issue's case: validate computed for seconds, then said OK; now it stops at once."""
    path = event_file(tmp_path, "Hi {{ subscriber.first_name }},\n\n{{ 'a' * 300000000 }}\n")
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert [(p.path, p.line) for p in problems] == [(path, BODY_LINE + 2)]
    assert "'*' would make a value of more than 100,000 characters" in str(problems[0])
    assert "loop without end" in str(problems[0].hint)


def test_a_limit_reached_in_a_layout_names_the_layout_line(tmp_path: Path) -> None:
    """A tag in a layout is reported at the layout's own file and line."""
    layouts = tmp_path / "templates" / "layouts"
    layouts.mkdir(parents=True)
    (layouts / "default.txt.j2").write_text("{{ content }}\n", encoding="utf-8")
    (layouts / "default.html.j2").write_text(
        "<html><body>\n<div>{{ content }}</div>\n<p>{{ '-' * 10000000 }}</p>\n</body></html>\n",
        encoding="utf-8",
    )
    built = builder_for(tmp_path, "Hi\n", templates=tmp_path / "templates")
    with pytest.raises(TemplateError) as caught:
        built.render(LEEDS, unsubscribe_url=URL)
    assert (caught.value.path, caught.value.line) == (layouts / "default.html.j2", 3)
    assert "'*' would make a value" in str(caught.value)


def test_ordinary_templates_render_as_before(tmp_path: Path) -> None:
    """Loops, macros, filters, `~`, `*`, `%`, format_map and allowed methods still work,
    with the output they always had (escaped in HTML)."""
    body = (
        "{% macro tag(word) %}[{{ word|upper }}]{% endmacro %}"
        "{% for word in subscriber.name.split() %}{{ tag(word) }}{% endfor %}\n"
        "{{ '{city}'.format_map(subscriber.attributes) }} {{ '%s-%d' % ('n', 3) }} "
        "{{ ['a', 'b']|join('+') }} {{ '=' * 3 }} {{ 'x' ~ subscriber.email }} "
        "{{ subscriber.attributes.get('branch', 'none') }} {{ (2 ** 10) + 1 }}\n"
    )
    rendered = builder_for(tmp_path, body).render(LEEDS, unsubscribe_url=URL)
    expected = "[ANN][LEE] Leeds n-3 a+b === xann.lee@example.org none 1025"
    assert expected in " ".join(rendered.text.split())  # the text part is wrapped at 72
    assert "[ANN][LEE]" in rendered.html


def test_autoescape_false_is_refused_in_the_event_body(tmp_path: Path) -> None:
    """`{% autoescape false %}` would print subscriber data unescaped in the HTML:
    validate reports its line, and building the campaign's messages refuses it."""
    body = "Hello\n{% autoescape false %}{{ subscriber.name }}{% endautoescape %}\n"
    path = event_file(tmp_path, body)
    problems = validate_event(path, templates_dir=TEMPLATES)
    assert [(p.path, p.line) for p in problems] == [(path, BODY_LINE + 1)]
    assert "{% autoescape %} is not allowed" in str(problems[0])
    with pytest.raises(TemplateError) as caught:
        make_builder(event_path=path)  # what `mailer send` does, without validate
    assert (caught.value.path, caught.value.line) == (path, BODY_LINE + 1)
    assert "{% autoescape %} is not allowed" in str(caught.value)


def test_autoescape_false_is_refused_in_a_layout(tmp_path: Path) -> None:
    """The same in a layout, named with the layout's file and line."""
    layouts = tmp_path / "templates" / "layouts"
    layouts.mkdir(parents=True)
    (layouts / "default.txt.j2").write_text("{{ content }}\n", encoding="utf-8")
    html = layouts / "default.html.j2"
    html.write_text(
        "<html><body>\n<div>{{ content }}</div>\n"
        "<p>{% autoescape false %}{{ subscriber.name }}{% endautoescape %}</p>\n</body></html>\n",
        encoding="utf-8",
    )
    path = event_file(tmp_path, "Hi\n")
    problems = validate_event(path, templates_dir=tmp_path / "templates")
    assert [(p.path, p.line) for p in problems] == [(html, 3)]
    with pytest.raises(TemplateError) as caught:
        make_builder(event_path=path, templates=tmp_path / "templates")
    assert (caught.value.path, caught.value.line) == (html, 3)


def test_format_map_missing_key_is_a_template_error_for_that_recipient(tmp_path: Path) -> None:
    """The issue's KeyError: a subscriber without `city` gets a TemplateError naming the
    file and line; a subscriber with it renders, so one bad row cannot kill a sender."""
    body = "Hello.\n\nSee you in {{ '{city}'.format_map(subscriber.attributes) }}.\n"
    path = event_file(tmp_path, body)
    built = make_builder(event_path=path)
    with pytest.raises(TemplateError) as caught:
        built.render(CHER, unsubscribe_url=URL)
    assert (caught.value.path, caught.value.line) == (path, BODY_LINE + 2)
    assert "KeyError: 'city'" in str(caught.value)
    assert "See you in Leeds." in built.render(LEEDS, unsubscribe_url=URL).text


def test_index_out_of_range_is_a_template_error_for_that_recipient(tmp_path: Path) -> None:
    """IndexError from str.format (a one-word name) is a TemplateError with file and line."""
    body = (
        "Hello.\n{% if subscriber.name %}\n"
        "{{ '{1}, {0}'.format(*subscriber.name.split()) }}\n{% endif %}\n"
    )
    path = event_file(tmp_path, body)
    built = make_builder(event_path=path)
    with pytest.raises(TemplateError) as caught:
        built.render(CHER, unsubscribe_url=URL)
    assert (caught.value.path, caught.value.line) == (path, BODY_LINE + 2)
    assert "IndexError" in str(caught.value)
    assert "Lee, Ann" in built.render(LEEDS, unsubscribe_url=URL).text


def test_an_error_in_a_macro_names_the_line_inside_the_macro(tmp_path: Path) -> None:
    """The innermost template line is reported, not the line that called the macro."""
    body = (
        "{% macro place(attributes) %}\n"
        "  {{ '{city}'.format_map(attributes) }}\n"
        "{% endmacro %}\n"
        "Hello {{ subscriber.name }} from {{ place(subscriber.attributes) }}.\n"
    )
    path = event_file(tmp_path, body)
    with pytest.raises(TemplateError) as caught:
        make_builder(event_path=path).render(CHER, unsubscribe_url=URL)
    assert (caught.value.path, caught.value.line) == (path, BODY_LINE + 1)


def test_an_error_in_the_subject_names_the_subject_line(tmp_path: Path) -> None:
    """A subject tag failing for one recipient points at the `subject:` line."""
    front = FRONT_FOR_TESTS.replace(
        'subject: "Invitation"',
        "subject: \"Invitation {{ '{city}'.format_map(subscriber.attributes) }}\"",
    )
    path = event_file(tmp_path, "Hi\n", front=front)
    built = make_builder(event_path=path)
    with pytest.raises(TemplateError) as caught:
        built.render(CHER, unsubscribe_url=URL)
    assert (caught.value.path, caught.value.line) == (path, 3)
    assert built.render(LEEDS, unsubscribe_url=URL).subject == "Invitation Leeds"
