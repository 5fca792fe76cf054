"""Import, issue 10 (5): files separated by `;` or TAB (what spreadsheets write in many
locales) are read as such, found from the header line; and every row merged into an
earlier one of the same address is named, with its line, in the report and the reject
file: nothing is merged silently."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign_support import cli_environment
from cli_support import run_mailer_here
from mailer.audience.csv_file import parse_csv, sniff_delimiter
from mailer.audience.csv_records import CsvRecords, MalformedCsv
from mailer.audience.importer import MergedRow, import_file
from mailer.errors import SubscriberFileError
from mailer.store import Store
from mailer.store.imports import Replaced


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("email,name,city", ","),
        ("email;name;city", ";"),
        ("email\tname\tcity", "\t"),
        ('"email";"name"', ";"),
        ('email;name;"Home, City"', ";"),
        ('email,"Name; full",city', ","),
        ("email", ","),  # one column: nothing to tell, a comma
        ("", ","),
    ],
)
def test_the_delimiter_is_read_from_the_header_line(header: str, delimiter: str) -> None:
    assert sniff_delimiter(header) == delimiter


def _rows(text: str, delimiter: str, chunk: int) -> tuple[list[list[str]], bool]:
    pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    try:
        records = CsvRecords(pieces, field_keep=100, max_fields=100, delimiter=delimiter)
        return [record.fields for record in records], False
    except MalformedCsv:
        return [], True


def _csv_module(text: str, delimiter: str) -> tuple[list[list[str]], bool]:
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True, delimiter=delimiter)
    try:
        return [fields or [""] for fields in reader], False
    except csv.Error:
        return [], True


@settings(max_examples=300, deadline=None)
@given(
    delimiter=st.sampled_from([";", "\t"]),
    text=st.text(alphabet='a ,;\t"\r\n', max_size=40),
    chunk=st.integers(min_value=1, max_value=20),
)
def test_semicolon_and_tab_records_are_the_csv_modules(
    delimiter: str, text: str, chunk: int
) -> None:
    """With `;` or TAB the reader agrees with the csv module given the same delimiter,
    wherever the chunks split the text: a comma is then ordinary text."""
    expected, refused = _csv_module(text, delimiter)
    ours, we_refused = _rows(text, delimiter, chunk)
    assert we_refused == refused
    if not refused:
        assert ours == expected


def test_a_long_semicolon_row_is_counted_past_the_fields_kept() -> None:
    text = "email;name\n" + '"x;y";' * 100_000 + "last\nb@example.org;Bob\n"
    records = list(CsvRecords([text], field_keep=20, max_fields=3, delimiter=";"))
    assert records[1].field_count == 100_001
    assert records[1].fields == ["x;y"] * 3
    assert records[2].fields == ["b@example.org", "Bob"]


def test_a_semicolon_file_parses_into_subscribers(tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_text(
        'email;name;city\nann@example.org;"Lee, Ann";Leeds\nbob@example.org;Bob;York\n',
        encoding="utf-8-sig",
    )
    rows = list(parse_csv(path))
    assert [row.subscriber.name for row in rows if row.subscriber] == ["Lee, Ann", "Bob"]
    assert [row.subscriber.attributes for row in rows if row.subscriber] == [
        {"city": "Leeds"},
        {"city": "York"},
    ]


@pytest.mark.parametrize("header", ["Email Address", "E-mail", "e-mail address"])
def test_another_tools_address_header_is_the_email_column(tmp_path: Path, header: str) -> None:
    """Mailchimp's and Google Contacts' exports call it "Email Address": a new organiser's
    export was refused for having no `email` column."""
    path = tmp_path / "export.csv"
    path.write_text(f"{header},First Name\nann@example.org,Ann\n", encoding="utf-8")
    rows = list(parse_csv(path))
    assert [row.subscriber.email for row in rows if row.subscriber] == ["ann@example.org"]
    assert [row.subscriber.attributes for row in rows if row.subscriber] == [{"first_name": "Ann"}]


def test_two_address_headers_are_not_guessed_between(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Email Address,E-mail\nann@example.org,a@example.org\n", encoding="utf-8")
    with pytest.raises(SubscriberFileError, match="no `email` column"):
        list(parse_csv(path))


def test_import_reads_semicolons_and_tabs_and_names_every_merged_row(tmp_path: Path) -> None:
    """From the command line: the report says how the columns are separated, lists the
    merged rows with their lines and the line they went into, and the reject file holds
    them in line order with the invalid ones."""
    env = cli_environment(tmp_path, 2525)
    (tmp_path / "semi.csv").write_text(
        "email;name;city\n"
        "ann@example.org;Ann;Leeds\n"
        "bob@example.org;Bob;York\n"
        "ANN@example.org;Ann Lee;\n"
        "nope;X;Y\n"
        "ann@example.org;;Hull\n",
        encoding="utf-8",
    )
    result = run_mailer_here(env, tmp_path, "subscribers", "import", "semi.csv", "--list", "m")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 imported, 0 updated, 0 unchanged, 2 duplicates merged" in out
    assert "Columns separated by a semicolon, as its header row is." in out
    # Each merged row says which earlier values it replaced: those are gone from the store.
    assert "later non-empty values win; 2 replaced an earlier value" in out
    assert (
        "semi.csv:4: duplicate of line 2 (ANN@example.org): merged into it; "
        "name 'Ann' replaced by 'Ann Lee'"
    ) in out
    assert (
        "semi.csv:6: duplicate of line 2 (ann@example.org): merged into it; "
        "city 'Leeds' replaced by 'Hull'"
    ) in out
    assert "semi.csv:5: email: An email address must have an @-sign." in out
    assert "All 1 rejected and 2 merged rows: " in out
    (rejects,) = (tmp_path / "var" / "rejects").glob("semi-*.rejects.csv")
    with rejects.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line"], r["email"], r["name"], r["city"]) for r in rows] == [
        ("4", "ANN@example.org", "Ann Lee", ""),
        ("5", "nope", "X", "Y"),
        ("6", "ann@example.org", "", "Hull"),
    ]
    assert rows[0]["reason"] == (
        "duplicate of line 2 (ANN@example.org): merged into it; name 'Ann' replaced by 'Ann Lee'"
    )
    listed = run_mailer_here(env, tmp_path, "subscribers", "export", "-l", "m").stdout.splitlines()
    assert listed == [
        "email,name,status,city",
        "ann@example.org,Ann Lee,subscribed,Hull",
        "bob@example.org,Bob,subscribed,York",
    ]

    (tmp_path / "tabs.csv").write_text(
        "email\tname\tcity\ncat@example.org\tCat, the\tHull\n", encoding="utf-8"
    )
    tabs = run_mailer_here(env, tmp_path, "subscribers", "import", "tabs.csv", "--list", "m")
    assert tabs.returncode == 0, tabs.stderr
    assert "1 imported" in tabs.stdout
    assert "Columns separated by a tab" in tabs.stdout
    assert "Cat, the" in run_mailer_here(env, tmp_path, "subscribers", "list", "-l", "m").stdout


def test_merged_rows_across_batches_are_reported_too(store: Store, tmp_path: Path) -> None:
    """A repeat far from the first row (another batch of the store) is reported as merged
    into an earlier row; one near it, with that row's line (both stores)."""
    path = tmp_path / "big.csv"
    lines = ["email,name"] + [f"user{i}@example.org,User {i}" for i in range(3000)]
    lines.append("USER7@example.org,Seven")  # line 3002: user7 is on line 9
    lines.append("user2999@example.org,Last")  # line 3003: user2999 is on line 3001
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = import_file(store, path, list_name="big", rejects_path=tmp_path / "rejects.csv")
    assert report.counts.duplicates == 2
    assert report.first_merged == [
        MergedRow(3002, "USER7@example.org", None, (Replaced("name", "User 7", "Seven"),)),
        MergedRow(3003, "user2999@example.org", 3001, (Replaced("name", "User 2999", "Last"),)),
    ]
    assert report.first_merged[0].reason == (
        "duplicate of an earlier row (USER7@example.org): merged into it; "
        "name 'User 7' replaced by 'Seven'"
    )
    assert report.replacing == 2
    assert report.rejects_path is not None
    with report.rejects_path.open(encoding="utf-8", newline="") as handle:
        assert [row["line"] for row in csv.DictReader(handle)] == ["3002", "3003"]


