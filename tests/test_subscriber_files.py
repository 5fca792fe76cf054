"""Reading subscriber CSV files: headers, encodings, bad rows with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.audience.csv_file import parse_csv
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
        "short@example.org\n"
        ",Nobody\n"
    ).encode()
    rows = list(parse_csv(write(tmp_path, content)))
    errors = {row.line: row.error for row in rows if row.error}
    assert rows[0].error == "name: control character U+000A at position 4"
    assert errors[4] is not None
    assert errors[4].startswith("email:")
    assert errors[5] == "name: control character U+000D at position 4"
    assert errors[6] == "name: longer than 1000 characters"
    assert errors[7] == "expected 2 fields, found 1"
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
