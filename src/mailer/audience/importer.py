"""A subscriber file into a list: parse, validate, store in one transaction, keep the rejects.

Rejected rows are written, with their line number and reason, to a reject CSV that appears
only when the import commits; an interrupted import leaves neither store nor file changed.
Rows merged into an earlier row of the same address are written there too (with the line
they were merged into), and reported: nothing is merged silently.
"""

from __future__ import annotations

import csv
import heapq
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mailer.audience.csv_file import EXTRA_FIELDS, CsvLayout, ParsedRow, parse_csv
from mailer.models import ImportCounts
from mailer.safety import spreadsheet_safe
from mailer.store import Store
from mailer.store.imports import ImportRow, Replaced

SHOWN_INVALID = 10


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str


_SHOWN_VALUE = 40
"""Characters of a replaced value shown in a reason (the reject file has the whole row)."""


@dataclass(frozen=True, slots=True)
class MergedRow:
    """A row merged into an earlier one of the same address (later non-empty values win)."""

    line: int
    email: str
    into: int | None
    """The line it was merged into, when known (within the last 2,000 rows)."""
    replaced: tuple[Replaced, ...] = ()
    """The earlier values this row's won over: said, since the earlier ones are lost."""

    @property
    def reason(self) -> str:
        earlier = f"line {self.into}" if self.into is not None else "an earlier row"
        reason = f"duplicate of {earlier} ({self.email}): merged into it"
        if self.replaced:
            reason += "; " + ", ".join(
                f"{r.field} {_shown(r.old)} replaced by {_shown(r.new)}" for r in self.replaced
            )
        return reason


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN_VALUE else value[: _SHOWN_VALUE - 1] + "…")


@dataclass(slots=True)
class ImportReport:
    counts: ImportCounts
    first_invalid: list[RejectedRow] = field(default_factory=list)
    rejects_path: Path | None = None
    first_merged: list[MergedRow] = field(default_factory=list)
    delimiter: str = ","
    replacing: int = 0
    """How many merged rows replaced an earlier, different value (all listed in the
    reject file; the first in first_merged)."""
    short_rows: int = 0
    """Rows with fewer fields than the header, their last cells read as empty: right for
    a spreadsheet's export, wrong if a cell is missing mid-row (the rest then sits one
    column to the left), so they are counted and the first named."""
    first_short: list[int] = field(default_factory=list)