def test_a_merged_row_says_which_earlier_values_it_replaced(tmp_path: Path) -> None:
    """Later non-empty values win, and the earlier ones are gone from the store: each such
    one is named in the report (a repeat that only adds or repeats values replaces none)."""
    env = cli_environment(tmp_path, 2525)
    (tmp_path / "list.csv").write_text(
        "email,name,city,phone\n"
        "ann@example.org,Ann,Leeds,\n"
        "ann@example.org,,York,0123\n"
        "ann@example.org,Ann,York\n"
        f"bob@example.org,Bob,{'B' * 60}\n"
        "bob@example.org,Bob,Hull\n",
        encoding="utf-8",
    )
    result = run_mailer_here(env, tmp_path, "subscribers", "import", "list.csv", "--list", "m")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "2 imported, 0 updated, 0 unchanged, 3 duplicates merged" in lines[0]
    assert lines[1].startswith("3 row(s) had fewer fields than the header")
    assert lines[2:6] == [
        "Merged rows (the same address again; later non-empty values win; "
        "2 replaced an earlier value):",
        "  list.csv:3: duplicate of line 2 (ann@example.org): merged into it; "
        "city 'Leeds' replaced by 'York'",
        "  list.csv:4: duplicate of line 2 (ann@example.org): merged into it",
        "  list.csv:6: duplicate of line 5 (bob@example.org): merged into it; "
        f"city '{'B' * 39}…' replaced by 'Hull'",
    ]
    listed = run_mailer_here(env, tmp_path, "subscribers", "export", "-l", "m").stdout.splitlines()
    assert listed == [
        "email,name,status,city,phone",
        "ann@example.org,Ann,subscribed,York,0123",
        "bob@example.org,Bob,subscribed,Hull,",
    ]
