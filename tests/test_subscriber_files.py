"""Reading subscriber CSV files: headers, encodings, bad rows with line numbers."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from mailer.audience.csv_file import FIELD_KEEP, parse_csv
from mailer.errors import SubscriberFileError

EXAMPLE = Path(__file__).resolve().parent.parent / "subscribers.example.csv"


def write(tmp_path: Path, content: bytes, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_example_file_is_clean_and_varied() -> None:
    """The shipped example has a dozen valid rows, extra columns, non-ASCII names and an IDN."""
    rows = list(parse_csv(EXAMPLE))
    assert len(rows) >= 12
    assert all(row.error is None for row in rows)
    subscribers = [row.subscriber for row in rows if row.subscriber]
    names = {s.name for s in subscribers}
    assert {"Zoë Martin", "José García", "Łukasz Nowak"} <= names
    assert all("city" in s.attributes for s in subscribers)
    assert any("@xn--" in s.email for s in subscribers), "IDN domain goes out in ASCII form"


def test_bom_and_header_names_are_normalised(tmp_path: Path) -> None:
    """A UTF-8 BOM (Excel) is ignored and `Home City` becomes the attribute `home_city`."""
    path = write(tmp_path, "\ufeffEmail,Name,Home City\nA@Example.ORG,Ana,Leeds\n".encode())
    (row,) = list(parse_csv(path))
    assert row.subscriber is not None
    assert row.subscriber.email == "A@example.org"
    assert row.subscriber.attributes == {"home_city": "Leeds"}


def test_bad_rows_carry_line_numbers_and_reasons(tmp_path: Path) -> None:
    """Each bad row is reported with its own line, counting quoted multi-line fields."""
    content = (
        "email,name\n"
        'ok@example.org,"Two\nlines"\n'
        "not-an-address,Bob\n"
        'evil@example.org,"Eve\rBcc: x@y.z"\n'
        f"long@example.org,{'x' * 1001}\n"
        "wide@example.org,Wide,York\n"
        ",Nobody\n"
    ).encode()
    rows = list(parse_csv(write(tmp_path, content)))
    errors = {row.line: row.error for row in rows if row.error}
    assert rows[0].error == "name: control character U+000A at position 4"
    assert errors[4] is not None
    assert errors[4].startswith("email:")
    assert errors[5] == "name: control character U+000D at position 4"
    assert errors[6] == "name: longer than 1000 characters"
    assert errors[7] == "3 fields, more than the header's 2"
    assert errors[8] == "email: empty"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"name,city\nAna,Leeds\n", "no `email` column"),
        (b"email,Email\na@example.org,b\n", "appears twice"),
    ],
)
def test_unusable_files_fail_before_any_row(tmp_path: Path, content: bytes, message: str) -> None:
    """A file without a usable header is refused as a whole, naming the file."""
    path = write(tmp_path, content)
    with pytest.raises(SubscriberFileError, match=message) as info:
        list(parse_csv(path))
    assert info.value.path == path


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    """Latin-1 bytes in a file read as UTF-8 fail with the line they are on."""
    path = write(
        tmp_path, "email,name\na@example.org,Ann\nb@example.org,Jos\xe9\n".encode("latin-1")
    )
    with pytest.raises(SubscriberFileError) as info:
        list(parse_csv(path))
    assert info.value.line == 3
    assert "utf-8" in str(info.value)
    assert str(info.value).startswith(f"{path}:3:")


def test_other_encodings_on_request(tmp_path: Path) -> None:
    """--encoding reads cp1252 and UTF-16 files correctly."""
    text = "email,name\njose@example.org,José\n"
    for encoding in ("cp1252", "utf-16"):
        path = write(tmp_path, text.encode(encoding), f"{encoding}.csv")
        (row,) = list(parse_csv(path, encoding=encoding))
        assert row.subscriber is not None
        assert row.subscriber.name == "José"


def test_unknown_encoding_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, b"email\n")
    with pytest.raises(SubscriberFileError, match="unknown encoding 'klingon'"):
        list(parse_csv(path, encoding="klingon"))


def test_non_ascii_mailbox_names_are_refused_with_the_reason(tmp_path: Path) -> None:
    """An IDN domain is converted; a non-ASCII local part (SMTPUTF8 only) is refused."""
    path = write(tmp_path, "email\nanna@bücher.de\njosé@example.org\n".encode())
    first, second = list(parse_csv(path))
    assert first.subscriber is not None
    assert first.subscriber.email == "anna@xn--bcher-kva.de"
    assert second.subscriber is None
    assert second.error is not None
    assert "need SMTPUTF8" in second.error


def test_a_field_over_128_kib_rejects_its_row_not_the_file(tmp_path: Path) -> None:
    """Past the csv module's 128 KiB field limit the old reader gave up on the whole file.
    Now the row is rejected with its line and reason, and every row after it is read."""
    huge = "x" * 200_000
    multiline = ("y" * 99 + "\n") * 3000  # 300,000 characters over 3,000 lines
    content = (
        "email,name,city\n"
        "ana@example.org,Ana,Leeds\n"
        f"big@example.org,{huge},York\n"
        f'tall@example.org,Tall,"{multiline}"\n'
        "dee@example.org,Dee,Bath\n"
    )
    rows = list(parse_csv(write(tmp_path, content.encode())))
    assert [row.line for row in rows] == [2, 3, 4, 3005]
    assert rows[0].subscriber is not None
    assert rows[3].subscriber is not None
    assert rows[3].subscriber.email == "dee@example.org"
    assert rows[1].error == (
        "name: longer than 1000 characters "
        f"(the reject file keeps the first {FIELD_KEEP:,} of the 200,000 characters of name)"
    )
    assert rows[1].raw["name"] == "x" * FIELD_KEEP
    assert rows[1].raw["city"] == "York"
    assert rows[2].error == (
        "city: longer than 1000 characters "
        f"(the reject file keeps the first {FIELD_KEEP:,} of the 300,000 characters of city)"
    )


def test_a_huge_row_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """A 24 MB field (quoted, across lines) and a row of a million fields are read without
    ever holding them: peak memory stays far below their size."""
    path = tmp_path / "huge.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('email,name\nbig@example.org,"')
        for _ in range(24):
            handle.write(("z" * 999 + "\n") * 1000)
        handle.write('"\nwide@example.org,' + "w," * 1_000_000 + "\nok@example.org,Ok\n")
    tracemalloc.start()
    try:
        rows = list(parse_csv(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak:,} bytes"
    assert [row.line for row in rows] == [2, 24_003, 24_004]
    assert rows[0].error is not None
    assert "of the 24,000,000 characters of name" in rows[0].error
    assert rows[1].error == (
        "1,000,002 fields, more than the header's 2 (the reject file keeps the first 66 of the "
        "1,000,002 fields)"
    )
    assert rows[2].subscriber is not None


def test_a_row_whose_only_text_lies_past_the_kept_fields_is_not_skipped(tmp_path: Path) -> None:
    """Blank rows are skipped as layout; a row whose kept fields are blank but which goes on
    beyond them is data, and is rejected rather than dropped without a word."""
    path = write(tmp_path, ("email,name\n\n , \n" + "," * 500 + "sneaky\n").encode())
    (row,) = list(parse_csv(path))
    assert row.line == 4
    assert row.error is not None
    assert row.error.startswith("501 fields, more than the header's 2")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b'email,name\na@example.org,"Ann\n', 2, "the quoted field that opens on line 2 never"),
        (b'email,name\na@example.org,"Ann" B\n', 2, "after the closing quote of a field"),
        (b"email,name\na@example.org,Ann\rb@example.org,Bob\n", 2, "carriage return"),
    ],
)
def test_malformed_csv_stops_the_file_at_its_line(
    tmp_path: Path, content: bytes, line: int, message: str
) -> None:
    """Broken quoting can shift every later field, so it stops the import, naming the line."""
    path = write(tmp_path, content)
    with pytest.raises(SubscriberFileError, match=message) as info:
        list(parse_csv(path))
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: malformed CSV: ")


def test_an_exported_leading_apostrophe_is_read_back(tmp_path: Path) -> None:
    """`'` before = + - @ is how an export neutralises a formula; the import removes exactly
    that one apostrophe (and no other), so an exported file reads back to its values."""
    path = write(
        tmp_path,
        (b"email,name,note\n'-x@example.org,'-Ann,'=1+1\n'+tag@example.org,''@home,'Tis\n"),
    )
    first, second = [row.subscriber for row in parse_csv(path)]
    assert first is not None
    assert second is not None
    assert (first.email, first.name, first.attributes) == (
        "-x@example.org",
        "-Ann",
        {"note": "=1+1"},
    )
    assert (second.email, second.name, second.attributes) == (
        "+tag@example.org",
        "'@home",
        {"note": "'Tis"},
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("email," + ",".join(f"c{i}" for i in range(1500)), "has 1,501 columns; at most 1000"),
        ("email," + "h" * 10_000, "header 2 is 10,000 characters long; at most 4,096"),
    ],
)
def test_a_header_row_past_the_bounds_is_refused(tmp_path: Path, header: str, message: str) -> None:
    """The header sets how much of each row is kept, so it is bounded too, and named."""
    path = write(tmp_path, f"{header}\na@example.org\n".encode())
    with pytest.raises(SubscriberFileError, match=message) as info:
        list(parse_csv(path))
    assert info.value.line == 1