class _RowFile:
    """One temporary CSV of (line, reason, the row's columns), opened on its first row."""

    def __init__(self, path: Path, layout: CsvLayout) -> None:
        self.path = path
        self.layout = layout  # the file's columns, known before any row is written
        self._handle: TextIO | None = None
        self._writer: csv.DictWriter[str] | None = None

    @property
    def used(self) -> bool:
        return self._handle is not None

    def write(self, line: int, reason: str, values: Mapping[str, str]) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            columns = ["line", "reason", *self.layout.columns, EXTRA_FIELDS]
            self._writer = csv.DictWriter(self._handle, columns, extrasaction="ignore")
            self._writer.writeheader()
        # Organisers open this file in a spreadsheet: a rejected `=HYPERLINK(...)` must show
        # as text there, not run (OWASP CSV injection); re-importing it undoes the `'`.
        cells = {column: spreadsheet_safe(value) for column, value in values.items()}
        self._writer.writerow({"line": line, "reason": spreadsheet_safe(reason), **cells})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class _RejectWriter:
    """Writes rejected and merged rows to temporary files, published as one reject file,
    in line order, only by `commit()`.

    Two files because the two come in different orders: a row is rejected as it is read,
    merged only once the store reaches its batch. Each is in line order by itself, so
    merging them at the end keeps memory flat however many rows there are."""

    def __init__(self, target: Path, layout: CsvLayout) -> None:
        self.target = target
        self.temporary = target.with_name(f".{target.name}.partial")
        self._rejected = _RowFile(target.with_name(f".{target.name}.rejected"), layout)
        self._merged = _RowFile(target.with_name(f".{target.name}.merged"), layout)
        self.count = 0
        self.first: list[RejectedRow] = []
        self.first_merged: list[MergedRow] = []
        self.replacing = 0
        """Merged rows that replaced an earlier, different value."""

    def add(self, row: ParsedRow) -> None:
        self.count += 1
        reason = row.error or "invalid"
        if len(self.first) < SHOWN_INVALID:
            self.first.append(RejectedRow(row.line, reason))
        self._rejected.write(row.line, reason, row.raw)

    def add_merged(self, row: ImportRow, into: int | None, replaced: tuple[Replaced, ...]) -> None:
        """A row the store merged into an earlier one: listed with the rejects, so the
        organiser sees which values were combined, and which earlier ones it replaced."""
        merged = MergedRow(row.line or 0, row.subscriber.email, into, replaced)
        self.replacing += bool(replaced)
        if len(self.first_merged) < SHOWN_INVALID:
            self.first_merged.append(merged)
        subscriber = row.subscriber
        values = {"email": subscriber.email, "name": subscriber.name, **subscriber.attributes}
        self._merged.write(merged.line, merged.reason, values)

    def commit(self) -> Path | None:
        parts = [part for part in (self._rejected, self._merged) if part.used]
        for part in parts:
            part.close()
        if not parts:
            return None
        if len(parts) == 1:
            os.replace(parts[0].path, self.target)
            return self.target
        with (
            self._rejected.path.open(encoding="utf-8", newline="") as rejected,
            self._merged.path.open(encoding="utf-8", newline="") as merged,
            self.temporary.open("w", encoding="utf-8", newline="") as out,
        ):
            readers: list[Iterator[list[str]]] = [csv.reader(rejected), csv.reader(merged)]
            writer = csv.writer(out)
            writer.writerow(next(readers[0]))
            next(readers[1])  # the same header
            in_line_order = heapq.merge(*readers, key=_line_of)
            writer.writerows(in_line_order)
        os.replace(self.temporary, self.target)
        self.discard()  # the two parts
        return self.target

    def discard(self) -> None:
        for part in (self._rejected, self._merged):
            part.close()
            part.path.unlink(missing_ok=True)
        self.temporary.unlink(missing_ok=True)


def _line_of(cells: list[str]) -> int:
    return int(cells[0])


def default_rejects_path(source: Path, var_dir: Path) -> Path:
    """Where an import's rejected rows go by default: named after the file and the time,
    plus a random part, since two imports of the same file within one second (the
    dashboard and the CLI, or a retry) would otherwise write one file, the second over the
    first's rows."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return var_dir / "rejects" / f"{source.stem}-{stamp}-{secrets.token_hex(3)}.rejects.csv"


def import_file(
    store: Store,
    path: Path,
    *,
    list_name: str,
    rejects_path: Path,
    encoding: str = "utf-8-sig",
    check_dns: bool = False,
    on_line: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import `path` into `list_name`; SubscriberFileError (and no change) if unreadable.

    `on_line` is told the line number of each row as it is read (the dashboard shows a
    long import's progress with it); it runs in the importing thread, so keep it cheap."""
    layout = CsvLayout()
    rejects = _RejectWriter(rejects_path, layout)

    short_rows: list[int] = []
    short_count = 0

    def valid_rows() -> Iterator[ImportRow]:
        nonlocal short_count
        for row in parse_csv(path, encoding=encoding, check_dns=check_dns, layout=layout):
            if on_line is not None:
                on_line(row.line)
            if row.subscriber is None:
                rejects.add(row)
                continue
            if row.short:
                short_count += 1
                if len(short_rows) < SHOWN_INVALID:
                    short_rows.append(row.line)
            yield ImportRow(row.subscriber, row.smtputf8, row.line)

    try:
        counts = store.import_subscribers(
            list_name, valid_rows(), source=str(path), on_duplicate=rejects.add_merged
        )
    except BaseException:
        rejects.discard()
        raise
    counts.invalid = rejects.count
    return ImportReport(
        counts,
        rejects.first,
        rejects.commit(),
        first_merged=rejects.first_merged,
        delimiter=layout.delimiter,
        replacing=rejects.replacing,
        short_rows=short_count,
        first_short=short_rows,
    )
