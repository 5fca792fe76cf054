"""A list as CSV, in the columns `mailer subscribers export` writes: email, name, status,
then every attribute (sorted), each cell neutralised for spreadsheets.

Streamed in two passes over the store (the attribute names first, then the rows), so a
list of any size is exported in bounded memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from mailer.safety import spreadsheet_safe
from mailer.store import Store

_FLUSH_ROWS = 500


def export_csv(store: Store, list_name: str | None) -> Iterator[str]:
    """The CSV text of `list_name` (every subscriber when None), a few hundred rows at a
    time. A name or address like `=HYPERLINK(...)`, `-Ann` or `+x@example.org` is
    legitimate data that a spreadsheet would run as a formula (OWASP CSV injection):
    every cell gets the leading `'` that `subscribers import` takes off again."""
    attributes = sorted({key for s in store.iter_subscribers(list_name) for key in s.attributes})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(cell) for cell in ["email", "name", "status", *attributes]])
    for count, subscriber in enumerate(store.iter_subscribers(list_name), start=1):
        cells = [
            subscriber.email,
            subscriber.name,
            subscriber.status.value,
            *(subscriber.attributes.get(name, "") for name in attributes),
        ]
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
        if count % _FLUSH_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
