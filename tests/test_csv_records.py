"""The CSV record reader: the csv module's records, in one pass and bounded memory (issue 9)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.audience.csv_file import open_records
from mailer.audience.csv_records import CsvRecords, MalformedCsv, Record


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def csv_module_rows(text: str) -> tuple[list[tuple[int, list[str]]], bool]:
    """(start line, fields) of each record as the csv module reads them, and whether it
    refused the text; lines split at LF only, as the import always fed it."""
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return rows, False
            rows.append((start, fields or [""]))  # a blank line: [] there, [""] here
    except csv.Error:
        return rows, True


def our_rows(
    text: str, chunk_size: int, *, field_keep: int = 100, max_fields: int = 100
) -> tuple[list[Record], bool]:
    records: list[Record] = []
    try:
        for record in CsvRecords(
            chunked(text, chunk_size), field_keep=field_keep, max_fields=max_fields
        ):
            records.append(record)
    except MalformedCsv:
        return records, True
    return records, False


# Well-formed CSV: records of quoted fields (holding commas, quotes and line breaks) and
# unquoted ones (a quote in them is text), LF or CR LF line ends, with or without a last one.
_FIELD = st.one_of(
    st.just(""),
    # unquoted: a `"` is an ordinary character after the first one
    st.tuples(st.sampled_from("ab "), st.text(alphabet='ab "', max_size=3)).map("".join),
    st.text(alphabet='ab ,"\r\n', max_size=4).map(lambda v: '"' + v.replace('"', '""') + '"'),
)
_RECORD = st.lists(_FIELD, min_size=1, max_size=6).map(",".join)
WELL_FORMED = st.tuples(
    st.lists(_RECORD, max_size=6), st.sampled_from(["\n", "\r\n"]), st.booleans()
).map(lambda t: t[1].join(t[0]) + (t[1] if t[2] and t[0] else ""))


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet='ab ,"\r\n', max_size=40),  # mostly malformed
        WELL_FORMED,
    ),
    chunk_size=st.integers(min_value=1, max_value=50),
    field_keep=st.sampled_from([1, 2, 3, 5, 100]),  # 100: whole lines take the fast path
    max_fields=st.sampled_from([1, 2, 4, 100]),
)
def test_same_records_as_the_csv_module_cut_to_the_bounds(
    text: str, chunk_size: int, field_keep: int, max_fields: int
) -> None:
    """Whatever the text and wherever the chunks split it, the records, their start lines and
    the refusals are the csv module's; fields past the bounds are cut and counted, not lost."""
    expected, refused = csv_module_rows(text)
    records, we_refused = our_rows(text, chunk_size, field_keep=field_keep, max_fields=max_fields)
    assert we_refused == refused
    assert [r.line for r in records] == [line for line, _ in expected]
    for record, (_, fields) in zip(records, expected, strict=True):
        assert record.field_count == len(fields)
        assert record.fields == [value[:field_keep] for value in fields[:max_fields]]
        assert dict(record.cut) == {
            i: len(value) for i, value in enumerate(fields[:max_fields]) if len(value) > field_keep
        }


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('email\na@example.org\n"never\nclosed\n', 3, "opens on line 3 never closes"),
        ('email,name\na@example.org,"Ann"x\n', 2, "'x' after the closing quote"),
        ("email,name\na@example.org,Ann\rBob\n", 2, r"carriage return \(CR\) in the middle"),
    ],
)
def test_malformed_text_names_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(MalformedCsv, match=message) as info:
        list(CsvRecords([text], field_keep=100, max_fields=10))
    assert info.value.line == line


@pytest.mark.parametrize("quoted", [False, True], ids=["unquoted", "quoted"])
def test_a_long_field_is_cut_and_measured_and_later_lines_still_count(quoted: bool) -> None:
    """A 5 MB field costs `field_keep` characters of memory; its length and every later
    record's line number are still exact."""
    size = 5_000_000
    value = ("x" * 99 + "\n") * (size // 100) if quoted else "x" * size
    field = f'"{value}"' if quoted else value
    text = f"email,name\na@example.org,{field},more\nb@example.org,Bob\n"
    records = list(CsvRecords(chunked(text, 1 << 16), field_keep=20, max_fields=3))
    assert [r.line for r in records] == [1, 2, 3 + (value.count("\n"))]
    long = records[1]
    assert long.fields == ["a@example.org", "x" * 20, "more"]
    assert long.field_count == 3
    assert dict(long.cut) == {1: size}
    assert records[2].fields == ["b@example.org", "Bob"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("w", "w"), ('""', ""), ('a"b', 'a"b'), ('"x,""y\nz"', 'x,"y\nz'), ("", "")],
    ids=["plain", "empty quoted", "quote inside", "quoted comma and line", "empty"],
)
def test_a_row_of_a_million_fields_keeps_max_fields_and_counts_them_all(
    field: str, value: str
) -> None:
    """Past `max_fields` a row is only counted (in C, a run of fields at a time), across
    64 KiB chunks, whatever its fields look like; lines inside quotes still count."""
    text = "email,name\n" + (field + ",") * 1_000_000 + "last\nnext,row\n"
    records = list(CsvRecords(chunked(text, 1 << 16), field_keep=10, max_fields=5))
    assert len(records) == 3
    assert records[1].field_count == 1_000_001
    assert records[1].fields == [value] * 5
    assert records[2].line == 3 + value.count("\n") * 1_000_000
    assert records[2].fields == ["next", "row"]


def scanned_for_one_line(tmp_path: Path, length: int, *, quoted: bool) -> tuple[int, int]:
    """Read a file as the import does (decoded 64 KiB at a time); return (work, size)."""
    value = ("y" * 63 + "\n") * (length // 64) if quoted else "y" * length
    text = "email,name\n" + "a@example.org," + (f'"{value}"' if quoted else value) + "\n"
    path = tmp_path / f"long-{length}.csv"
    path.write_text(text, encoding="utf-8")
    with open_records(path) as records:
        assert sum(1 for _ in records) == 2
    return records.scanned, len(text)


@pytest.mark.parametrize("quoted", [False, True], ids=["unquoted", "quoted"])
def test_reading_one_long_line_is_linear_in_its_length(tmp_path: Path, quoted: bool) -> None:
    """The work (characters searched, split or copied, every repeat included) grows with
    the line, not with its square: a line 4x as long costs 4x, a few looks per character.
    (The old reader searched all the text not yet split after each 64 KiB read: a 4x line
    cost 16x, and a 1 GiB line ran for minutes.)"""
    small, small_size = scanned_for_one_line(tmp_path, 4 << 20, quoted=quoted)
    large, large_size = scanned_for_one_line(tmp_path, 16 << 20, quoted=quoted)
    assert small <= 3 * small_size
    assert large <= 3 * large_size
    assert large / small == pytest.approx(large_size / small_size, rel=0.05)
