"""Subscriber CSV in -> validated, normalised subscribers out, streaming.

Rules (issue "Foundation"): a header row with an `email` column is required; `name` is
optional; every other column becomes an attribute usable in templates. UTF-8 with or without
a BOM by default, any Python codec on request. Each bad row is reported with its line
number and reason and is never silently dropped; the caller decides where rejects go.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailer.addresses import InvalidAddress, normalise
from mailer.errors import SubscriberFileError
from mailer.models import Subscriber
from mailer.safety import MAX_FIELD_LENGTH, find_unsafe

_READ_SIZE = 1 << 16
EXTRA_FIELDS = "(fields beyond the header)"
"""Reject-file column holding, tab-separated, the fields a row has beyond the header."""
_ATTRIBUTE_NAME = re.compile(r"[^0-9a-z_]+")


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One data row: a subscriber, or the reason it was rejected (never both)."""

    line: int
    raw: dict[str, str]
    """The row as read, column by column; filled for rejected rows (for the reject file)."""
    subscriber: Subscriber | None = None
    error: str | None = None
    smtputf8: bool = False


@dataclass(slots=True)
class CsvHeader:
    columns: list[str]
    email_index: int
    name_index: int | None
    attribute_columns: list[tuple[int, str]] = field(default_factory=list)


def attribute_name(header: str) -> str:
    """`Home City` -> `home_city`: a name templates can use as `subscriber.home_city`."""
    return _ATTRIBUTE_NAME.sub("_", header.strip().lower()).strip("_")


def parse_csv(
    path: Path, *, encoding: str = "utf-8-sig", check_dns: bool = False
) -> Iterator[ParsedRow]:
    """Yield every data row of `path`, validated; raise SubscriberFileError if the file is unusable.

    Memory stays flat: the file is decoded and parsed incrementally.
    """
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise SubscriberFileError(f"unknown encoding {encoding!r}", path=path) from exc
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SubscriberFileError(f"cannot open: {exc.strerror}", path=path) from exc
    with handle:
        reader = csv.reader(_decoded_lines(handle, encoding, path), strict=True)
        header = _read_header(reader, path)
        last_line = reader.line_num
        try:
            for fields in reader:
                first_line, last_line = last_line + 1, reader.line_num
                if not any(value.strip() for value in fields):
                    continue  # blank lines are layout, not data
                yield _parse_row(fields, header, line=first_line, check_dns=check_dns)
        except csv.Error as exc:
            raise SubscriberFileError(
                f"malformed CSV: {exc}", path=path, line=reader.line_num
            ) from exc


def _decoded_lines(handle: BinaryIO, encoding: str, path: Path) -> Iterator[str]:
    """Decode incrementally and split into lines, so a bad byte is reported with its line."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    pending = ""
    line = 1
    read = handle.read
    while True:
        chunk = read(_READ_SIZE)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            # Find the line of the bad byte: lines already yielded + newlines before it.
            good = chunk[: max(exc.start, 0)]
            bad_line = line + pending.count("\n") + good.count(b"\n")
            raise SubscriberFileError(
                f"not valid {encoding} text ({exc.reason})",
                path=path,
                line=bad_line,
                hint="Save the file as UTF-8, or pass --encoding (e.g. --encoding cp1252).",
            ) from exc
        pending += text
        if "\n" in pending:
            *complete, pending = pending.split("\n")
            for piece in complete:
                line += 1
                yield piece + "\n"
        if not chunk:
            break
    if pending:
        yield pending


def _read_header(reader: Iterator[list[str]], path: Path) -> CsvHeader:
    try:
        columns = next(reader)
    except StopIteration:
        raise SubscriberFileError(
            "the file is empty; expected a header row with an `email` column", path=path
        ) from None
    except csv.Error as exc:
        raise SubscriberFileError(f"malformed header row: {exc}", path=path, line=1) from exc
    names = [attribute_name(column) for column in columns]
    if "email" not in names:
        raise SubscriberFileError(
            f"the header row has no `email` column (found: {', '.join(columns) or 'nothing'})",
            path=path,
            line=1,
            hint="The first row must name the columns, one of them `email`.",
        )
    seen: set[str] = set()
    for column, name in zip(columns, names, strict=True):
        if not name:
            raise SubscriberFileError(f"header {column!r} is not a usable name", path=path, line=1)
        if name in seen:
            raise SubscriberFileError(f"column {name!r} appears twice", path=path, line=1)
        seen.add(name)
    name_index = names.index("name") if "name" in names else None
    attributes = [(i, n) for i, n in enumerate(names) if n not in ("email", "name")]
    return CsvHeader(names, names.index("email"), name_index, attributes)


def _parse_row(fields: list[str], header: CsvHeader, *, line: int, check_dns: bool) -> ParsedRow:
    columns = header.columns

    def reject(reason: str) -> ParsedRow:
        # Every header column (empty when the row is short), and what a long row has
        # beyond them kept whole, so the reject file loses nothing the organiser typed.
        raw = {column: fields[i] if i < len(fields) else "" for i, column in enumerate(columns)}
        raw[EXTRA_FIELDS] = "\t".join(fields[len(columns) :])
        return ParsedRow(line, raw, error=reason)

    if len(fields) != len(columns):
        return reject(f"expected {len(columns)} fields, found {len(fields)}")
    # One scan of the whole row on the hot path; the per-field search runs only on a hit.
    # TAB is allowed in values, so joining with it cannot create or hide a finding.
    if max(map(len, fields)) > MAX_FIELD_LENGTH or find_unsafe("\t".join(fields)) is not None:
        for column, value in zip(columns, fields, strict=True):
            if len(value) > MAX_FIELD_LENGTH:
                return reject(f"{column}: longer than {MAX_FIELD_LENGTH} characters")
            problem = find_unsafe(value)
            if problem is not None:
                return reject(f"{column}: {problem}")
    email = fields[header.email_index]
    if not email.strip():
        return reject("email: empty")
    try:
        address = normalise(email, check_dns=check_dns)
    except InvalidAddress as exc:
        return reject(f"email: {exc}")
    if address.smtputf8:
        # Such an address can only be delivered over SMTPUTF8 (RFC 6531), which the
        # composer does not produce yet: refuse it here, with the reason, rather than
        # importing someone every send would fail.
        return reject(
            "email: non-ASCII characters before the @ need SMTPUTF8, which mailer does not send yet"
        )
    name = fields[header.name_index].strip() if header.name_index is not None else ""
    attributes = {key: fields[index].strip() for index, key in header.attribute_columns}
    subscriber = Subscriber(email=address.email, name=name, attributes=attributes)
    return ParsedRow(line, {}, subscriber=subscriber, smtputf8=address.smtputf8)
