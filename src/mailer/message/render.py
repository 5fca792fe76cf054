"""Event + layout templates -> subject, text and HTML for one subscriber.

Everything that does not depend on the subscriber happens once per campaign in
`Renderer.__init__`: Markdown -> HTML (markdown-it-py), sanitising (nh3), placing the
body in the layout, CSS inlining (css_inline), and Markdown -> plain text. The Jinja tags
ride through those tools as placeholders (see templating.py) and come back as one
compiled template per part, so per recipient only Jinja runs: ~25 µs instead of the
~1 ms that Markdown plus CSS inlining would cost each time.
"""

from __future__ import annotations

import html
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import compress, groupby
from pathlib import Path
from typing import Any, Generic, TypeVar

import css_inline
import jinja2
import nh3
from markdown_it.token import Token

from mailer.errors import TemplateError
from mailer.message.calendar import calendar_links
from mailer.message.dates import clock, day, format_when
from mailer.message.event import Event
from mailer.message.layouts import find_layout
from mailer.message.sandbox import RENDER_FAILURES, BoundedSandbox
from mailer.message.sandbox import render as render_bounded
from mailer.message.templating import (
    Origin,
    Placeholders,
    SourceLines,
    front_matter_line,
    make_environment,
    misplaced_tag,
    render_error,
)
from mailer.message.wrapping import fill
from mailer.models import Recipient, RenderedMessage

_CONTENT = re.compile(r"\{\{[-+]?\s*content\s*[-+]?\}\}")
_URL_SCHEMES = {"http", "https", "mailto", "tel"}


def event_context(event: Event, *, calendar_url: str) -> dict[str, Any]:
    start, end = event.starts_at, event.ends
    same_day = start.date() == end.date()
    return {
        "title": event.title,
        # Empty rather than None for an online-only event: a layout written before online
        # events existed shows an empty field, not the word "None".
        "venue": event.venue or "",
        "address": event.address or "",
        "location": event.location,
        "online_url": event.online_url,
        "map_url": event.map_url,
        "url": event.url,
        "organiser": {"name": event.organiser.name, "email": event.organiser.email},
        "when": format_when(start),
        "ends": f"{clock(end)} {end.tzname()}" if same_day else format_when(end),
        "date": day(start),
        "time": clock(start),
        "end_time": clock(end),
        "timezone": event.timezone,
        "zone_abbr": start.tzname() or event.timezone,
        "calendar_url": calendar_url,
    }


def subscriber_context(recipient: Recipient) -> dict[str, Any]:
    words = recipient.name.split()
    return {
        "name": recipient.name,
        "first_name": words[0] if words else "",
        "email": recipient.email,
        # A copy, except the sample's Blank, whose every column reads as empty.
        "attributes": (
            recipient.attributes
            if isinstance(recipient.attributes, Blank)
            else dict(recipient.attributes)
        ),
    }


