"""Subscriber CSV in -> validated, normalised subscribers out, streaming.

Rules (issue "Foundation"): a header row with an `email` column is required, except in a
file of addresses alone, one a line (the commonest list there is): a first line that is one
field holding an `@` is an address, not a column name. `name` is optional; every other
column becomes an attribute usable in templates. A row shorter than the header has its
missing trailing cells empty (what spreadsheets write when those cells are blank; the
report names such rows); a row longer than it is rejected, even if what lies beyond is
empty (a stray delimiter would shift its values). UTF-8 with or without
a BOM by default, any Python codec on request. Columns are separated by `,`, or by `;` or
TAB (what spreadsheets write in many locales), found from the header line. Each bad row is
reported with its line number and reason and is never silently dropped; the caller decides
where rejects go.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailer.addresses import InvalidAddress, normalise
from mailer.audience.csv_records import DELIMITERS, CsvRecords, MalformedCsv, Record
from mailer.errors import SubscriberFileError
from mailer.models import Subscriber
from mailer.safety import MAX_FIELD_LENGTH, find_unsafe, tidy_text, undo_spreadsheet_safe

_READ_SIZE = 1 << 16
FIELD_KEEP = 4096
"""Characters of one field that are kept: more than MAX_FIELD_LENGTH, so an over-long field
is still seen (and rejected) as one; what lies beyond is counted, never held (issue 9)."""
_EXTRA_FIELDS_KEPT = 64
"""Fields kept beyond the header's count in a long row (for the reject file); the rest counted."""
_MAX_COLUMNS = 1000
"""Columns read in the header row; with FIELD_KEEP this bounds the memory one row can take."""
EXTRA_FIELDS = "(fields beyond the header)"
"""Reject-file column holding, tab-separated, the fields a row has beyond the header."""
_ATTRIBUTE_NAME = re.compile(r"[^0-9a-z_]+")
SNIFFED = 4096
"""Characters of the header line csv.Sniffer looks at: plenty to see the delimiter, and
its patterns take time quadratic in their input (about 0.1 s for 4 KiB of the worst)."""


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One data row: a subscriber, or the reason it was rejected (never both)."""

    line: int
    raw: dict[str, str]
    """The row as read, column by column (a field cut to FIELD_KEEP, an exported `'` undone);
    filled for rejected rows (for the reject file)."""
    subscriber: Subscriber | None = None
    error: str | None = None
    smtputf8: bool = False
    short: bool = False
    """Fewer fields than the header: the missing last cells were read as empty."""


@dataclass(slots=True)
class CsvLayout:
    """What parse_csv found out about a file, filled in once its header row is read."""

    delimiter: str = ","
    columns: list[str] = field(default_factory=list)
    """The header's columns as attribute names (`Home City` -> `home_city`)."""


@dataclass(slots=True)
class CsvHeader:
    columns: list[str]
    email_index: int
    name_index: int | None
    attribute_columns: list[tuple[int, str]] = field(default_factory=list)
    first_row: Record | None = None
    """The file's first line when it is a subscriber, not column names (a file of addresses
    alone): it is read as the first data row."""


def attribute_name(header: str) -> str:
    """`Home City` -> `home_city`: a name templates can use as `subscriber.home_city`."""
    return _ATTRIBUTE_NAME.sub("_", header.strip().lower()).strip("_")


def parse_csv(
    path: Path,
    *,
    encoding: str = "utf-8-sig",
    check_dns: bool = False,
    layout: CsvLayout | None = None,
) -> Iterator[ParsedRow]:
    """Yield every data row of `path`, validated; raise SubscriberFileError if the file is unusable.

    Time is linear in the file's size and memory stays flat, whatever the length of a line or
    a field: the file is decoded and parsed incrementally (see csv_records). `layout`, if
    given, learns the delimiter and the columns once the header row is read.
    """
    with open_records(path, encoding) as records:
        rows = iter(records)
        try:
            header = _read_header(rows, path)
            if layout is not None:
                layout.delimiter, layout.columns = records.delimiter, list(header.columns)
            # Enough to keep a whole valid row, and some of what a long row has beyond it.
            records.max_fields = len(header.columns) + _EXTRA_FIELDS_KEPT
            first = [] if header.first_row is None else [header.first_row]
            for record in itertools.chain(first, rows):
                if not "".join(record.fields).strip() and _is_blank(record):
                    continue  # blank lines are layout, not data
                yield _parse_row(record, header, check_dns=check_dns)
        except MalformedCsv as exc:
            raise SubscriberFileError(
                f"malformed CSV: {exc.reason}", path=path, line=exc.line
            ) from exc


