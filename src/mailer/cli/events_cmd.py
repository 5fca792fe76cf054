"""`mailer validate EVENT` and `mailer preview EVENT`: check and look at an invitation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mailer.cli import common
from mailer.errors import InputError, NotFoundError, SubscriberFileError
from mailer.models import Recipient

if TYPE_CHECKING:
    from mailer.store import Store

DEFAULT_SUBSCRIBERS = Path("subscribers.example.csv")
PREVIEW_TOKEN = "preview-token"  # noqa: S105 - a stand-in shown in previews, not a secret

EventArgument = Annotated[
    Path, typer.Argument(help="The event file, e.g. templates/events/london-public-meeting.md.")
]


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("preview")(preview_command)


def validate_command(ctx: typer.Context, event: EventArgument) -> None:
    """Check an event's front matter and every template it uses."""
    from mailer.message.lint import validate_event

    settings = common.settings_from(ctx)
    common.existing_file(event, what="event file")
    problems = validate_event(event, templates_dir=settings.templates_dir)
    for problem in problems:
        common.err_console.print(f"{escape(str(problem))}", soft_wrap=True)
        if problem.hint:
            common.err_console.print(f"  [dim]hint:[/dim] {escape(problem.hint)}", soft_wrap=True)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise InputError(f"{count} found", path=event, hint="Fix them and run validate again.")
    common.console.print(f"{escape(str(event))}: OK")


def preview_command(
    ctx: typer.Context,
    event: EventArgument,
    subscriber: Annotated[
        str | None,
        typer.Option(
            help="Preview for this subscriber's email (default: the first one).",
            show_default=False,
        ),
    ] = None,
    subscribers: Annotated[
        Path | None,
        typer.Option(
            help=f"CSV to take the subscriber from (default: {DEFAULT_SUBSCRIBERS}).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the files (default: VAR_DIR/preview).", show_default=False
        ),
    ] = None,
    list_name: Annotated[
        str | None,
        typer.Option(
            "--list",
            help="Take the subscriber from this list in the store (as a send would).",
            show_default=False,
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the HTML in a web browser.")
    ] = False,
) -> None:
    """Write the .html, .txt, .ics and full .eml one subscriber would receive."""
    from mailer.message.compose import InvitationBuilder
    from mailer.message.event import load_event

    settings = common.settings_from(ctx)
    common.existing_file(event, what="event file")
    if list_name is not None and subscribers is not None:
        raise InputError(
            "--list and --subscribers both name where the subscriber comes from",
            hint="Give --list NAME (the store) or --subscribers FILE (a CSV), not both.",
        )
    loaded = load_event(event)
    if list_name is not None:
        # What a send would use: the store's record (as imported last), found by the
        # address normalised as the import does.
        with common.open_store(settings) as store:
            recipient = _member(store, list_name, subscriber)
    else:
        recipient = _pick_subscriber(subscribers or DEFAULT_SUBSCRIBERS, subscriber)
    sender = settings.sender_identity
    builder = InvitationBuilder(
        loaded,
        sender=sender,
        campaign_id=0,
        list_name=list_name or "Preview",
        templates_dir=settings.templates_dir,
    )
    url = f"{sender.base_url}/u/{PREVIEW_TOKEN}"
    rendered = builder.render(recipient, unsubscribe_url=url)
    message = builder.build(recipient, unsubscribe_url=url)
    directory = out if out is not None else settings.var_dir / "preview"
    written = {
        ".html": rendered.html.encode("utf-8"),
        ".txt": rendered.text.encode("utf-8"),
        ".ics": builder.ics,
        ".eml": message.data,
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


def _member(store: Store, list_name: str, email: str | None) -> Recipient:
    """The list's first mailable member, or the one with this address (normalised)."""
    if email is None:
        first = next(iter(store.iter_subscribers(list_name, only_subscribed=True)), None)
        if first is None or first.id is None:
            raise NotFoundError(f"list {list_name!r} has no subscribed members to preview for")
        found = first
    else:
        list_id = store.list_id(list_name)
        found = store.get_subscriber(email)  # NotFoundError names the address
        if found.id is None or not store.is_mailable(found.id, list_id):
            raise NotFoundError(
                f"{found.email} is not a subscribed member of list {list_name!r}",
                hint="Pick another --subscriber, or leave it out for the list's first member.",
            )
    assert found.id is not None
    return Recipient(found.id, found.email, found.name, found.attributes)
