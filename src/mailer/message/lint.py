"""Checks of an event file beyond its front matter: the templates it uses, parsed and tried.

`lint_event` is the one check `mailer validate`, `preview`, `send` (dry run, test send and
the real thing) and `schedule` run before anything else, so they all report the same
problems at the same file and line; `ensure_templates` is its static part, which the
engine runs again on the event it loads (a worker reads the file at send time).

Given the columns of the list it goes to (`ListColumns`), it also checks every
`subscriber.attributes.NAME` the templates use: a name that is not a column, or that some
subscribers lack, would fail their messages (an error); an empty value would leave a gap
("You live in .": a warning with the number of subscribers it concerns).

Given the time (`now`, and for `schedule` the send time), it warns when the invitation
would arrive after the event has started: the 2021 example sent in 2026, or a send
scheduled for 1 April for an event on 18 March.

Separate from the parser because it needs the renderer, which needs the parsed Event.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
from jinja2 import nodes

from mailer.errors import InputError, TemplateError
from mailer.message.dates import format_when
from mailer.message.event import Event, parse_event
from mailer.message.layouts import find_layout
from mailer.message.render import Blank, Renderer, read_template
from mailer.message.templating import (
    MOST_REPORTED,
    blank_tags_on,
    front_matter_line,
    make_environment,
    parse_checked,
)
from mailer.models import MessageKind, Recipient

_SAMPLE_VALUE = "Sample"


@dataclass(frozen=True, slots=True)
class ListColumns:
    """What the subscribers of one list hold, counted once for the checks.

    `present[name]`: subscribers whose attributes have that key at all; `filled[name]`:
    those whose value is not blank. Lists imported from one CSV have every column for
    everybody; lists merged from several files may not."""

    list_name: str
    subscribers: int
    present: Mapping[str, int]
    filled: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LintReport:
    """Everything found in one event file: errors stop a command, warnings are shown."""

    event: Event | None
    errors: list[InputError] = field(default_factory=list)
    warnings: list[InputError] = field(default_factory=list)
    # Attribute names the templates use that nothing checked (no list was given).
    unchecked: list[str] = field(default_factory=list)


def lint_event(
    path: Path,
    *,
    templates_dir: Path,
    columns: ListColumns | None = None,
    now: datetime | None = None,
    send_at: datetime | None = None,
) -> LintReport:
    """Every problem in the event file and the templates it uses, each with its file and
    line; with `columns`, the attribute names checked against the list too; with `now`
    (and `send_at`), a warning if the event will have started when the invitations go."""
    event, errors = parse_event(path)
    if event is None or errors:
        return LintReport(event, errors)
    timing: list[InputError] = []
    if now is not None and (late := timing_problem(event, now=now, send_at=send_at)):
        line = front_matter_line(event.path, "starts_at")
        timing.append(InputError(f"starts_at: {late}", path=event.path, line=line))
    checked = _sources(event, templates_dir=templates_dir)
    uses = [use for source in checked.sources for use in attribute_uses(source)]
    errors = list(checked.problems)
    warnings: list[InputError] = []
    unchecked: list[str] = []
    if columns is None:
        unchecked = sorted({use.name for use in uses})
    else:
        errors, warnings = _check_columns(uses, columns)
        errors = checked.problems + errors
    if checked.layout_ok:
        # Run with the syntax errors taken out, so what only running shows (a format()
        # short of arguments) is found in the same check, not after they are fixed.
        errors += _trial_render(checked.repaired, templates_dir, columns)
    return LintReport(event, _first_per_line(errors, event.path), timing + warnings, unchecked)


def _first_per_line(errors: list[InputError], event_path: Path) -> list[InputError]:
    """One problem per file line, the first found, the event file's first and each file's
    in line order: a name the static check calls undefined fails the trial render there
    too, in other words, and a follow-up repeats the invitation's subject."""
    seen: set[tuple[Path | None, int | None]] = set()
    kept: list[InputError] = []
    for error in errors:
        if (error.path, error.line) not in seen:
            seen.add((error.path, error.line))
            kept.append(error)
    return sorted(kept, key=lambda e: (e.path != event_path, str(e.path), e.line or 0))


