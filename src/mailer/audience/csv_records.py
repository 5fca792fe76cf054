"""CSV records from a stream of text chunks: one pass over the text, memory bounded per record.

Why not the csv module: it must be fed whole lines, holds a whole field in memory, and past
its `field_size_limit` (128 KiB) it raises, which ended the whole import (issue 9). A
subscriber file is untrusted input: a 1 GiB line must cost one pass and a few KiB, and come
out as a record its caller can reject with its line number.

The dialect is the one the import has always read (the csv module's `excel`, strict), with
the delimiter the caller gives (`,` by default; `;` and TAB, as spreadsheets in many locales
write them, too): it separates fields; a field that starts with `"` is quoted, `""` inside
it stands for one `"`, and it may hold the delimiter, CR and LF; a `"` inside an unquoted
field is an ordinary character; a record ends at LF, and CRs just before that LF are
dropped. Malformed (MalformedCsv, with its line): anything but the delimiter or the end of
the line after a closing quote, a CR that does not end a line outside quotes, and a file
that ends inside quotes.

Bounds: a field keeps its first `field_keep` characters, and the record says how long it
really was (`Record.cut`); a record keeps its first `max_fields` fields and counts the rest,
a run of whole fields at a time in C. No text is ever carried from one chunk to the next: a
record that spans chunks is built from pieces, so each character is looked at a small,
fixed number of times. `scanned` counts those looks, which lets a test check the linear
cost without a clock.

Speed: a whole line within a chunk, no longer than `field_keep`, is read by C code
(`str.split`, or the csv module when it has quotes); the state machine reads the rest.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum, auto
from types import MappingProxyType
from typing import NamedTuple

DELIMITERS = {",": "a comma", ";": "a semicolon", "\t": "a tab"}
"""The delimiters read, with how an error message names each."""
_QUOTE_OR_LINE_END = re.compile(r'["\r\n]')


class _Dialect(NamedTuple):
    """The patterns for one delimiter (D below)."""

    delimiter: str
    ends: str
    """What ends an unquoted field: D, CR or LF."""
    unquoted_end: re.Pattern[str]
    fields: re.Pattern[str]
    """A run of whole fields, each followed by its D: quoted, unquoted (a `"` inside one is
    an ordinary character), or empty. Possessive, so a long run never backtracks."""
    quoted_field: re.Pattern[str]
    """A quoted field: its opening quote starts a field (the text's start, or after a D)."""
    literal_quote: re.Pattern[str]


def _dialect(delimiter: str) -> _Dialect:
    d = re.escape(delimiter)
    return _Dialect(
        delimiter,
        delimiter + "\r\n",
        re.compile(rf"[{d}\r\n]"),
        re.compile(rf'(?:"[^"]*+(?:""[^"]*+)*+"{d}|[^{d}"\r\n][^{d}\r\n]*+{d}|{d})*+'),
        re.compile(rf'(?<![^{d}])"[^"]*+(?:""[^"]*+)*+"'),
        re.compile(rf'[^{d}"]"'),
    )


_DIALECTS = {delimiter: _dialect(delimiter) for delimiter in DELIMITERS}


def _fields_in_run(run: str, dialect: _Dialect) -> int:
    """How many fields a run of whole fields (as dialect.fields matches) holds: its
    delimiters that are not inside quotes. All in C, in a few passes over the run."""
    if run.count('"') % 2 == 0:
        # If every quote opens, closes or doubles within a quoted field, the pieces between
        # quotes alternate outside / inside, and what lies outside, joined by quotes, has a
        # quote only after a delimiter (an opening one) or after another quote.
        outside = '"'.join(run.split('"')[0::2])
        if dialect.literal_quote.search(outside) is None:
            return outside.count(dialect.delimiter)
    # A `"` inside an unquoted field broke that alternation: drop the quoted fields instead
    # (slower: one match per quoted field, so only for such rare rows).
    return dialect.quoted_field.sub("", run).count(dialect.delimiter)


_NO_CUT: Mapping[int, int] = MappingProxyType({})


class MalformedCsv(Exception):
    """The text is not CSV from `line` on; nothing after it can be trusted to line up."""

    def __init__(self, reason: str, *, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class Record(NamedTuple):
    """One record. A NamedTuple, not a dataclass: one is made per row on the hot path."""

    line: int
    """The line the record starts on (1-based)."""
    fields: list[str]
    """The first `max_fields` fields, each cut to `field_keep` characters."""
    field_count: int
    """How many fields the record has, kept or not."""
    cut: Mapping[int, int] = _NO_CUT
    """Index -> full length, for each kept field longer than `field_keep`."""


class _State(Enum):
    START_RECORD = auto()
    START_FIELD = auto()
    UNQUOTED = auto()
    QUOTED = auto()
    AFTER_QUOTE = auto()  # a `"` inside a quoted field: the first of `""`, or the closing one
    AFTER_CR = auto()  # a CR outside quotes: only more CRs, then LF or the end, may follow


# Module names for the states: the fast path tests one per row, and a global is read several
# times faster than an Enum member.
_START_RECORD, _START_FIELD, _UNQUOTED = _State.START_RECORD, _State.START_FIELD, _State.UNQUOTED
_QUOTED, _AFTER_QUOTE, _AFTER_CR = _State.QUOTED, _State.AFTER_QUOTE, _State.AFTER_CR


class _OneLine:
    """Gives the csv module the one line it is set to, then stops it."""

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line, self.line = self.line, None
        if line is None:
            raise StopIteration
        return line


class CsvRecords:
    """Iterate over the records in `chunks` (consecutive pieces of one text)."""

    def __init__(
        self, chunks: Iterable[str], *, field_keep: int, max_fields: int, delimiter: str = ","
    ) -> None:
        if delimiter not in _DIALECTS:
            raise ValueError(f"delimiter {delimiter!r}: one of {sorted(DELIMITERS)} expected")
        self._chunks = chunks
        self.delimiter = delimiter
        self._dialect = _DIALECTS[delimiter]
        self.field_keep = field_keep
        self.max_fields = max_fields
        """May be changed between records (e.g. once the header is known)."""
        self.scanned = 0
        """Characters looked at (searched, split or copied), counting every repeat look."""
        self._line = 1
        self._state = _START_RECORD
        self._record_line = 1
        self._quote_line = 1
        self._fields: list[str] = []
        self._field_count = 0
        self._cut: dict[int, int] = {}
        self._pieces: list[str] = []
        self._kept = 0
        self._length = 0
        self._one_line = _OneLine()
        self._csv = csv.reader(self._one_line, strict=True, delimiter=delimiter)

    def __iter__(self) -> Iterator[Record]:
        delimiter = self.delimiter
        for text in self._chunks:
            pos, end = 0, len(text)
            fast = 0  # characters of this chunk read by the fast path
            while pos < end:
                if self._state is _START_RECORD:
                    # Fast path (one line of this chunk, short enough that no field needs
                    # cutting): C code does the work, str.split or else the csv module.
                    # Written out here, not called: it runs once per row.
                    newline = text.find("\n", pos)
                    if 0 <= newline - pos <= self.field_keep:
                        line = text[pos:newline]
                        if '"' not in line:
                            if line.endswith("\r"):
                                line = line.rstrip("\r")
                            fields: list[str] | None = (
                                None if "\r" in line else line.split(delimiter)
                            )
                        else:
                            fields = self._quoted_line(text[pos : newline + 1])
                        if fields is not None and len(fields) <= self.max_fields:
                            # Record's own __new__ costs a third more, once per row.
                            yield tuple.__new__(Record, (self._line, fields, len(fields), _NO_CUT))
                            self._line += 1
                            fast += newline + 1 - pos
                            pos = newline + 1
                            continue
                    # The find, and the fast path's look if it had one.
                    self.scanned += 4 * ((end if newline < 0 else newline + 1) - pos)
                    self._state = _START_FIELD
                    self._record_line = self._line
                pos, record = self._advance(text, pos, end)
                if record is not None:
                    yield record
            self.scanned += 5 * fast  # the find, the copy, two searches and the split
        last = self._finish()
        if last is not None:
            yield last

    def _quoted_line(self, line: str) -> list[str] | None:
        """The fields of `line` (with quotes, ending in LF) if it holds one whole record.

        The csv module reads it, on this line alone. It asks for another line only when a
        quoted field goes on past this one, and raises on malformed quoting: either way the
        state machine reads the record instead (and words any error itself).
        """
        self._one_line.line = line
        try:
            return next(self._csv) or [""]  # a blank line is [] there, one empty field here
        except csv.Error:
            return None

    def _advance(self, text: str, pos: int, end: int) -> tuple[int, Record | None]:
        """Read on from `pos` until the record ends (and return it) or the text does."""
        while pos < end:
            state = self._state
            if state is _START_FIELD and self._field_count >= self.max_fields:
                # Past the fields kept, a long row is only counted, a run of whole fields at
                # a time in C: a line of a billion tiny fields is not a billion Python steps.
                pos = self._count_fields(text, pos)
                if pos == end:
                    return end, None
            if state is _QUOTED:
                quote = text.find('"', pos)
                stop = end if quote < 0 else quote
                self.scanned += 2 * (stop - pos)  # the search and the line count
                self._line += text.count("\n", pos, stop)
                self._take(text, pos, stop)
                if quote < 0:
                    return end, None
                self._state = _AFTER_QUOTE
                pos = quote + 1
                continue
            if state is _UNQUOTED:
                match = self._dialect.unquoted_end.search(text, pos)
                stop = end if match is None else match.start()
                self.scanned += stop - pos
                self._take(text, pos, stop)
                if match is None:
                    return end, None
                pos = stop
                state = self._state = _START_FIELD  # the separator, as after any field
            char = text[pos]
            pos += 1
            self.scanned += 1
            if state is _AFTER_CR:
                if char == "\n":
                    return pos, self._end_record()
                if char != "\r":
                    raise MalformedCsv(
                        "a carriage return (CR) in the middle of a line, outside quotes "
                        "(only LF or CR LF may end a line)",
                        line=self._line,
                    )
            elif char in self._dialect.ends:  # ends a field: START_FIELD (an empty one)
                self._save_field()  # or AFTER_QUOTE
                if char == "\n":
                    return pos, self._end_record()
                self._state = _START_FIELD if char == self.delimiter else _AFTER_CR
            elif state is _AFTER_QUOTE:
                if char != '"':
                    raise MalformedCsv(
                        f"{char!r} after the closing quote of a field "
                        f"(expected {DELIMITERS[self.delimiter]} or the end of the line)",
                        line=self._line,
                    )
                self._take('"', 0, 1)  # `""` inside quotes stands for one `"`
                self._state = _QUOTED
            elif char == '"':  # START_FIELD
                self._state = _QUOTED
                self._quote_line = self._line
            else:  # START_FIELD, and the field's first character is ordinary text
                self._state = _UNQUOTED
                pos -= 1
        return pos, None

    def _count_fields(self, text: str, pos: int) -> int:
        """Count the whole fields (each ending in a delimiter) from `pos`; return where they
        end."""
        dialect = self._dialect
        # Up to the next quote or line end, fields are plain: count their delimiters.
        special = _QUOTE_OR_LINE_END.search(text, pos)
        limit = len(text) if special is None else special.start()
        last_delimiter = text.rfind(dialect.delimiter, pos, limit)
        self.scanned += 3 * (limit - pos)  # the search, the rfind and the count
        if last_delimiter >= 0:
            self._field_count += text.count(dialect.delimiter, pos, limit)
            pos = last_delimiter + 1
        # Then, if a quoted field starts here, a run of whole fields, quoted or not.
        match = dialect.fields.match(text, pos)
        stop = pos if match is None else match.end()  # never None: the run may be empty
        if stop > pos:
            span = text[pos:stop]
            self._field_count += _fields_in_run(span, dialect)
            self._line += span.count("\n")  # line ends in a run are all inside quotes
            self.scanned += 6 * len(span)  # the match, the copy, the split, join, the counts
        return stop

    def _take(self, text: str, start: int, stop: int) -> None:
        """Add text[start:stop] to the current field, keeping at most `field_keep` of it."""
        self._length += stop - start
        room = self.field_keep - self._kept
        if room > 0 and stop > start:
            piece = text[start : min(stop, start + room)]
            self.scanned += len(piece)
            self._pieces.append(piece)
            self._kept += len(piece)

    def _save_field(self) -> None:
        index = self._field_count
        self._field_count += 1
        if index < self.max_fields:
            pieces = self._pieces
            self._fields.append(pieces[0] if len(pieces) == 1 else "".join(pieces))
            if self._length > self._kept:
                self._cut[index] = self._length
        self._pieces = []
        self._kept = self._length = 0

    def _end_record(self) -> Record:
        record = Record(self._record_line, self._fields, self._field_count, self._cut)
        self._fields, self._field_count, self._cut = [], 0, {}
        self._line += 1  # the LF that ended it (at the end of the text, nothing reads it)
        self._state = _START_RECORD
        return record

    def _finish(self) -> Record | None:
        """The end of the text: close the last record, unless it has no end."""
        state = self._state
        if state is _START_RECORD:
            return None
        if state is _QUOTED:
            raise MalformedCsv(
                f"the quoted field that opens on line {self._quote_line} never closes",
                line=self._quote_line,
            )
        if state is not _AFTER_CR:
            self._save_field()
        return self._end_record()