@contextmanager
def open_records(
    path: Path, encoding: str = "utf-8-sig", delimiter: str | None = None
) -> Iterator[CsvRecords]:
    """The file's CSV records, bounded as parse_csv reads them (to iterate once); the
    delimiter found from the header line unless given."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise SubscriberFileError(f"unknown encoding {encoding!r}", path=path) from exc
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SubscriberFileError(f"cannot open: {exc.strerror}", path=path) from exc
    with handle:
        chunks = _decoded_text(handle, encoding, path)
        if delimiter is None:
            delimiter, chunks = _sniffed(chunks)
        yield CsvRecords(
            chunks, field_keep=FIELD_KEEP, max_fields=_MAX_COLUMNS, delimiter=delimiter
        )


def sniff_delimiter(header_line: str) -> str:
    """`,`, `;` or TAB, as csv.Sniffer reads the header line; `,` when it cannot tell (a
    single column, say)."""
    try:
        return csv.Sniffer().sniff(header_line[:SNIFFED], delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","


def _sniffed(chunks: Iterator[str]) -> tuple[str, Iterator[str]]:
    """The header line's delimiter, and the same chunks, none lost: only the chunks up to
    the first line end (or SNIFFED characters) are read ahead."""
    ahead: list[str] = []
    size = 0
    for chunk in chunks:
        ahead.append(chunk)
        size += len(chunk)
        if "\n" in chunk or size >= SNIFFED:
            break
    start = "".join(ahead)[:SNIFFED]
    return sniff_delimiter(start.partition("\n")[0]), itertools.chain(ahead, chunks)


def _decoded_text(handle: BinaryIO, encoding: str, path: Path) -> Iterator[str]:
    """Decode incrementally, chunk by chunk, so a bad byte is reported with its line.

    Each chunk is decoded once and its newlines counted once: no text is kept or looked at
    again (the old line splitter searched everything not yet split after every read, which
    made one long line cost its length squared).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines_before = 0
    read = handle.read
    while True:
        chunk = read(_READ_SIZE)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            good = chunk[: max(exc.start, 0)]
            raise SubscriberFileError(
                f"not valid {encoding} text ({exc.reason})",
                path=path,
                line=lines_before + good.count(b"\n") + 1,
                hint="Save the file as UTF-8, or pass --encoding (e.g. --encoding cp1252).",
            ) from exc
        if text:
            lines_before += text.count("\n")
            yield text
        if not chunk:
            return


def _is_blank(record: Record) -> bool:
    """Given blank fields kept, is the row blank? Not if anything was cut or dropped: then it
    has text the fields kept do not show, and is data (to reject, not to skip unseen)."""
    return not record.cut and record.field_count == len(record.fields)


# Headers of the address column in other tools' exports ("Email Address": Mailchimp,
# Google Contacts; "E-mail"), as attribute_name spells them: taken for `email` when the
# file has no `email` column and exactly one of these.
_EMAIL_ALIASES = frozenset({"email_address", "e_mail", "e_mail_address"})


def _read_header(rows: Iterator[Record], path: Path) -> CsvHeader:
    try:
        record = next(rows)
    except StopIteration:
        raise SubscriberFileError(
            "the file is empty; expected a header row with an `email` column", path=path
        ) from None
    if record.field_count > len(record.fields):
        raise SubscriberFileError(
            f"the header row has {record.field_count:,} columns; at most {_MAX_COLUMNS} are read",
            path=path,
            line=record.line,
        )
    if record.cut:
        index = min(record.cut)
        raise SubscriberFileError(
            f"header {index + 1} is {record.cut[index]:,} characters long; "
            f"at most {FIELD_KEEP:,} are read",
            path=path,
            line=record.line,
        )
    columns = record.fields
    names = [attribute_name(column) for column in columns]
    aliases = [n for n in names if n in _EMAIL_ALIASES]
    if "email" not in names and len(aliases) == 1:
        names[names.index(aliases[0])] = "email"  # a Mailchimp or Google Contacts export
    if "email" not in names and any("@" in column for column in columns):
        # No column name holds an `@`: this line is a subscriber. Alone on its line it can
        # only be the address; beside other fields, which is the name and which an
        # attribute is a guess, and a wrong guess would store everyone's data wrongly.
        if len(columns) == 1:
            return CsvHeader(["email"], 0, None, first_row=record)
        position = next(i for i, column in enumerate(columns) if "@" in column) + 1
        raise SubscriberFileError(
            f"the first row looks like a subscriber (an address in field {position}), "
            "not the names of the columns",
            path=path,
            line=record.line,
            hint="Add a first row naming the columns, one of them `email`; "
            "a file of addresses alone, one a line, needs none.",
        )
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