def timing_problem(event: Event, *, now: datetime, send_at: datetime | None = None) -> str | None:
    """In plain words, why the invitations would come too late, or None: "the event
    started 5 years ago (...)", "the event starts before the send time: ...".

    `send_at`: when a scheduled send goes out (None: now)."""
    start = event.starts_at
    if start <= now:
        return f"the event started {_ago(now - start)} ({format_when(start)})"
    if send_at is not None and start <= send_at:
        return (
            f"the event starts before the send time: it starts {format_when(start)}, "
            f"{_duration(send_at - start)} before the invitations go out"
        )
    return None


# (unit, its length, the least span written in it): "13 days" reads better than "1 week",
# "40 hours" better than "1 day".
_UNITS = (
    ("year", timedelta(days=365), timedelta(days=365)),
    ("month", timedelta(days=30), timedelta(days=60)),
    ("day", timedelta(days=1), timedelta(days=2)),
    ("hour", timedelta(hours=1), timedelta(hours=2)),
    ("minute", timedelta(minutes=1), timedelta(minutes=1)),
)


def _duration(delta: timedelta) -> str:
    """'5 years', '13 days', '1 minute': whole units, rounded down."""
    for unit, size, least in _UNITS:
        if delta >= least:
            count = delta // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


def _ago(delta: timedelta) -> str:
    return f"{_duration(delta)} ago" if delta >= timedelta(minutes=1) else "just now"


def validate_event(path: Path, *, templates_dir: Path) -> list[InputError]:
    """The errors `lint_event` finds, without a list."""
    return lint_event(path, templates_dir=templates_dir).errors


def ensure_templates(event: Event, *, templates_dir: Path) -> None:
    """Raise the first problem the static checks find (syntax, unknown names, a missing
    layout) with the file and line it was written on; compiling would name only the
    compiled template's line."""
    problems = _sources(event, templates_dir=templates_dir).problems
    if problems:
        raise problems[0]


# -- the sources and their static checks ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    """One template as written: its text, its file, and the file line its first line is on."""

    text: str
    path: Path
    first_line: int
    tree: nodes.Template


@dataclass(frozen=True, slots=True)
class _Checked:
    """The templates of one event, statically checked."""

    sources: list[_Source]  # those that parsed as written
    problems: list[InputError]
    repaired: Event  # the event with its own templates' syntax errors taken out
    layout_ok: bool  # the layout was found and parsed


def _sources(event: Event, *, templates_dir: Path) -> _Checked:
    """The subject, body and layout templates, parsed, and the problems found in them."""
    html_env = make_environment(html=True)
    problems: list[InputError] = []
    subject_line = front_matter_line(event.path, "subject")
    wanted: list[tuple[str, str, Path, int, frozenset[str]]] = [
        ("subject", event.subject, event.path, subject_line, frozenset()),
        ("body", event.description, event.path, event.body_line, frozenset()),
        # Follow-up sections (issue 14) are checked with the invitation, not when sent.
        *(
            (name, text, event.path, event.section_lines[name], frozenset())
            for name, text in event.sections.items()
        ),
    ]
    layout_ok = True
    try:
        layout = find_layout(event.layout, event_path=event.path, templates_dir=templates_dir)
    except TemplateError as exc:
        line = front_matter_line(event.path, "layout")
        problems.append(TemplateError(str(exc.message), path=event.path, line=line, hint=exc.hint))
        layout_ok = False
    else:
        for part in (layout.html, layout.text):
            wanted.append(("layout", read_template(part), part, 1, frozenset({"content"})))
    sources: list[_Source] = []
    repaired: dict[str, str] = {}
    for what, text, path, first_line, extra in wanted:
        found, repaired[what] = parse_checked(
            html_env, text, path=path, first_line=first_line, extra=extra
        )
        problems += found
        if what == "layout" and any(p.message.startswith("template syntax") for p in found):
            layout_ok = False
        if not found:
            tree = html_env.parse("\n" * (first_line - 1) + text)
            sources.append(_Source(text, path, first_line, tree))
    sections = {name: repaired[name] for name in event.sections}
    fixed = event.model_copy(
        update={
            "subject": repaired["subject"],
            "description": repaired["body"],
            "sections": sections,
        }
    )
    return _Checked(sources, problems, fixed, layout_ok)


