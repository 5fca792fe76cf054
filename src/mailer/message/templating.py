"""Jinja2 for organiser-written templates: sandboxed environments, static checks, placeholders.

Organisers write the event body and the layouts, so those run in Jinja2's
ImmutableSandboxedEnvironment, bounded in size and steps (sandbox.py), with
StrictUndefined and *no* globals: nothing from the settings or the process environment is
reachable, only the context we pass.

Placeholders are how templates are compiled once per campaign although Markdown and CSS
inlining have to see the whole document: every Jinja tag is swapped for an inert token,
the document is converted/inlined once, then the tokens are swapped back, leaving a
single compiled template per part that only has to fill in the personal values.

Each placeholder remembers the file and line its tag came from, and each tag is restored
with its content starting on a line of its own, so a render error (which Jinja knows by
the compiled template's line) is reported at the line of the event file or layout the
organiser wrote.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import jinja2
from jinja2 import nodes

from mailer.errors import TemplateError
from mailer.message.limits import TemplateLimitError
from mailer.message.sandbox import (
    AUTOESCAPE_REFUSED,
    TEMPLATE_FILENAME,
    BoundedSandbox,
    autoescape_lines,
)

# The names a template may use; anything else is a typo we report before sending.
CONTEXT_NAMES = frozenset(
    {"subscriber", "event", "calendar_url", "calendar", "unsubscribe_url", "list_name"}
    | {"preheader", "postal_address", "rsvp"}
)
SUBSCRIBER_FIELDS = frozenset({"name", "first_name", "email", "attributes"})
EVENT_FIELDS = frozenset(
    {"title", "venue", "address", "location", "map_url", "url", "organiser", "when", "ends"}
    | {"date", "time", "end_time", "timezone", "zone_abbr", "online_url"}
)
_URL_SCHEMES = ("https://", "http://", "mailto:", "tel:")


def safe_url(value: object) -> str:
    """Jinja filter for values that start an href: only web, mail and phone links."""
    text = str(value).strip()
    return text if text.lower().startswith(_URL_SCHEMES) else "#"


def make_environment(*, html: bool) -> BoundedSandbox:
    """A bounded sandbox (see sandbox.py) with StrictUndefined, no globals, and autoescape
    only for HTML."""
    env = BoundedSandbox(
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.globals.clear()  # `range`, `dict`, `namespace`, `cycler`, ... are not offered
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


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a tag was written: the file, and the line its `{{` or `{%` is on."""

    path: Path
    line: int


class SourceLines:
    """Maps lines of a compiled template back to the file lines its tags came from."""

    def __init__(self, default: Path) -> None:
        self.default = default  # named when no tag's origin is known
        self._firsts: list[int] = []  # compiled line where each tag's content starts
        self._spans: list[tuple[int, Origin]] = []  # (its last compiled line, origin)

    def add(self, first: int, last: int, origin: Origin) -> None:
        self._firsts.append(first)
        self._spans.append((last, origin))

    def find(self, line: int | None) -> tuple[Path, int | None]:
        """The file and line the compiled template's `line` was written on."""
        index = bisect.bisect_right(self._firsts, line) - 1 if line is not None else -1
        if line is None or index < 0 or self._spans[index][0] < line:
            return self.default, None
        origin = self._spans[index][1]
        return origin.path, origin.line + line - self._firsts[index]


@dataclass
class Placeholders:
    """Tokens standing in for Jinja tags while a document goes through Markdown/CSS tools."""

    prefix: str
    tags: list[str]
    origins: list[Origin | None] = field(default_factory=list)

    @classmethod
    def for_sources(cls, *sources: str) -> Placeholders:
        # Letters and digits only, so Markdown, HTML serialisers and URL normalisers leave
        # them alone; the prefix is chosen not to occur in any source.
        n = 0
        while any(f"zq{n}jx" in s for s in sources):
            n += 1
        return cls(prefix=f"zq{n}jx", tags=[])

    def protect(self, source: str, origin: Origin | None = None) -> str:
        """`source` with its tags replaced by tokens; `origin` is where `source` starts."""
        out: list[str] = []
        line = origin.line if origin is not None else 0
        for is_tag, text in split_tags(source):
            if is_tag:
                out.append(self.token(len(self.tags)))
                self.tags.append(text)
                self.origins.append(Origin(origin.path, line) if origin is not None else None)
            else:
                out.append(text)
            line += text.count("\n")
        return "".join(out)

    def token(self, index: int) -> str:
        return f"{self.prefix}{index}q"

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.prefix) + r"(\d+)q")

    def is_statement(self, index: int) -> bool:
        return not self.tags[index].startswith("{{")

    def restore(
        self, text: str, *, url_wrap: Iterable[int] = (), default: Path
    ) -> tuple[str, SourceLines]:
        """The template source with the tags back, and where its lines came from.

        Each `{{ }}` and `{% %}` tag gets a line break after its opening delimiter (inside
        the tag, where Jinja ignores it), so no two tags share a line and Jinja's line of
        an error names exactly one tag. `default` is named when no origin is known.
        """
        wrap = set(url_wrap)
        lines = SourceLines(default)
        out: list[str] = []
        line, pos = 1, 0
        for match in self.pattern().finditer(text):
            before = text[pos : match.start()]
            line += before.count("\n")
            index = int(match.group(1))
            tag = self.tags[index]
            if index in wrap and (inner := _EXPR.fullmatch(tag)) is not None:
                tag = f"{{{{{inner.group(1)} ({inner.group(2)})|safe_url {inner.group(3)}}}}}"
            if (opening := _OPENING.match(tag)) is not None:
                tag = f"{opening.group()}\n{tag[opening.end() :]}"
                origin = self.origins[index] if index < len(self.origins) else None
                if origin is not None:
                    lines.add(line + 1, line + tag.count("\n"), origin)
            out += [before, tag]
            line += tag.count("\n")
            pos = match.end()
        out.append(text[pos:])
        return "".join(out), lines


