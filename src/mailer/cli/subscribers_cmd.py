"""`mailer subscribers ...` and `mailer lists ...`: the organiser's list management."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailer.cli import common
from mailer.errors import NotFoundError
from mailer.models import (
    HistoryEntry,
    SubscriberRecord,
    SubscriberStatus,
    UnsubscribeSource,
)
from mailer.safety import spreadsheet_safe


def register(app: typer.Typer) -> None:
    subs = typer.Typer(help="Import, inspect and manage subscribers.", no_args_is_help=True)
    app.add_typer(subs, name="subscribers")
    lists = typer.Typer(
        help="Every list with its counts (no command), or create, describe, rename, delete.",
        invoke_without_command=True,
    )
    app.add_typer(lists, name="lists")
    lists.callback()(show_lists)
    lists.command("create")(create_list)
    lists.command("describe")(describe_list)
    lists.command("rename")(rename_list)
    lists.command("delete")(delete_list)
    subs.command("import")(import_command)
    subs.command("add")(add_command)
    subs.command("show")(show_command)
    subs.command("list")(list_command)
    subs.command("count")(count_command)
    subs.command("export")(export_command)
    subs.command("unsubscribe")(unsubscribe_command)
    subs.command("resubscribe")(resubscribe_command)
    subs.command("remove")(remove_command)


ListOption = Annotated[str, typer.Option("--list", "-l", metavar="NAME", help="The list's name.")]
OptionalList = Annotated[
    str | None,
    typer.Option("--list", "-l", metavar="NAME", help="Limit to this list.", show_default=False),
]
ListName = Annotated[str, typer.Argument(metavar="NAME", help="The list's name.")]
Email = Annotated[str, typer.Argument(metavar="ADDRESS", help="The subscriber's address.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Title = Annotated[
    str,
    typer.Option(
        "--title",
        "-t",
        metavar="TEXT",
        help="What recipients read: footer, unsubscribe page.",
        show_default=False,
    ),
]
NewTitle = Annotated[
    str | None,
    typer.Option(
        "--title",
        "-t",
        metavar="TEXT",
        help="What recipients read: footer, unsubscribe page.",
        show_default=False,
    ),
]
Description = Annotated[
    str | None,
    typer.Option(
        "--description",
        "-d",
        metavar="TEXT",
        help="A sentence about the list.",
        show_default=False,
    ),
]


def show_lists(ctx: typer.Context) -> None:
    """Every list with its title and its subscribed and unsubscribed counts."""
    if ctx.invoked_subcommand is not None:
        return
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        summaries = store.lists()
    if not summaries:
        common.console.print(
            "No lists yet. Create one: mailer lists create NAME --title TITLE, or import one: "
            "mailer subscribers import FILE --list NAME",
            markup=False,
        )
        return
    table = Table("list", "title", "subscribed", "unsubscribed", "created")
    for summary in summaries:
        table.add_row(
            escape(summary.name),
            escape(summary.title or "-"),
            str(summary.subscribed),
            str(summary.unsubscribed),
            f"{summary.created_at:%Y-%m-%d %H:%M}",
        )
    common.console.print(table)


def create_list(
    ctx: typer.Context, name: ListName, title: Title, description: Description = None
) -> None:
    """Create an empty list with the title its recipients read."""
    with common.open_store(common.settings_from(ctx)) as store:
        change = store.create_list(name, title=title, description=description)
    common.console.print(f"Created list {change.name!r} ({title.strip()}).", markup=False)
    if change.revived:
        common.console.print(
            f"A list of this name was deleted earlier: its {change.suppressions} recorded "
            "unsubscribe(s) apply again, so those people stay off it.",
            markup=False,
        )
    common.console.print(
        f"Add subscribers: mailer subscribers import FILE --list {change.name}", markup=False
    )


def describe_list(
    ctx: typer.Context,
    name: ListName,
    title: NewTitle = None,
    description: Description = None,
) -> None:
    """Change a list's title and/or description (an empty description removes it)."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        store.describe_list(name, title=title, description=description)
        (summary,) = store.lists(name)
    common.console.print(f"List {summary.name!r}:", markup=False)
    common.console.print(f"  title:       {summary.title or summary.name}", markup=False)
    common.console.print(f"  description: {summary.description or '-'}", markup=False)


