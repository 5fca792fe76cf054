"""Jinja2 for organiser-written templates: sandboxed environments, static checks, placeholders.

Organisers write the event body and the layouts, so those run in Jinja2's
ImmutableSandboxedEnvironment with StrictUndefined and *no* globals: nothing from the
settings or the process environment is reachable, only the context we pass.

Placeholders are how templates are compiled once per campaign although Markdown and CSS
inlining have to see the whole document: every Jinja tag is swapped for an inert token,
the document is converted/inlined once, then the tokens are swapped back, leaving a
single compiled template per part that only has to fill in the personal values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.errors import TemplateError

# The names a template may use; anything else is a typo we report before sending.
CONTEXT_NAMES = frozenset({"subscriber", "event", "calendar_url", "unsubscribe_url", "list_name"})
SUBSCRIBER_FIELDS = frozenset({"name", "first_name", "email", "attributes"})
EVENT_FIELDS = frozenset(
    {"title", "venue", "address", "location", "map_url", "url", "organiser", "when", "ends"}
    | {"date", "time", "end_time", "timezone", "zone_abbr"}
)
_URL_SCHEMES = ("https://", "http://", "mailto:", "tel:")


def safe_url(value: object) -> str:
    """Jinja filter for values that start an href: only web, mail and phone links."""
    text = str(value).strip()
    return text if text.lower().startswith(_URL_SCHEMES) else "#"


def make_environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    """A sandbox with StrictUndefined, no globals, and autoescape only for HTML."""
    env = ImmutableSandboxedEnvironment(
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.globals.clear()
    env.filters["safe_url"] = safe_url
    # Subscriber data must always be escaped in HTML; `safe` would let a template undo that.
    env.filters.pop("safe", None)
    return env


# -- finding the tags ------------------------------------------------------------------

_OPEN = re.compile(r"\{\{|\{%|\{#")
_CLOSE = {"{{": "}}", "{%": "%}", "{#": "#}"}
_RAW = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_ENDRAW = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)


def split_tags(source: str) -> list[tuple[bool, str]]:
    """Split template source into (is_tag, text) pieces; text inside {% raw %} is data."""
    pieces: list[tuple[bool, str]] = []
    pos = 0
    while (match := _OPEN.search(source, pos)) is not None:
        if match.start() > pos:
            pieces.append((False, source[pos : match.start()]))
        if (raw := _RAW.match(source, match.start())) is not None:
            end = _ENDRAW.search(source, raw.end())
            stop = end.start() if end else len(source)
            pieces += [(True, raw.group()), (False, source[raw.end() : stop])]
            if end:
                pieces.append((True, end.group()))
            pos = end.end() if end else len(source)
            continue
        close = _CLOSE[match.group()]
        cursor = match.end()
        while True:  # skip string literals, which may contain the closing delimiter
            end_at = source.find(close, cursor)
            quote = _STRING.search(source, cursor) if match.group() != "{#" else None
            if end_at == -1:
                end_at = len(source) - len(close)
                break
            if quote is None or quote.start() > end_at:
                break
            cursor = quote.end()
        pieces.append((True, source[match.start() : end_at + len(close)]))
        pos = end_at + len(close)
    if pos < len(source):
        pieces.append((False, source[pos:]))
    return pieces


@dataclass
class Placeholders:
    """Tokens standing in for Jinja tags while a document goes through Markdown/CSS tools."""

    prefix: str
    tags: list[str]

    @classmethod
    def for_sources(cls, *sources: str) -> Placeholders:
        # Letters and digits only, so Markdown, HTML serialisers and URL normalisers leave
        # them alone; the prefix is chosen not to occur in any source.
        n = 0
        while any(f"zq{n}jx" in s for s in sources):
            n += 1
        return cls(prefix=f"zq{n}jx", tags=[])

    def protect(self, source: str) -> str:
        out: list[str] = []
        for is_tag, text in split_tags(source):
            if is_tag:
                out.append(self.token(len(self.tags)))
                self.tags.append(text)
            else:
                out.append(text)
        return "".join(out)

    def token(self, index: int) -> str:
        return f"{self.prefix}{index}q"

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.prefix) + r"(\d+)q")

    def is_statement(self, index: int) -> bool:
        return not self.tags[index].startswith("{{")

    def restore(self, text: str, *, url_wrap: Iterable[int] = ()) -> str:
        wrap = set(url_wrap)

        def put_back(match: re.Match[str]) -> str:
            index = int(match.group(1))
            tag = self.tags[index]
            if index in wrap and (inner := _EXPR.fullmatch(tag)) is not None:
                return f"{{{{{inner.group(1)} ({inner.group(2)})|safe_url {inner.group(3)}}}}}"
            return tag

        return self.pattern().sub(put_back, text)


_EXPR = re.compile(r"\{\{([-+]?)(.*?)([-+]?)\}\}", re.DOTALL)


# -- static checks -----------------------------------------------------------------------


def parse_checked(
    env: jinja2.Environment, source: str, *, path: Path, first_line: int, extra: frozenset[str]
) -> list[TemplateError]:
    """Syntax errors and unknown names in `source`, with lines counted from `first_line`."""
    padded = "\n" * (first_line - 1) + source  # so Jinja's line numbers are the file's
    try:
        tree = env.parse(padded)
        env.compile(tree)  # unknown filters and tests are found at compile time
    except jinja2.TemplateSyntaxError as exc:
        return [TemplateError(f"template syntax error: {exc.message}", path=path, line=exc.lineno)]
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    allowed = CONTEXT_NAMES | extra | assigned | {"loop", "true", "false", "none"}
    problems: list[TemplateError] = []
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in allowed:
            problems.append(_unknown(f"'{name.name}' is undefined", path, name.lineno))
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name):
            known = {"subscriber": SUBSCRIBER_FIELDS, "event": EVENT_FIELDS}.get(attr.node.name)
            if known is not None and attr.attr not in known:
                message = f"'{attr.node.name}.{attr.attr}' is undefined"
                problems.append(_unknown(message, path, attr.lineno))
    return sorted(problems, key=lambda e: e.line or 0)


def _unknown(message: str, path: Path, line: int) -> TemplateError:
    hint = (
        f"Known names: {', '.join(sorted(CONTEXT_NAMES))}; subscriber fields: "
        f"{', '.join(sorted(SUBSCRIBER_FIELDS))}; CSV columns are subscriber.attributes.NAME."
    )
    return TemplateError(message, path=path, line=line, hint=hint)


def render_error(exc: Exception, *, path: Path | None, what: str) -> TemplateError:
    """Turn a Jinja runtime error into a TemplateError naming the template."""
    line = getattr(exc, "lineno", None)
    hint = 'Give empty or missing fields a fallback: {{ subscriber.attributes.city | default("") }}'
    return TemplateError(f"{what}: {exc}", path=path, line=line, hint=hint)


class _Structure(HTMLParser):
    """Tracks open elements to find text the HTML5 parser would foster-parent elsewhere."""

    VOID = frozenset(
        [
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        ]
    )
    NO_TEXT = frozenset(
        ["html", "head", "table", "thead", "tbody", "tfoot", "tr", "colgroup", "select"]
    )

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.pattern = pattern
        self.stack = ["#document"]
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if self.stack[-1] in self.NO_TEXT:
            self.bad += self.pattern.findall(data)


def misplaced_tag(ph: Placeholders, html: str) -> str | None:
    """The first tag that sits where an HTML5 parser would not keep text, if any."""
    checker = _Structure(ph.pattern())
    checker.feed(html)
    checker.close()
    return repr(ph.tags[int(checker.bad[0])]) if checker.bad else None