def _trial_render(
    event: Event, templates_dir: Path, columns: ListColumns | None
) -> list[InputError]:
    """Render once for a sample subscriber: finds what only running the template shows.

    Without a list every attribute reads as empty (nobody knows the columns); with one,
    the sample has exactly the list's columns, so `'{city}'.format_map(...)` fails here
    as it would in the send. A tag that fails is taken out and the message rendered
    again, so each failing tag of the event file is reported, not only the first."""
    attributes: dict[str, str] = (
        Blank()
        if columns is None
        else {name: _SAMPLE_VALUE for name, count in columns.present.items() if count}
    )
    rsvp = "https://example.org/r/sample" if event.rsvp_enabled else None
    sample = Recipient(0, "sample@example.org", "Sample Subscriber", attributes)
    subject_line = front_matter_line(event.path, "subject")
    errors: list[InputError] = []
    # The invitation, then each follow-up section as it would be sent.
    messages = [event] + [event.for_message(MessageKind(name)) for name in event.sections]
    for message in messages:
        blanked = False
        for _ in range(MOST_REPORTED):
            try:
                renderer = Renderer(
                    message,
                    templates_dir=templates_dir,
                    list_name=columns.list_name if columns else "List",
                    calendar_url="https://example.org/",
                )
                renderer.render(
                    sample, unsubscribe_url="https://example.org/u/sample", rsvp_url=rsvp
                )
                break
            except TemplateError as exc:
                if blanked and isinstance(exc.__cause__, jinja2.TemplateSyntaxError):
                    # Made by taking a tag out (an `{% if %}` whose `{% endif %}` is left
                    # alone): not the organiser's, whose syntax was checked before this.
                    break
                errors.append(exc)
                without = _without_tag_at(message, exc, subject_line=subject_line)
                if without is None:
                    break
                message, blanked = without, True
    return errors


def _without_tag_at(message: Event, exc: TemplateError, *, subject_line: int) -> Event | None:
    """`message` with the tag that failed taken out of its subject or body; None when it
    is not in them (a layout's)."""
    if exc.path != message.path or exc.line is None:
        return None
    if exc.line == subject_line:
        subject = blank_tags_on(
            message.subject, exc.line, first_line=subject_line, keep_blocks=True
        )
        return None if subject is None else message.model_copy(update={"subject": subject})
    if exc.line < message.body_line:
        return None
    body = blank_tags_on(
        message.description, exc.line, first_line=message.body_line, keep_blocks=True
    )
    return None if body is None else message.model_copy(update={"description": body})


# -- subscriber.attributes.NAME -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeUse:
    """One `subscriber.attributes.NAME` in a template."""

    name: str
    path: Path
    line: int
    fails_if_missing: bool  # neither `| default(...)` nor `is defined` protects it
    shows_blank: bool  # printed as it is, so an empty value leaves a gap in the text


def attribute_uses(source: _Source) -> list[AttributeUse]:
    """Every attribute the template reads, and whether a missing or empty value is
    handled where it is read (`default`, `is defined`, inside `{% if %}` on it)."""
    found: list[AttributeUse] = []

    def use(name: str, node: nodes.Node, *, fails: bool, blank: bool) -> None:
        found.append(AttributeUse(name, source.path, node.lineno, fails, blank))

    def walk(
        node: nodes.Node, *, known: frozenset[str], truthy: frozenset[str], shown: bool
    ) -> None:
        name = _attribute(node)
        if name is not None:
            use(name, node, fails=name not in known, blank=shown and name not in truthy)
            return
        if isinstance(node, nodes.Output):
            for shown_node in node.nodes:
                walk(shown_node, known=known, truthy=truthy, shown=True)
            return
        if isinstance(node, nodes.If | nodes.CondExpr):
            test = node.test
            walk(test, known=known, truthy=truthy, shown=False)
            tested = frozenset(_attributes_in(test))
            # Past a test that read a name, the key exists (StrictUndefined would have
            # failed the test otherwise), unless the test asked `is defined`.
            exists = tested - _defined_tests(test)
            inner_known = known | tested
            if isinstance(node, nodes.If):
                for statement in node.body:
                    walk(statement, known=inner_known, truthy=truthy | tested, shown=shown)
                for other in (*node.elif_, *node.else_):
                    walk(other, known=known | exists, truthy=truthy, shown=shown)
            else:
                walk(node.expr1, known=inner_known, truthy=truthy | tested, shown=shown)
                if node.expr2 is not None:
                    walk(node.expr2, known=known | exists, truthy=truthy, shown=shown)
            return
        if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
            inner = _attribute(node.node) if node.node is not None else None
            if inner is not None:
                assert node.node is not None
                use(inner, node.node, fails=False, blank=shown and not _boolean_default(node))
            elif node.node is not None:
                walk(node.node, known=known, truthy=truthy, shown=shown)
            for arg in (*node.args, *(kw.value for kw in node.kwargs)):
                walk(arg, known=known, truthy=truthy, shown=shown)
            return
        if isinstance(node, nodes.Test) and node.name in ("defined", "undefined"):
            inner = _attribute(node.node)
            if inner is not None:
                use(inner, node.node, fails=False, blank=False)
                return
        for child in node.iter_child_nodes():
            # Anything else passes on whether it is shown: {{ "in " ~ X }} shows X, while
            # {% set %} and {% for %} outside {{ }} show nothing themselves.
            walk(child, known=known, truthy=truthy, shown=shown)

    walk(source.tree, known=frozenset(), truthy=frozenset(), shown=False)
    return found