def rename_list(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(metavar="OLD", help="The list's name now.")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="Its new name.")],
) -> None:
    """Rename a list (its title, what recipients read, stays); links already sent keep working."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        store.rename_list(old, new)
    common.console.print(f"Renamed list {old!r} to {new.strip()!r}.", markup=False)


def delete_list(ctx: typer.Context, name: ListName, yes: Yes = False) -> None:
    """Delete a list: its members come off it; who unsubscribed stays recorded."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        (summary,) = store.lists(name)
        common.confirm(
            f"Delete list {name!r}?",
            yes=yes,
            details=[
                f"List {name!r} ({summary.title or 'no title'}): {summary.subscribed} "
                f"subscribed, {summary.unsubscribed} unsubscribed.",
                "Its members come off it (their other lists are untouched). Who unsubscribed "
                "stays recorded, and campaigns sent to it keep their reports.",
            ],
        )
        change = store.delete_list(name)
    common.console.print(
        f"Deleted list {name!r}: {change.members} member(s) taken off; {change.suppressions} "
        "unsubscribe record(s) kept (a list created again under this name keeps those "
        "people off it).",
        markup=False,
    )


def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="CSV with an `email` column, or addresses alone, one a line."
        ),
    ],
    list_name: ListOption,
    encoding: Annotated[
        str, typer.Option(metavar="ENCODING", help="The file's encoding (cp1252, latin-1, ...).")
    ] = "utf-8-sig",
    check_dns: Annotated[
        bool, typer.Option("--check-dns", help="Also check each domain accepts mail.")
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Where to write rejected rows (default: var/rejects/).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import (or update) subscribers from a CSV file into a list, in one transaction."""
    from mailer.audience.csv_records import DELIMITERS
    from mailer.audience.importer import default_rejects_path, import_file

    settings = common.settings_from(ctx)
    common.existing_file(file, what="subscriber file")
    target = rejects or default_rejects_path(file, settings.var_dir)
    with common.open_store(settings) as store:
        report = import_file(
            store,
            file,
            list_name=list_name,
            rejects_path=target,
            encoding=encoding,
            check_dns=check_dns,
        )
    counts = report.counts
    common.console.print(
        f"Imported {escape(str(file))} into list [bold]{escape(list_name)}[/bold]: "
        f"{counts.imported} imported, {counts.updated} updated, {counts.unchanged} unchanged, "
        f"{counts.duplicates} duplicates merged, {counts.suppressed} suppressed (skipped), "
        f"{counts.invalid} invalid."
    )
    if report.delimiter != ",":
        common.console.print(
            f"Columns separated by {DELIMITERS[report.delimiter]}, as its header row is.",
            markup=False,
        )
    if report.short_rows:
        lines = ", ".join(str(line) for line in report.first_short)
        more = ", ..." if report.short_rows > len(report.first_short) else ""
        common.console.print(
            f"{report.short_rows} row(s) had fewer fields than the header; their last cells "
            f"were read as empty (lines {lines}{more}). If a cell was missing mid-row, the "
            "values after it are one column to the left: check those rows.",
            markup=False,
        )
    if report.first_invalid:
        common.console.print("First invalid rows:")
        for rejected in report.first_invalid:
            common.console.print(f"  {file}:{rejected.line}: {rejected.reason}", markup=False)
    if report.first_merged:
        # Never merged silently: which rows, and into which (later non-empty values win).
        replacing = f"; {report.replacing} replaced an earlier value" if report.replacing else ""
        common.console.print(
            f"Merged rows (the same address again; later non-empty values win{replacing}):",
            markup=False,
        )
        for merged in report.first_merged:
            common.console.print(f"  {file}:{merged.line}: {merged.reason}", markup=False)
        if counts.duplicates > len(report.first_merged):
            common.console.print(
                f"  ... and {counts.duplicates - len(report.first_merged)} more", markup=False
            )
    if report.rejects_path is not None:
        what = " and ".join(
            part
            for part in (
                f"{counts.invalid} rejected" if counts.invalid else "",
                f"{counts.duplicates} merged" if counts.duplicates else "",
            )
            if part
        )
        common.console.print(f"All {what} rows: {report.rejects_path}", markup=False)


def list_command(ctx: typer.Context, list_name: OptionalList = None) -> None:
    """List subscribers (of one list) with their status."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        table = Table("email", "name", "status", "attributes")
        for subscriber in store.iter_subscribers(list_name):
            attributes = ", ".join(f"{k}={v}" for k, v in subscriber.attributes.items() if v)
            table.add_row(subscriber.email, subscriber.name, subscriber.status.value, attributes)
    common.console.print(table)


def count_command(ctx: typer.Context, list_name: OptionalList = None) -> None:
    """Print how many subscribers (of one list) can be mailed."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        common.console.print(str(store.count_subscribers(list_name)))


def export_command(
    ctx: typer.Context,
    list_name: OptionalList = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE", help="Write here instead of stdout."),
    ] = None,
) -> None:
    """Export subscribers as CSV (email, name, status, then every attribute)."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        subscribers = list(store.iter_subscribers(list_name))
    attributes = sorted({key for s in subscribers for key in s.attributes})
    handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        writer = csv.writer(handle)
        # Every cell neutralised for spreadsheets (OWASP CSV injection): a name or address
        # like `-Ann`, `+x@example.org` or `=HYPERLINK(...)` is legitimate data, and would
        # otherwise run as a formula. `subscribers import` reads such a file back unchanged.
        writer.writerow(
            [spreadsheet_safe(cell) for cell in ["email", "name", "status", *attributes]]
        )
        for s in subscribers:
            cells = [
                s.email,
                s.name,
                s.status.value,
                *(s.attributes.get(a, "") for a in attributes),
            ]
            writer.writerow([spreadsheet_safe(cell) for cell in cells])
    finally:
        if out:
            handle.close()
    if out:
        common.err_console.print(f"Exported {len(subscribers)} subscribers to {out}")


def remove_command(
    ctx: typer.Context,
    email: Email,
    list_name: Annotated[
        str | None,
        typer.Option(
            "--list",
            "-l",
            metavar="NAME",
            help="Only from this list (default: erase).",
            show_default=False,
        ),
    ] = None,
    yes: Yes = False,
) -> None:
    """Remove a subscriber from a list, or (without --list) erase them; suppressions stay."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        record = store.subscriber_record(email)
        on = [m.list_name for m in record.memberships]
        if record.subscriber is None or (list_name is not None and list_name not in on):
            where = f"list {list_name!r}" if list_name else "any list (already erased)"
            raise NotFoundError(f"{email!r} is not on {where}")
        if list_name is None:
            question = f"Erase {record.email} and everything known about them?"
            details = [
                f"{record.email} is on: {', '.join(on) or 'no list'}.",
                "Their name and details are deleted, and their rows in campaign reports. "
                "Their unsubscribes, bounces and complaints are kept, so they are never "
                "mailed again by a later import.",
            ]
        else:
            question = f"Remove {record.email} from list {list_name!r}?"
            details = []
        common.confirm(question, yes=yes, details=details)
        store.remove_subscriber(email, list_name)
    where = f"list {list_name!r}" if list_name else "every list (data erased)"
    common.console.print(f"Removed {record.email} from {where}.", markup=False)


def add_command(
    ctx: typer.Context,
    email: Email,
    list_name: ListOption,
    name: Annotated[str, typer.Option("--name", "-n", metavar="TEXT", help="Their name.")] = "",
) -> None:
    """Add one subscriber to a list (someone who left is refused: see `resubscribe`)."""
    with common.open_store(common.settings_from(ctx)) as store:
        added = store.add_subscriber(email, list_name, name=name)
    if added:
        common.console.print(f"Added {email.strip()} to list {list_name!r}.", markup=False)
    else:
        common.console.print(f"{email.strip()} is on list {list_name!r} already.", markup=False)


def resubscribe_command(
    ctx: typer.Context,
    email: Email,
    list_name: ListOption,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            "-r",
            metavar="TEXT",
            help="Why (kept in their history).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Also lift a complaint (marked as spam).")
    ] = False,
) -> None:
    """Put someone back on a list after they left (they asked again, a mistaken bounce).

    Lifts their unsubscribe from the list, an unsubscribe from every list (for this list
    only: they stay off their other lists) and a bounce; a complaint only with --force."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        done = store.admin_resubscribe(email, list_name, reason=reason, force=force)
    if not done.changed:
        common.console.print(
            f"{done.email} is subscribed to {list_name!r} already; nothing changed.", markup=False
        )
        return
    common.console.print(f"Resubscribed {done.email} to list {list_name!r}.", markup=False)
    for entry in done.lifted:
        common.console.print(f"  lifted: {describe_entry(entry)}", markup=False)
    if done.kept_off:
        common.console.print(
            f"  still off: {', '.join(done.kept_off)} (their unsubscribe from every list "
            "stays for those)",
            markup=False,
        )
    if done.bounce_lifted_on:
        common.console.print(
            f"  the lifted bounce also lets {', '.join(done.bounce_lifted_on)} mail them",
            markup=False,
        )


def show_command(ctx: typer.Context, email: Email) -> None:
    """A subscriber's lists, status and history: every unsubscribe, bounce and complaint
    (when, how, from which campaign), and what the organiser lifted."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        record = store.subscriber_record(email)
    common.console.print(describe_record(record), markup=False)


def describe_entry(entry: HistoryEntry) -> str:
    """One line of history: when, what, where, how, from which campaign."""
    from mailer.audience.history import describe_change

    line = f"{entry.at:%Y-%m-%d %H:%M} UTC  "
    line += describe_change(entry, list_label=f"list {entry.list_name!r}")
    if entry.lifted_at is not None:
        line += f"; lifted {entry.lifted_at:%Y-%m-%d %H:%M} UTC"
    return line


def describe_record(record: SubscriberRecord) -> str:
    subscriber = record.subscriber
    if subscriber is None:
        lines = [f"{record.email}: erased (on no list); what is kept:"]
    else:
        name = f" ({subscriber.name})" if subscriber.name else ""
        lines = [f"{subscriber.email}{name}"]
        status = subscriber.status
        if status is SubscriberStatus.SUBSCRIBED:
            # Not "subscribed" above a list saying "unsubscribed" (a walkthrough read it as
            # the opposite of the truth): how many of their lists mail them.
            on = sum(m.status is SubscriberStatus.SUBSCRIBED for m in record.memberships)
            lines.append(f"  status:  mailed by {on} of their {len(record.memberships)} list(s)")
        else:
            lines.append(f"  status:  {status.value} (no list mails them)")
        if record.created_at is not None:
            lines.append(f"  since:   {record.created_at:%Y-%m-%d %H:%M} UTC")
        lines.append("  lists:")
        lines.extend(
            f"    {m.list_name}: {m.status.value} (joined {m.since:%Y-%m-%d})"
            for m in record.memberships
        )
        if not record.memberships:
            lines.append("    none")
        if subscriber.attributes:
            details = ", ".join(f"{k}={v}" for k, v in subscriber.attributes.items() if v)
            lines.append(f"  details: {details}")
    lines.append("  history:")
    lines.extend(f"    {describe_entry(entry)}" for entry in record.history)
    if not record.history:
        lines.append("    nothing: never unsubscribed, bounced or complained")
    return "\n".join(lines)


def unsubscribe_command(
    ctx: typer.Context,
    email: Email,
    list_name: OptionalList = None,
) -> None:
    """Unsubscribe an address from one list, or (without --list) from every list, for good."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        changed = store.unsubscribe_email(email, list_name, source=UnsubscribeSource.ADMIN)
    where = f"list {list_name!r}" if list_name else "every list"
    verb = "Unsubscribed" if changed else "Already unsubscribed:"
    common.console.print(f"{verb} {email} from {where}.", markup=False)