def markdown_html(source: str, placeholders: Placeholders) -> str:
    """Markdown (with placeholders) -> sanitised HTML; raw HTML in the Markdown is cleaned."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "linkify": True})
    md.enable(["table", "strikethrough", "linkify"])
    # Bare http(s):// URLs and e-mail addresses become links; names without a scheme do
    # not ("readme.md" would link to Moldova, "node.js" nowhere).
    if md.linkify is not None:  # linkify-it-py (a dependency); markdown-it fails without it
        md.linkify.set({"fuzzy_link": False})
    html = md.render(source)
    # A paragraph holding only {% if %}/{% endif %} tags would leave an empty <p> behind.
    only_tags = re.compile(rf"<p>((?:{re.escape(placeholders.prefix)}(\d+)q\s*)+)</p>\n?")

    def unwrap(match: re.Match[str]) -> str:
        indices = [int(i) for i in placeholders.pattern().findall(match.group(1))]
        return match.group(1) if all(map(placeholders.is_statement, indices)) else match.group()

    html = only_tags.sub(unwrap, html)
    return str(nh3.clean(html, url_schemes=_URL_SCHEMES))


# -- the plain-text part, written from the Markdown source (not scraped from the HTML) ----

WIDTH = 72
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_PREFIX = re.compile(r"[ >]*(?:[*-] |\d+\. )?")
_LONG = WIDTH + 6  # a longer line is re-wrapped


def _wrap(text: str, first: str, rest: str) -> str:
    # break_long_words/hyphens off: a URL must stay on one line to stay clickable.
    lines: list[str] = []
    for n, segment in enumerate(text.split("\n")):  # hard breaks stay
        lines += fill(segment, WIDTH, first=first if n == 0 else rest, rest=rest) or [rest.rstrip()]
    return "\n".join(lines)


def _inline(token: Token) -> str:
    parts: list[str] = []
    links: list[tuple[str, int]] = []
    for child in token.children or []:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link_open":
            links.append((str(child.attrs.get("href", "")), len(parts)))
        elif kind == "link_close" and links:
            href, start = links.pop()
            label = "".join(parts[start:])
            if href and href not in (label, f"mailto:{label}"):
                parts.append(f" <{href}>")  # RFC 3986 appendix C: delimit URLs in text
        elif kind == "image":
            parts.append(f"{child.content} <{child.attrs.get('src', '')}>")
    return "".join(parts)


def markdown_text(source: str) -> str:
    """Markdown -> plain text wrapped near 72 columns, links kept as visible URLs."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(source)
    out: list[str] = []
    quote, marker, heading = "", "", ""
    lists: list[int] = []  # per open list: next number, or 0 for bullets
    row: list[str] | None = None
    tight = was_tight = False  # tight list items are separated by a newline, not a blank line

    def emit(text: str) -> None:
        nonlocal was_tight
        if out:
            out.append("\n" if tight and was_tight else "\n\n")
        out.append(text)
        was_tight = tight

    for token in tokens:
        kind = token.type
        indent = "   " * max(len(lists) - 1, 0)
        if kind == "blockquote_open":
            quote += "> "
        elif kind == "blockquote_close":
            quote = quote[:-2]
        elif kind in ("bullet_list_open", "ordered_list_open"):
            lists.append(int(token.attrs.get("start", 1)) if kind == "ordered_list_open" else 0)
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            marker = f"{lists[-1]}. " if lists[-1] else "* "
            lists[-1] += 1 if lists[-1] else 0
        elif kind == "paragraph_open":
            tight = token.hidden
        elif kind == "heading_open":
            heading, tight = token.tag, False
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            tight = True
            emit(quote + " | ".join(row))
            row = None
        elif kind == "inline" and row is not None:
            row.append(_inline(token))
        elif kind == "inline":
            text = _inline(token)
            first, rest = quote + indent + marker, quote + indent + " " * len(marker)
            if heading in ("h1", "h2"):
                rule = ("=" if heading == "h1" else "-") * min(len(text), WIDTH)
                emit(f"{first}{text}\n{first}{rule}")
            else:
                emit(_wrap(text, first, rest))
            marker, heading = "", ""
        elif kind in ("fence", "code_block"):
            tight = False
            emit("\n".join(f"{quote}{indent}    {line}" for line in token.content.splitlines()))
        elif kind == "hr":
            tight = False
            emit(quote + "-" * 24)
        elif kind == "html_block":
            tight = False
            stripped = html.unescape(re.sub(r"<[^>]*>", " ", token.content))
            emit(_wrap(" ".join(stripped.split()), quote, quote))
    return "".join(out).rstrip() + "\n"


def tidy_text(text: str, cache: dict[str, str] | None = None) -> str:
    """Per recipient: collapse blank lines left by {% if %}s, re-wrap lines a value made long.

    `cache` remembers re-wrapped lines: a static long line (a label and a URL) recurs in
    every message. Only the long lines are visited, picked out in C (`map(len)`,
    `compress`; a regex for them cost ~11 µs on the example's 2.4 KB); a line with a
    personal link (the RSVP ones) is new every time, and is filled by wrapping.fill
    (~1 µs where textwrap took ~10). A renderer goes through TextTidier, which takes
    most of a message as a whole (CommonLines).
    """
    lines = _collapse(text).split("\n")
    _tidy_lines(lines, cache)
    return "\n".join(lines)


