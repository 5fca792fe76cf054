"""A campaign's per-recipient report as CSV: `mailer campaign report --csv` and the
dashboard's download write the same columns, through the same function.

Addresses and relay replies come from outside: a cell starting with = + - @ would run as
a formula in a spreadsheet, so they go through safety.spreadsheet_safe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import TextIO

from mailer.models import ReportRow
from mailer.safety import spreadsheet_safe

COLUMNS = ("email", "status", "attempts", "code", "reply", "message_id", "sent_at", "later")
# A campaign sent through MAILER_RELAYS (issue 15) has one more column, last: which relay
# took each message. Campaigns of the single relay keep exactly the columns above.
RELAY_COLUMN = "relay"


def report_cells(row: ReportRow, *, relays: bool = False) -> list[object]:
    cells: list[object] = [
        spreadsheet_safe(row.email),
        row.status.value,
        row.attempts,
        row.code or "",
        spreadsheet_safe(row.reply),
        row.message_id or "",
        row.sent_at.isoformat() if row.sent_at else "",
        row.later.value if row.later else "",
    ]
    if relays:
        cells.append(row.relay or "")
    return cells


def _header(relays: bool) -> tuple[str, ...]:
    return (*COLUMNS, RELAY_COLUMN) if relays else COLUMNS


def write_report(rows: Iterable[ReportRow], handle: TextIO, *, relays: bool = False) -> None:
    """Write the header and every row to a text file `handle`; `relays`: add the relay
    column (a campaign sent through MAILER_RELAYS)."""
    writer = csv.writer(handle)
    writer.writerow(_header(relays))
    for row in rows:
        writer.writerow(report_cells(row, relays=relays))


def report_chunks(
    rows: Iterable[ReportRow], *, rows_per_chunk: int = 1000, relays: bool = False
) -> Iterator[str]:
    """The same CSV in pieces, for a streamed download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_header(relays))
    for count, row in enumerate(rows, start=1):
        writer.writerow(report_cells(row, relays=relays))
        if count % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
