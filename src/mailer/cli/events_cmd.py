"""`mailer validate EVENT` and `mailer preview EVENT`: check and look at an invitation."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mailer.cli import common
from mailer.errors import InputError, MailerError, SubscriberFileError
from mailer.models import Recipient

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.message.event import Event
    from mailer.message.lint import LintReport, ListColumns

DEFAULT_SUBSCRIBERS = Path("subscribers.example.csv")

EventArgument = Annotated[
    Path,
    typer.Argument(
        metavar="EVENT", help="The event file, e.g. templates/events/london-public-meeting.md."
    ),
]


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("preview")(preview_command)


ListOption = Annotated[
    str | None,
    typer.Option(
        "--list",
        "-l",
        metavar="NAME",
        help="Check the subscriber.attributes the templates use against this list's columns.",
        show_default=False,
    ),
]


def validate_command(
    ctx: typer.Context, event: EventArgument, list_name: ListOption = None
) -> None:
    """Check an event's front matter and every template it uses (and, with --list, the
    subscriber attributes against the list); warn if the event has started."""
    from mailer.clock import utcnow
    from mailer.message.lint import lint_event

    settings = common.settings_from(ctx)
    common.existing_file(event, what="event file")
    columns = columns_of(settings, list_name) if list_name is not None else None
    report = lint_event(event, templates_dir=settings.templates_dir, columns=columns, now=utcnow())
    checked(report, event)
    notes = []
    if report.warnings:
        notes.append(f"{len(report.warnings)} warning{'s' if len(report.warnings) > 1 else ''}")
    if report.unchecked:
        names = ", ".join(report.unchecked)
        notes.append(f"attributes {names} not checked: give --list NAME to check them")
    common.console.print(f"{escape(str(event))}: OK" + (f" ({'; '.join(notes)})" if notes else ""))


def load_checked(
    settings: Settings,
    path: Path,
    *,
    list_name: str | None = None,
    now: datetime | None = None,
    send_at: datetime | None = None,
) -> Event:
    """The event, after the checks `mailer validate` makes (with the list's columns when
    there is a list, and whether it will have started by `send_at`, default now):
    warnings printed, errors raised with their file and line. Every command that
    renders or sends an event loads it through here."""
    from mailer.clock import utcnow
    from mailer.message.lint import lint_event

    common.existing_file(path, what="event file")
    columns = columns_of(settings, list_name) if list_name is not None else None
    report = lint_event(
        path,
        templates_dir=settings.templates_dir,
        columns=columns,
        now=now or utcnow(),
        send_at=send_at,
    )
    return checked(report, path)


def too_late(question: str, event: Event, *, now: datetime, send_at: datetime | None = None) -> str:
    """The confirmation `question`, opened by why the invitations would come too late
    ("The event started 5 years ago (...). Send to 12 subscriber(s)?"), if they would."""
    from mailer.message.lint import timing_problem

    late = timing_problem(event, now=now, send_at=send_at)
    return f"{late[0].upper()}{late[1:]}. {question}" if late else question


def checked(report: LintReport, path: Path) -> Event:
    """Print the report's warnings; raise its error (or print its errors and raise a
    count); else the event."""
    for warning in report.warnings:
        _print_problem("[yellow]warning:[/yellow]", warning)
    if len(report.errors) == 1:
        raise report.errors[0]
    if report.errors:
        for problem in report.errors:
            _print_problem("[bold red]error:[/bold red]", problem)
        raise InputError(
            f"{len(report.errors)} problems found",
            path=path,
            hint=f"Fix them; `mailer validate {path}` checks again.",
        )
    assert report.event is not None
    return report.event


def _print_problem(label: str, problem: MailerError) -> None:
    common.err_console.print(f"{label} {escape(str(problem))}", soft_wrap=True)
    if problem.hint:
        common.err_console.print(f"  [dim]hint:[/dim] {escape(problem.hint)}", soft_wrap=True)


def columns_of(settings: Settings, list_name: str) -> ListColumns:
    from mailer.campaigns.preview import list_columns

    with common.open_store(settings) as store:
        return list_columns(store, list_name)


def preview_command(
    ctx: typer.Context,
    event: EventArgument,
    subscriber: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Preview for this subscriber's email (default: the first one).",
            show_default=False,
        ),
    ] = None,
    subscribers: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help=f"CSV to take the subscriber from (default: {DEFAULT_SUBSCRIBERS}).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Directory for the files (default: VAR_DIR/preview).",
            show_default=False,
        ),
    ] = None,
    list_name: Annotated[
        str | None,
        typer.Option(
            "--list",
            "-l",
            metavar="NAME",
            help="Take the subscriber from this list in the store (as a send would).",
            show_default=False,
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the HTML in a web browser.")
    ] = False,
) -> None:
    """Write the .html, .txt, .ics and full .eml one subscriber would receive."""
    from mailer.campaigns.preview import list_columns, member_recipient, render_preview
    from mailer.clock import utcnow
    from mailer.message.lint import lint_event

    settings = common.settings_from(ctx)
    common.existing_file(event, what="event file")
    if list_name is not None and subscribers is not None:
        raise InputError(
            "--list and --subscribers both name where the subscriber comes from",
            hint="Give --list NAME (the store) or --subscribers FILE (a CSV), not both.",
        )
    if list_name is not None:
        # What a send would use: the store's record (as imported last), found by the
        # address normalised as the import does, and the list's columns for the checks.
        with common.open_store(settings) as store:
            columns = list_columns(store, list_name)
            report = lint_event(
                event, templates_dir=settings.templates_dir, columns=columns, now=utcnow()
            )
            loaded = checked(report, event)
            recipient = member_recipient(store, list_name, subscriber)
    else:
        report = lint_event(event, templates_dir=settings.templates_dir, now=utcnow())
        loaded = checked(report, event)
        recipient = _pick_subscriber(subscribers or DEFAULT_SUBSCRIBERS, subscriber)
    preview = render_preview(settings, loaded, recipient, list_name=list_name)
    directory = out if out is not None else settings.var_dir / "preview"
    written = {
        ".html": preview.html.encode("utf-8"),
        ".txt": preview.text.encode("utf-8"),
        ".ics": preview.ics,
        ".eml": preview.eml,
    }
    paths = write_previews(directory, loaded.slug, written)
    common.console.print(f"Preview for {escape(recipient.name or recipient.email)}:")
    for path in paths:
        common.console.print(f"  {escape(str(path))}")
    if open_browser:
        import webbrowser

        if not webbrowser.open(paths[0].resolve().as_uri()):
            common.err_console.print("No web browser available; open the .html file yourself.")


def write_previews(directory: Path, stem: str, files: dict[str, bytes]) -> list[Path]:
    """Write STEM + suffix for each file, each replaced whole, never through a link.

    The suffix is appended to the event's whole file stem (not swapped for its last
    dotted part), so `a.b.md` and `a.c.md` never share a preview. An existing symlink
    is refused rather than followed, as nothing should redirect a write elsewhere; each
    file is written to a new temporary file (created exclusively) and renamed over the
    old one, which replaces a link planted meanwhile instead of writing through it.
    """
    name = stem.replace(os.sep, "_")
    paths = [directory / f"{name}{suffix}" for suffix in files]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in paths:
            if path.is_symlink():
                raise InputError(
                    "is a symbolic link; preview does not write through links",
                    path=path,
                    hint="Remove the link, or choose another --out directory.",
                )
        temporary: list[str] = []
        try:
            for data in files.values():
                handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
                temporary.append(temp)
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
            for temp, path in zip(temporary, paths, strict=True):
                os.replace(temp, path)
        finally:
            for temp in temporary:
                Path(temp).unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot write the preview: {exc.strerror or exc}", path=exc.filename or directory
        ) from exc
    return paths


def _pick_subscriber(path: Path, email: str | None) -> Recipient:
    from mailer.addresses import InvalidAddress, normalise
    from mailer.audience.csv_file import parse_csv

    common.existing_file(path, what="subscriber file")
    wanted = _address_key(email) if email else None
    for row in parse_csv(path):
        found = row.subscriber
        if found is None:
            continue
        if wanted is not None:
            try:
                if normalise(found.email).key != wanted:
                    continue
            except InvalidAddress:
                continue
        return Recipient(
            subscriber_id=row.line, email=found.email, name=found.name, attributes=found.attributes
        )
    what = f"no subscriber {email!r}" if email else "no valid subscriber"
    raise SubscriberFileError(f"{what} in the file", path=path, hint="Pick another --subscriber.")


def _address_key(email: str) -> str:
    """How the import recognises an address: `Zoe@Bücher.de` is `zoe@xn--bcher-kva.de`."""
    from mailer.addresses import InvalidAddress, normalise

    try:
        return normalise(email).key
    except InvalidAddress:
        return email.strip().casefold()