def _collapse(text: str) -> str:
    """`text` with each run of two or more blank lines made one empty line, without empty
    lines at its start or end, and ending in "\\n"."""
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


def _tidy_lines(lines: list[str], cache: dict[str, str] | None) -> None:
    """Each long line of `lines` re-wrapped, in place."""
    for n in compress(range(len(lines)), map(_LONG.__lt__, map(len, lines))):
        lines[n] = _tidy_line(lines[n], cache)


def _tidy_line(line: str, cache: dict[str, str] | None) -> str:
    if len(line) <= _LONG or " " not in line.strip():
        return line
    done = cache.get(line) if cache is not None else None
    if done is None:
        prefix = _PREFIX.match(line)
        lead = prefix.group() if prefix else ""
        rest = lead if lead.strip(" ") == ">" * lead.count(">") else " " * len(lead)
        done = _wrap(line[len(lead) :], lead, rest)
        if cache is not None and len(cache) < 1024:
            cache[line] = done
    return done


class TextTidier:
    """tidy_text for one campaign's messages: the same text, ~4 µs sooner a message.

    Splitting the example's 2.4 KB into lines and finding the long ones cost ~7 µs, yet
    all of its lines but five are the same in every message. So the lines a message has
    in common with the others are taken as a whole (CommonLines), and only its personal
    lines are looked at. Collapsing blank lines stays a pass over the whole text (~3 µs):
    a value left empty can make a run of them anywhere.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, str] = {}
        self._common: CommonLines[str] = CommonLines("\n")

    def __call__(self, text: str) -> str:
        text = _collapse(text)
        if (done := self._common.apply(text, self._line)) is not None:
            return done
        lines = text.split("\n")
        tidied = lines.copy()
        _tidy_lines(tidied, self._wrapped)
        self._common.learn(lines, tidied)
        return "\n".join(tidied)

    def _line(self, line: str) -> str:
        return _tidy_line(line, self._wrapped)


_Done = TypeVar("_Done", str, bytes)


class CommonLines(Generic[_Done]):
    """What a campaign's messages have in common, learnt line by line, so that a message
    is taken run by run and only its personal lines are looked at.

    Splitting a text into lines and hashing each (to look it up) are steps per
    character, ~1 ns each here: ~13 µs for the example's 7 KB HTML. Two messages with as
    many lines show the runs of lines they share and the personal lines between them
    (the greeting, the links); a later message of that shape is checked run by run with
    `startswith`, a run only where a line starts and up to a "\\n": a memcmp, or a step
    per character if a name beyond Latin-1 made the message a wider string (~6 µs
    instead of ~3 for the HTML). What the runs became is taken as it was; each personal
    line is made anew (`line`, which must depend on nothing else). A message of another
    shape is left to the caller, who takes it line by line and gives its lines to `learn`.
    """

    def __init__(self, separator: _Done) -> None:
        """`separator`: what joins what the lines became ("\\n", or b"\\r\\n")."""
        self._separator: _Done = separator
        # Each part of the shape: a run of lines, each with its "\n", or None for a
        # personal line; and what the run became.
        self._runs: list[str | None] = []
        self._done: list[_Done] = []
        self._previous: list[str] = []

    def apply(self, text: str, line: Callable[[str], _Done]) -> _Done | None:
        """What the lines of `text` become, joined; None if `text` is not of the shape."""
        if not self._runs:
            return None
        text += "\n"  # every line ends in "\n"
        pieces: list[_Done] = []
        at = 0
        for run, done in zip(self._runs, self._done, strict=True):
            if run is None:
                end = text.find("\n", at)
                if end == -1:
                    return None
                pieces.append(line(text[at:end]))
                at = end + 1
            elif text.startswith(run, at):
                pieces.append(done)
                at += len(run)
            else:
                return None
        return self._separator.join(pieces) if at == len(text) else None

    def learn(self, lines: list[str], done: list[_Done]) -> None:
        """The shape of these lines (`done`: what each became) and those given last time,
        if they are as many and the shape has at most half as many parts as lines."""
        previous, self._previous = self._previous, lines
        if len(previous) != len(lines):
            return
        common = list(map(operator.eq, lines, previous))
        personal = common.count(False)
        if 2 * (2 * personal + 1) > len(lines):  # the parts: personal lines, runs between
            return
        runs: list[str | None] = []
        runs_done: list[_Done] = []
        start = 0
        for same, group in groupby(common):
            end = start + sum(1 for _ in group)
            if same:
                runs.append("\n".join(lines[start:end]) + "\n")
                runs_done.append(self._separator.join(done[start:end]))
            else:
                runs += [None] * (end - start)
                runs_done += [self._separator[:0]] * (end - start)
            start = end
        self._runs, self._done = runs, runs_done


@dataclass(frozen=True, slots=True)
class _Part:
    """One compiled template, where its lines were written, and what to call it in errors."""

    template: jinja2.Template
    lines: SourceLines
    what: str


class Renderer:
    """One event's templates, compiled once; `render` fills in one subscriber."""

    def __init__(
        self,
        event: Event,
        *,
        templates_dir: Path,
        list_name: str,
        calendar_url: str,
        calendar: Mapping[str, str] | None = None,
        postal_address: str = "",
    ) -> None:
        """`calendar`: the layouts' `calendar.google`, `.outlook` and `.ics` links (`.ics`
        empty when no campaign serves one); by default made here, without `.ics`."""
        self.event = event
        self._html_env = make_environment(html=True)
        self._text_env = make_environment(html=False)
        self._body_origin = Origin(event.path, event.body_line)
        self._tidy = TextTidier()
        self._shared = {
            "event": event_context(event, calendar_url=calendar_url),
            "calendar_url": calendar_url,
            "calendar": dict(calendar) if calendar is not None else _links(event, calendar_url),
            "list_name": list_name,
            # Issue 10: the inbox preview line, and the sender's postal address (footer).
            "preheader": event.preheader or "",
            "postal_address": postal_address,
        }
        layout = find_layout(event.layout, event_path=event.path, templates_dir=templates_dir)
        html_layout = read_template(layout.html)
        text_layout = read_template(layout.text)
        css = read_template(layout.css) if layout.css is not None else None
        # What the messages are made from besides the event (sending.run.message_fingerprint).
        self.layout_sources = (html_layout, text_layout, css or "")
        self._html = self._compile_html(html_layout, css, layout.html)
        self._text, body_text = self._compile_text(text_layout, layout.text)
        self._subject = self._compile_subject() if "{" in event.subject else None
        anonymous = {"name": "", "first_name": "", "email": "", "attributes": Blank()}
        self.description_text = tidy_text(self._call(body_text, anonymous, ""))

    def render(
        self, recipient: Recipient, *, unsubscribe_url: str, rsvp_url: str | None = None
    ) -> RenderedMessage:
        """Subject, text and HTML for one subscriber; raises TemplateError (file, line).

        `rsvp_url`: the guest's RSVP page (issue 14); the layouts show "I'll come",
        "Maybe" and "Can't come" links to it, each naming its answer, when given."""
        subscriber = subscriber_context(recipient)
        rsvp = rsvp_links(rsvp_url)
        subject = self.event.subject
        if self._subject is not None:
            subject = " ".join(self._call(self._subject, subscriber, unsubscribe_url, rsvp).split())
        text = self._tidy(self._call(self._text, subscriber, unsubscribe_url, rsvp))
        html = self._call(self._html, subscriber, unsubscribe_url, rsvp)
        return RenderedMessage(subject=subject, text=text, html=html)

    # -- internals ----------------------------------------------------------------------

    def _call(
        self,
        part: _Part,
        subscriber: Mapping[str, Any],
        url: str,
        rsvp: Mapping[str, str] | None = None,
    ) -> str:
        try:
            return render_bounded(
                part.template,
                self._shared,
                subscriber=subscriber,
                unsubscribe_url=url,
                rsvp=rsvp,
            )
        except RENDER_FAILURES as exc:
            raise render_error(exc, lines=part.lines, what=f"rendering the {part.what}") from exc

    def _compile(self, env: BoundedSandbox, source: str, lines: SourceLines, what: str) -> _Part:
        try:
            template = env.compile_template(source)
        except jinja2.TemplateSyntaxError as exc:
            raise render_error(exc, lines=lines, what=f"compiling the {what}") from exc
        # A template keeps the environment's globals (none: make_environment) in a
        # ChainMap, which each render walks twice in Python (new_context, Context): the
        # same names in a dict save ~1.5 µs a render.
        template.globals = dict(template.globals)
        return _Part(template, lines, what)

    def _compile_subject(self) -> _Part:
        ph = Placeholders.for_sources(self.event.subject)
        origin = Origin(self.event.path, front_matter_line(self.event.path, "subject"))
        source, lines = ph.restore(ph.protect(self.event.subject, origin), default=self.event.path)
        return self._compile(self._text_env, source, lines, "subject")

    def _compile_html(self, layout: str, css: str | None, layout_path: Path) -> _Part:
        ph = Placeholders.for_sources(self.event.description, layout)
        body = markdown_html(ph.protect(self.event.description, self._body_origin), ph)
        merged = _insert_content(ph, ph.protect(layout, Origin(layout_path, 1)), body, layout_path)
        misplaced = misplaced_tag(ph, merged)
        inlined = css_inline.CSSInliner(
            keep_at_rules=True, load_remote_stylesheets=False, extra_css=css
        ).inline(merged)
        if misplaced is None and ph.pattern().findall(inlined) != ph.pattern().findall(merged):
            misplaced = "a tag"  # e.g. inside <style>, which the inliner rewrites
        if misplaced is not None:
            raise TemplateError(
                f"the Jinja tag {misplaced} sits where HTML cannot hold text (between table "
                "rows, in <head> or <style>), so the HTML parser would move or drop it",
                path=layout_path,
                hint="Put the tag inside an element such as <td>, <div> or <p>.",
            )
        starts_href = re.findall(rf'="{re.escape(ph.prefix)}(\d+)q', inlined)
        source, lines = ph.restore(
            inlined, url_wrap=(int(i) for i in starts_href), default=self.event.path
        )
        return self._compile(self._html_env, source, lines, "HTML part")

    def _compile_text(self, layout: str, layout_path: Path) -> tuple[_Part, _Part]:
        ph = Placeholders.for_sources(self.event.description, layout)
        body = markdown_text(ph.protect(self.event.description, self._body_origin))
        merged = _insert_content(ph, ph.protect(layout, Origin(layout_path, 1)), body, layout_path)
        return (
            self._compile(
                self._text_env, *ph.restore(merged, default=self.event.path), "text part"
            ),
            self._compile(self._text_env, *ph.restore(body, default=self.event.path), "body"),
        )


def rsvp_links(url: str | None) -> dict[str, str] | None:
    """The layouts' `rsvp`: the page, and the page naming each answer (which the page
    offers first; only the page's own button records it)."""
    if url is None:
        return None
    return {"url": url, **{answer: f"{url}?answer={answer}" for answer in ("yes", "maybe", "no")}}


def _links(event: Event, google: str) -> dict[str, str]:
    return {"google": google, "outlook": calendar_links(event).outlook, "ics": ""}


class Blank(dict[str, str]):
    """Attributes for the subscriber-less render (the .ics description): every column empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _insert_content(ph: Placeholders, layout: str, body: str, layout_path: Path) -> str:
    slots = [i for i, tag in enumerate(ph.tags) if _CONTENT.fullmatch(tag)]
    if not slots:
        raise TemplateError("the layout has no {{ content }} tag for the body", path=layout_path)
    for index in slots:
        layout = layout.replace(ph.token(index), body)
    return layout


def read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read the template: {exc}", path=path) from exc
