"""A subscriber file into a list: parse, validate, store in one transaction, keep the rejects.

Rejected rows are written, with their line number and reason, to a reject CSV that appears
only when the import commits; an interrupted import leaves neither store nor file changed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mailer.audience.csv_file import ParsedRow, parse_csv
from mailer.models import ImportCounts
from mailer.safety import spreadsheet_safe
from mailer.store import Store
from mailer.store.imports import ImportRow

SHOWN_INVALID = 10


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    counts: ImportCounts
    first_invalid: list[RejectedRow] = field(default_factory=list)
    rejects_path: Path | None = None


class _RejectWriter:
    """Writes rejects to a temporary file, published only by `commit()`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.with_name(f".{target.name}.partial")
        self._handle: TextIO | None = None
        self._writer: csv.DictWriter[str] | None = None
        self.count = 0
        self.first: list[RejectedRow] = []

    def add(self, row: ParsedRow) -> None:
        self.count += 1
        reason = row.error or "invalid"
        if len(self.first) < SHOWN_INVALID:
            self.first.append(RejectedRow(row.line, reason))
        if self._writer is None:
            self.temporary.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.temporary.open("w", encoding="utf-8", newline="")
            columns = ["line", "reason", *row.raw.keys()]
            self._writer = csv.DictWriter(self._handle, columns, extrasaction="ignore")
            self._writer.writeheader()
        # Organisers open this file in a spreadsheet: a rejected `=HYPERLINK(...)` must show
        # as text there, not run (OWASP CSV injection); re-importing it undoes the `'`.
        cells = {column: spreadsheet_safe(value) for column, value in row.raw.items()}
        self._writer.writerow({"line": row.line, "reason": spreadsheet_safe(reason), **cells})

    def commit(self) -> Path | None:
        if self._handle is None:
            return None
        self._handle.close()
        os.replace(self.temporary, self.target)
        return self.target

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.temporary.unlink(missing_ok=True)


def default_rejects_path(source: Path, var_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return var_dir / "rejects" / f"{source.stem}-{stamp}.rejects.csv"


def import_file(
    store: Store,
    path: Path,
    *,
    list_name: str,
    rejects_path: Path,
    encoding: str = "utf-8-sig",
    check_dns: bool = False,
) -> ImportReport:
    """Import `path` into `list_name`; SubscriberFileError (and no change) if unreadable."""
    rejects = _RejectWriter(rejects_path)

    def valid_rows() -> Iterator[ImportRow]:
        for row in parse_csv(path, encoding=encoding, check_dns=check_dns):
            if row.subscriber is None:
                rejects.add(row)
            else:
                yield ImportRow(row.subscriber, row.smtputf8)

    try:
        counts = store.import_subscribers(list_name, valid_rows(), source=str(path))
    except BaseException:
        rejects.discard()
        raise
    counts.invalid = rejects.count
    return ImportReport(counts, rejects.first, rejects.commit())
