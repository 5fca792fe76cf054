"""Import: a file of addresses alone (one a line, with or without an `email` header) and
rows shorter than the header, as spreadsheets write them, are read; a row longer than the
header is still rejected, and a first line that is a subscriber beside other fields stops
the file, naming it and the line, with nothing stored. Through the real command line."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from campaign_support import cli_environment
from cli_support import run_mailer_here


def _import(tmp_path: Path, name: str, content: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(content, encoding="utf-8")
    env = cli_environment(tmp_path, 2525)
    return run_mailer_here(env, tmp_path, "subscribers", "import", name, "--list", "m")


def _exported(tmp_path: Path) -> list[str]:
    env = cli_environment(tmp_path, 2525)
    result = run_mailer_here(env, tmp_path, "subscribers", "export", "-l", "m")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _rejects(tmp_path: Path, stem: str) -> list[dict[str, str]]:
    (path,) = (tmp_path / "var" / "rejects").glob(f"{stem}-*.rejects.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_file_of_addresses_alone_imports_every_line(tmp_path: Path) -> None:
    """No header at all: the first line is an address like the others, not a column name
    (it was refused as 'the header row has no `email` column')."""
    result = _import(tmp_path, "plain.csv", "ann@example.org\nBob@Example.org\n\ncat@example.org\n")
    assert result.returncode == 0, result.stderr
    assert "3 imported, 0 updated, 0 unchanged" in result.stdout
    assert "0 invalid" in result.stdout
    assert _exported(tmp_path) == [
        "email,name,status",
        "ann@example.org,,subscribed",
        "Bob@example.org,,subscribed",
        "cat@example.org,,subscribed",
    ]


def test_a_bad_first_address_is_a_rejected_row_with_its_line(tmp_path: Path) -> None:
    """Without a header the first line is data: a typo there rejects that row (line 1),
    not the whole file."""
    result = _import(tmp_path, "plain.csv", "ann@\nbob@example.org\n")
    assert result.returncode == 0, result.stderr
    assert "1 imported" in result.stdout
    assert "plain.csv:1: email: " in result.stdout
    assert [(r["line"], r["email"]) for r in _rejects(tmp_path, "plain")] == [("1", "ann@")]


def test_an_email_header_over_addresses_alone_still_imports(tmp_path: Path) -> None:
    result = _import(tmp_path, "list.csv", "email\nann@example.org\nbob@example.org\n")
    assert result.returncode == 0, result.stderr
    assert "2 imported" in result.stdout
    assert len(_exported(tmp_path)) == 3


def test_rows_shorter_than_the_header_have_their_missing_cells_empty(tmp_path: Path) -> None:
    """`ann@example.org` under a five-column header was 'expected 5 fields, found 1'. The
    missing trailing cells are empty, as a blank cell is, so they never erase a value a
    fuller row of the same address gave."""
    result = _import(
        tmp_path,
        "members.csv",
        "email,name,city,phone,notes\n"
        "ann@example.org\n"
        "bob@example.org,Bob\n"
        "cat@example.org,Cat,York,0123,vegan\n"
        "cat@example.org\n",
    )
    assert result.returncode == 0, result.stderr
    assert "3 imported, 0 updated, 0 unchanged, 1 duplicates merged" in result.stdout
    assert "0 invalid" in result.stdout
    # Said, as a cell missing mid-row would shift the rest one column to the left.
    assert (
        "3 row(s) had fewer fields than the header; their last cells were read as empty "
        "(lines 2, 3, 5)"
    ) in result.stdout
    assert "members.csv:5: duplicate of line 4 (cat@example.org)" in result.stdout
    assert _exported(tmp_path) == [
        "email,name,status,city,notes,phone",
        "ann@example.org,,subscribed,,,",
        "bob@example.org,Bob,subscribed,,,",
        "cat@example.org,Cat,subscribed,York,vegan,0123",
    ]


def test_a_short_row_that_stops_before_the_email_column_is_rejected(tmp_path: Path) -> None:
    result = _import(tmp_path, "back.csv", "name,city,email\nAnn,Leeds\nBob,York,bob@example.org\n")
    assert result.returncode == 0, result.stderr
    assert "1 imported" in result.stdout
    assert (
        "back.csv:2: email: missing (the row has 2 of the header's 3 fields; "
        "`email` is field 3)" in result.stdout
    )
    (row,) = _rejects(tmp_path, "back")
    assert (row["line"], row["name"], row["city"], row["email"]) == ("2", "Ann", "Leeds", "")


def test_a_row_longer_than_the_header_is_rejected_even_if_the_rest_is_empty(
    tmp_path: Path,
) -> None:
    """Values beyond the header would land under no column, or shifted under the wrong one:
    the row is rejected with every field kept in the reject file. Even when what lies
    beyond is empty: an unquoted "Smith, Ann" in a row whose last cell is empty looks like
    a trailing comma, and taken, it moved city and phone one column along over the stored
    values (a review)."""
    result = _import(
        tmp_path,
        "wide.csv",
        "email,name,city,phone\n"
        "ann@example.org,Ann Smith,York,01234\n"
        "bob@example.org,Smith,Bob,Leeds,0555\n"
        "ann@example.org,Smith, Ann,Leeds,\n",
    )
    assert result.returncode == 0, result.stderr
    assert "1 imported" in result.stdout
    assert "wide.csv:3: 5 fields, more than the header's 4" in result.stdout
    assert "wide.csv:4: 5 fields, more than the header's 4" in result.stdout
    first, second = _rejects(tmp_path, "wide")
    assert (first["email"], first["name"], first["(fields beyond the header)"]) == (
        "bob@example.org",
        "Smith",
        "0555",
    )
    assert second["(fields beyond the header)"] == ""
    assert _exported(tmp_path) == [
        "email,name,status,city,phone",
        "ann@example.org,Ann Smith,subscribed,York,01234",
    ]


def test_a_first_line_of_subscriber_fields_stops_the_file_and_stores_nothing(
    tmp_path: Path,
) -> None:
    """`ann@example.org,Ann` on the first line: which column is the name is a guess, so the
    file is refused as a whole, naming it and the line, before anything is stored."""
    result = _import(tmp_path, "guests.csv", "ann@example.org,Ann\nbob@example.org,Bob\n")
    assert result.returncode == 2
    assert "guests.csv:1: the first row looks like a subscriber (an address in field 1)" in (
        result.stderr
    )
    assert "a file of addresses alone, one a line, needs none" in result.stderr
    env = cli_environment(tmp_path, 2525)
    listed = run_mailer_here(env, tmp_path, "subscribers", "export")
    assert listed.stdout.splitlines() == ["email,name,status"]