def _parse_row(record: Record, header: CsvHeader, *, check_dns: bool) -> ParsedRow:
    columns = header.columns
    fields = record.fields
    joined = "\t".join(fields)
    if "'" in joined:
        # Read back what an export neutralised for spreadsheets (`'-Ann` -> `-Ann`). Only
        # the one `'` that spreadsheet_safe adds before = + - @ TAB CR is dropped, so every
        # exported file reads back to the very values it was made from. A file typed by hand
        # with such a cell (a leading `'` then one of those characters, in an address or a
        # name) loses that `'` too: it is what an export would have written for the value
        # without it, and a `'`-led address of that form is far rarer than a neutralised one.
        fields = [undo_spreadsheet_safe(value) for value in fields]
        joined = "\t".join(fields)
    typed = fields

    def reject(reason: str) -> ParsedRow:
        # Every header column (empty when the row is short), and what a long row has
        # beyond them, so the reject file loses nothing the organiser typed, except what
        # the bounds cut off, which the reason then states; values as typed, not tidied.
        raw = {column: typed[i] if i < len(typed) else "" for i, column in enumerate(columns)}
        raw[EXTRA_FIELDS] = "\t".join(typed[len(columns) :])
        if record.cut or record.field_count > len(typed):
            reason += _cut_note(record, columns)
        return ParsedRow(record.line, raw, error=reason)

    short = False
    if record.field_count > len(columns):
        # More fields than columns: a stray delimiter or a shifted row, whose values would
        # land under the wrong names. Even empty cells beyond the header: an unquoted
        # "Smith, Ann" in a row whose last cell is empty looks just like a trailing comma,
        # and took the rest of the row one column along (a review: city=Ann, phone=Leeds,
        # over the stored values).
        return reject(f"{record.field_count:,} fields, more than the header's {len(columns)}")
    if record.field_count < len(columns):
        # Spreadsheets end a row at its last non-empty cell: the missing ones are empty.
        if record.field_count <= header.email_index:
            return reject(
                f"email: missing (the row has {record.field_count} of the header's "
                f"{len(columns)} fields; `email` is field {header.email_index + 1})"
            )
        fields = fields + [""] * (len(columns) - record.field_count)
        short = True  # said in the report: a cell missing mid-row shifts the rest left
    # Names and attributes reach the greeting and the To header: odd spaces become one
    # space and bidi overrides go here, at the edge, so none is ever stored raw. The
    # address is left as typed: normalise() below refuses what it cannot read.
    email_index = header.email_index
    fields = [
        value if index == email_index else tidy_text(value) for index, value in enumerate(fields)
    ]
    joined = "\t".join(fields)
    # One scan of the whole row on the hot path; the per-field search runs only on a hit.
    # TAB is allowed in values, so joining with it cannot create or hide a finding. A field
    # that was cut is still longer than MAX_FIELD_LENGTH (FIELD_KEEP is larger), so no row
    # with a cut field gets past this check.
    if max(map(len, fields)) > MAX_FIELD_LENGTH or find_unsafe(joined) is not None:
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
    name = fields[header.name_index] if header.name_index is not None else ""
    attributes = {key: fields[index] for index, key in header.attribute_columns}
    subscriber = Subscriber(email=address.email, name=name, attributes=attributes)
    return ParsedRow(record.line, {}, subscriber=subscriber, smtputf8=address.smtputf8, short=short)


def _cut_note(record: Record, columns: list[str]) -> str:
    """What the reject file will not hold whole, for the reason: nothing goes silently."""
    notes = [
        f"the first {FIELD_KEEP:,} of the {length:,} characters of "
        + (columns[index] if index < len(columns) else f"field {index + 1}")
        for index, length in sorted(record.cut.items())
    ]
    if record.field_count > len(record.fields):
        notes.append(f"the first {len(record.fields):,} of the {record.field_count:,} fields")
    return f" (the reject file keeps {'; '.join(notes)})" if notes else ""