# The opening of an expression or statement tag, except {% raw %} (whose body is data).
_OPENING = re.compile(r"(?:\{\{|\{%(?![-+]?\s*(?:end)?raw\b))[-+]?")
_EXPR = re.compile(r"\{\{([-+]?)(.*?)([-+]?)\}\}", re.DOTALL)


# -- static checks -----------------------------------------------------------------------


# A cap on the problems reported per template: a stray `{{` early on can make every later
# tag misread, and a hundred lines about one typo help nobody.
MOST_REPORTED = 20
_UNCLOSED = re.compile(r"innermost block that needs to be closed is '(\w+)'")


def parse_checked(
    env: jinja2.Environment, source: str, *, path: Path, first_line: int, extra: frozenset[str]
) -> tuple[list[TemplateError], str]:
    """Syntax errors and unknown names in `source`, with lines counted from `first_line`,
    and `source` without its syntax errors (for a trial render to find the rest).

    Jinja stops at the first syntax error, so an organiser fixed one, ran the check again
    and met the next: each one found is taken out (its tag blanked, or the block it left
    open closed at the end) and the rest parsed again, so one check reports them all."""
    problems: list[TemplateError] = []
    while True:
        padded = "\n" * (first_line - 1) + source  # so Jinja's line numbers are the file's
        try:
            tree = env.parse(padded)
            env.compile(tree)  # unknown filters and tests are found at compile time
            break
        except jinja2.TemplateSyntaxError as exc:
            problems.append(_syntax_problem(source, exc, path=path, first_line=first_line))
            recovered = _without_syntax_error(source, exc, first_line=first_line)
            if recovered is None or len(problems) >= MOST_REPORTED:
                return problems, source
            source = recovered
    problems += [
        TemplateError(AUTOESCAPE_REFUSED, path=path, line=line) for line in autoescape_lines(tree)
    ]
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    allowed = CONTEXT_NAMES | extra | assigned | {"loop", "true", "false", "none"}
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in allowed:
            problems.append(_unknown(f"'{name.name}' is undefined", path, name.lineno))
    # Jinja leaves a filter or test it does not know inside {% if %} to fail when run,
    # which a sample subscriber may never reach: the organiser's real ones would.
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        kind, known_names = (
            ("filter", env.filters) if isinstance(node, nodes.Filter) else ("test", env.tests)
        )
        if node.name not in known_names:
            message = f"template syntax error: No {kind} named {node.name!r}."
            problems.append(TemplateError(message, path=path, line=node.lineno))
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name):
            known = {"subscriber": SUBSCRIBER_FIELDS, "event": EVENT_FIELDS}.get(attr.node.name)
            if known is not None and attr.attr not in known:
                message = f"'{attr.node.name}.{attr.attr}' is undefined"
                problems.append(_unknown(message, path, attr.lineno))
    return sorted(problems, key=lambda e: e.line or 0), source


def _syntax_problem(
    source: str, exc: jinja2.TemplateSyntaxError, *, path: Path, first_line: int
) -> TemplateError:
    """The syntax error, at its line; a block never closed at the line it was opened on
    (Jinja names the template's last line, where it noticed)."""
    unclosed = _UNCLOSED.search(exc.message or "")
    opened = _opening_line(source, unclosed.group(1), first_line) if unclosed else None
    if unclosed is None or opened is None or "end of template" not in (exc.message or ""):
        return TemplateError(f"template syntax error: {exc.message}", path=path, line=exc.lineno)
    name = unclosed.group(1)
    return TemplateError(
        f"template syntax error: {{% {name} %}} is never closed; end it with {{% end{name} %}}",
        path=path,
        line=opened,
    )


_STATEMENT = re.compile(r"\{%[-+]?\s*(\w+)")