def _attribute(node: nodes.Node) -> str | None:
    """NAME for `subscriber.attributes.NAME` or `subscriber.attributes["NAME"]`."""
    if isinstance(node, nodes.Getattr) and _is_attributes(node.node):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and _is_attributes(node.node)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _is_attributes(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Getattr)
        and node.attr == "attributes"
        and isinstance(node.node, nodes.Name)
        and node.node.name == "subscriber"
    )


def _attributes_in(node: nodes.Node) -> Iterator[str]:
    for child in (node, *node.find_all((nodes.Getattr, nodes.Getitem))):
        if (name := _attribute(child)) is not None:
            yield name


def _defined_tests(node: nodes.Node) -> frozenset[str]:
    tests = [node, *node.find_all(nodes.Test)]
    return frozenset(
        name
        for test in tests
        if isinstance(test, nodes.Test) and test.name in ("defined", "undefined")
        if (name := _attribute(test.node)) is not None
    )


def _boolean_default(node: nodes.Filter) -> bool:
    """`default(x, true)`: empty values get the fallback too, not only missing ones."""
    flags = [*node.args[1:2], *(kw.value for kw in node.kwargs if kw.key == "boolean")]
    return any(isinstance(flag, nodes.Const) and bool(flag.value) for flag in flags)


def _check_columns(
    uses: list[AttributeUse], columns: ListColumns
) -> tuple[list[InputError], list[InputError]]:
    errors: list[InputError] = []
    warnings: list[InputError] = []
    total, where = columns.subscribers, f"list {columns.list_name!r}"
    names = sorted(name for name, count in columns.present.items() if count)
    seen: set[tuple[str, Path, int]] = set()
    for use in uses:
        if total == 0 or (use.name, use.path, use.line) in seen:
            continue
        seen.add((use.name, use.path, use.line))
        label = f"subscriber.attributes.{use.name}"
        present = columns.present.get(use.name, 0)
        blank = total - columns.filled.get(use.name, 0)
        if present == 0:
            close = difflib.get_close_matches(use.name, names, n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            message = f"{label}: {where} has no such column{guess} (columns: {_names(names)})"
            if use.fails_if_missing:
                errors.append(TemplateError(message, path=use.path, line=use.line))
            else:
                warnings.append(
                    InputError(
                        f"{message}; everyone gets the fallback", path=use.path, line=use.line
                    )
                )
        elif present < total and use.fails_if_missing:
            errors.append(
                TemplateError(
                    f"{label}: missing for {total - present} of {total} subscribers of "
                    f"{where}; their messages could not be made",
                    path=use.path,
                    line=use.line,
                    hint=f'Give a fallback: {{{{ {label} | default("...", true) }}}}',
                )
            )
        elif blank and use.shows_blank:
            warnings.append(
                InputError(
                    f"{label}: empty for {blank} of {total} subscribers of {where}; "
                    "their message shows nothing there",
                    path=use.path,
                    line=use.line,
                    hint=f'Give a fallback: {{{{ {label} | default("...", true) }}}}, or '
                    f"put the sentence inside {{% if {label} %}}...{{% endif %}}.",
                )
            )
    return errors, warnings


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"
