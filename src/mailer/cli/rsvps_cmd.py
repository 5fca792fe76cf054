"""`mailer rsvps EVENT`: who is coming (issue 14), as counts or as an attendee CSV."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailer.cli import common

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mailer.message.event import Event
    from mailer.models import Attendee, RsvpCounts

CSV_HEADER = ["name", "address", "answer", "guests", "note", "answered_at"]


def register(app: typer.Typer) -> None:
    app.command("rsvps")(rsvps)


def rsvps(
    ctx: typer.Context,
    event_file: Annotated[Path, typer.Argument(metavar="EVENT", help="The event file (.md).")],
    list_name: Annotated[
        str | None,
        typer.Option(
            "--list",
            "-l",
            metavar="NAME",
            help="Count among this list (and its members who have not answered).",
        ),
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="The attendee list as CSV: who answered what.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Write the CSV here.")
    ] = None,
) -> None:
    """The answers to an event: yes, waiting, maybe, no, no answer, and guests."""
    from mailer.message.event import load_event

    settings = common.settings_from(ctx)
    event = load_event(common.existing_file(event_file, what="event file"))
    if not event.rsvp_enabled:
        common.err_console.print(
            f"{event_file}: this event takes no answers (no `rsvp: true`, capacity, ...).",
            markup=False,
        )
    with common.open_store(settings, existing=True) as store:
        list_id = store.list_id(list_name) if list_name is not None else None
        if as_csv or out is not None:
            _write_csv(store.attendees(event.slug, list_id=list_id), out)
            return
        counts = store.rsvp_counts(event.slug, list_id=list_id)
    common.console.print("\n".join(describe(event, counts, list_name=list_name)), markup=False)


def describe(event: Event, counts: RsvpCounts, *, list_name: str | None) -> list[str]:
    """The counts, one line each (also on `mailer campaign report`)."""
    from mailer.message.dates import format_when

    among = f" among list '{list_name}'" if list_name else ""
    places = (
        f"{counts.places_taken} of {event.capacity} places taken"
        if event.capacity is not None
        else f"{counts.places_taken} places taken"
    )
    lines = [
        f"Answers to {event.title} ({event.slug}){among}:",
        f"  yes:        {counts.yes} with {counts.guests_yes} guest(s): {places}",
        f"  waiting:    {counts.waiting} with {counts.guests_waiting} guest(s)",
        f"  maybe:      {counts.maybe} with {counts.guests_maybe} guest(s)",
        f"  no:         {counts.no}",
    ]
    if list_name:
        lines.append(f"  no answer:  {counts.no_answer} (subscribed members of the list)")
    lines.append(f"  closes:     {format_when(event.answers_close)}")
    if counts.untold:
        lines.append(
            f"  NOTE:       {counts.untold} moved up from the waiting list but the message "
            "telling them could not be sent; please tell them yourself."
        )
    return lines


def _write_csv(rows: Iterable[Attendee], out: Path | None) -> None:
    from mailer.safety import spreadsheet_safe

    handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for row in rows:
            # Names, addresses and notes come from people: a cell starting with = + - @
            # would run as a formula in a spreadsheet.
            writer.writerow(
                [
                    spreadsheet_safe(row.name),
                    spreadsheet_safe(row.email),
                    row.status.value if row.status else "no answer",
                    row.guests,
                    spreadsheet_safe(row.note),
                    row.answered_at.isoformat() if row.answered_at else "",
                ]
            )
    finally:
        if out:
            handle.close()