def _opening_line(source: str, name: str, first_line: int) -> int | None:
    """The file line of the innermost `{% name %}` left open in `source`."""
    open_blocks: list[tuple[str, int]] = []
    line = first_line
    for is_tag, text in split_tags(source):
        if is_tag and (word := _STATEMENT.match(text)) is not None:
            keyword = word.group(1)
            if keyword.startswith("end") and open_blocks and open_blocks[-1][0] == keyword[3:]:
                open_blocks.pop()
            elif keyword == name:
                open_blocks.append((keyword, line))
        line += text.count("\n")
    return open_blocks[-1][1] if open_blocks else None


def _without_syntax_error(
    source: str, exc: jinja2.TemplateSyntaxError, *, first_line: int
) -> str | None:
    """`source` past the syntax error `exc`: a block left open is closed at the end, else
    the tags on its line are blanked; None when neither changes anything."""
    if (unclosed := _UNCLOSED.search(exc.message or "")) is not None and "end of template" in (
        exc.message or ""
    ):
        return f"{source}{{% end{unclosed.group(1)} %}}"
    if exc.lineno is None:
        return None
    return blank_tags_on(source, exc.lineno, first_line=first_line)


def blank_tags_on(
    source: str, line: int, *, first_line: int = 1, keep_blocks: bool = False
) -> str | None:
    """`source` with each tag that is on file line `line` (or runs across it) turned to
    spaces, its line breaks kept so that every later line keeps its number; None if
    no tag is there. `first_line`: the file line `source` starts on.

    `keep_blocks` (a tag that failed when run, the source otherwise sound): an `if`,
    `elif` or `for` keeps its place with a test that cannot fail (`false`, an empty
    loop), so its `endif` or `endfor` still closes it and the check goes on to the tags
    after it; blanked, its `endif` was left alone and the rest of the template unread."""
    out: list[str] = []
    at = first_line
    blanked = False
    for is_tag, text in split_tags(source):
        last = at + text.count("\n")
        if is_tag and at <= line <= last:
            kept = _harmless_block(text) if keep_blocks else None
            breaks = "\n" * text.count("\n")
            text = kept + breaks if kept is not None else re.sub(r"[^\n]", " ", text)
            blanked = True
        out.append(text)
        at = last
    return "".join(out) if blanked else None


_BLOCK_OPENING = re.compile(r"\{%(-?)\s*(if|elif|for)\b", re.ASCII)


def _harmless_block(tag: str) -> str | None:
    """`{% if/elif ... %}` -> `{% if/elif false %}`, `{% for ... %}` -> `{% for _ in [] %}`
    (its whitespace control kept); None for any other tag."""
    found = _BLOCK_OPENING.match(tag)
    if found is None:
        return None
    dash, keyword = found.groups()
    close = "-%}" if tag.rstrip().endswith("-%}") else "%}"
    test = "_ in []" if keyword == "for" else "false"
    return f"{{%{dash} {keyword} {test} {close}"


def _unknown(message: str, path: Path, line: int) -> TemplateError:
    hint = (
        f"Known names: {', '.join(sorted(CONTEXT_NAMES))}; subscriber fields: "
        f"{', '.join(sorted(SUBSCRIBER_FIELDS))}; CSV columns are subscriber.attributes.NAME."
    )
    return TemplateError(message, path=path, line=line, hint=hint)


def template_line(exc: BaseException) -> int | None:
    """The line of the compiled template where `exc` happened, if Jinja knows it.

    Jinja rewrites the traceback of any exception raised while rendering so that template
    code appears as frames of TEMPLATE_FILENAME at the template's line; the innermost such
    frame (a macro's, when the error is in one) is where it happened.
    """
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_MISSING_HINT = (
    'Give empty or missing fields a fallback: {{ subscriber.attributes.city | default("") }}'
)
_LIMIT_HINT = "Templates may not build huge values or loop without end; simplify this expression."


def render_error(exc: BaseException, *, lines: SourceLines, what: str) -> TemplateError:
    """One-line TemplateError for an exception raised while compiling or rendering a
    template: the file and line the failing tag was written on, and what went wrong."""
    path, line = lines.find(template_line(exc))
    if isinstance(exc, jinja2.TemplateSyntaxError):
        detail = f"template syntax error: {exc.message}"
    elif isinstance(exc, jinja2.TemplateError):
        detail = str(exc)
    else:  # KeyError from format_map, IndexError from format, ...: say which it was
        detail = f"{type(exc).__name__}: {exc}"
    hint: str | None = None
    if isinstance(exc, TemplateLimitError):
        hint = _LIMIT_HINT
    elif isinstance(exc, jinja2.UndefinedError | LookupError):
        hint = _MISSING_HINT
    return TemplateError(f"{what}: {' '.join(detail.split())}", path=path, line=line, hint=hint)


def front_matter_line(path: Path, key: str) -> int:
    """The line of `key:` in an event file's front matter (1 if it cannot be found)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return 1
    return next((n for n, line in enumerate(lines, 1) if line.startswith(f"{key}:")), 1)


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
