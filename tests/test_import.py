"""Importing lists: counts, merging, suppressions, atomicity; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from mailer.audience.csv_file import FIELD_KEEP, parse_csv
from mailer.audience.importer import ImportReport, RejectedRow, import_file
from mailer.errors import NotFoundError, SubscriberFileError
from mailer.models import SubscriberStatus, UnsubscribeSource
from mailer.store import Store
from mailer.store.schema import memberships, subscribers, suppressions

EXAMPLE = Path(__file__).resolve().parent.parent / "subscribers.example.csv"


def run_import(
    store: Store, path: Path, tmp_path: Path, list_name: str = "members"
) -> ImportReport:
    return import_file(store, path, list_name=list_name, rejects_path=tmp_path / "rejects.csv")


def table_count(store: Store, table: Table) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_clean_import_then_reimport_is_unchanged(store: Store, tmp_path: Path) -> None:
    """A second import of the same file adds nothing and reports every row unchanged."""
    first = run_import(store, EXAMPLE, tmp_path)
    assert first.counts.imported == 12
    assert first.rejects_path is None
    second = run_import(store, EXAMPLE, tmp_path)
    assert (second.counts.imported, second.counts.unchanged) == (0, 12)
    assert table_count(store, subscribers) == 12
    assert store.count_subscribers("members") == 12
    assert [s.name for s in store.lists()] == ["members"]


def test_dirty_file_keeps_good_rows_and_reports_bad_ones(store: Store, tmp_path: Path) -> None:
    """Bad rows never abort the good ones; every reject lands in the reject CSV with its line."""
    path = tmp_path / "dirty.csv"
    path.write_text(
        "email,name,city\n"
        "ana@example.org,Ana,Leeds\n"
        "ANA@Example.org,Ana Lima,\n"  # duplicate, different case: merged
        "broken@,Bob,York\n"
        'carl@example.org,"Carl\r\nBcc: victim@example.org",Hull\n'
        "dee@example.org,Dee,Bath\n",
        encoding="utf-8",
    )
    report = run_import(store, path, tmp_path)
    counts = report.counts
    assert (counts.imported, counts.duplicates, counts.invalid) == (2, 1, 2)
    assert [r.line for r in report.first_invalid] == [4, 5]
    assert report.rejects_path is not None
    with report.rejects_path.open(encoding="utf-8") as handle:
        rejected = list(csv.DictReader(handle))
    # The merged row is listed too (issue 10: never merged silently), in line order.
    assert [r["line"] for r in rejected] == ["3", "4", "5"]
    assert rejected[0]["reason"] == (
        "duplicate of line 2 (ANA@example.org): merged into it; name 'Ana' replaced by 'Ana Lima'"
    )
    assert rejected[1]["email"] == "broken@"
    ana = store.get_subscriber("ana@example.org")
    assert ana.name == "Ana Lima"  # the later non-empty value wins
    assert ana.attributes == {"city": "Leeds"}  # an empty cell never erases
    assert table_count(store, subscribers) == 2


def test_duplicates_across_batches_are_merged(store: Store, tmp_path: Path) -> None:
    """A repeated address far apart in a file (different batches) is still one subscriber."""
    path = tmp_path / "big.csv"
    lines = ["email,name"] + [f"user{i}@example.org,User {i}" for i in range(5000)]
    lines.append("USER7@example.org,Seven")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = run_import(store, path, tmp_path).counts
    assert (counts.imported, counts.duplicates) == (5000, 1)
    assert store.get_subscriber("user7@example.org").name == "Seven"
    assert table_count(store, memberships) == 5000


def test_suppression_survives_reimport(store: Store, tmp_path: Path) -> None:
    """Someone who unsubscribed is not put back by importing the same list again."""
    run_import(store, EXAMPLE, tmp_path)
    store.unsubscribe_email("zoe.martin@example.org", "members", source=UnsubscribeSource.PAGE)
    report = run_import(store, EXAMPLE, tmp_path)
    assert report.counts.suppressed == 1
    assert store.count_subscribers("members") == 11
    store.remove_subscriber("zoe.martin@example.org")  # erased entirely...
    again = run_import(store, EXAMPLE, tmp_path)
    assert again.counts.suppressed == 1  # ...and still never re-added
    assert store.count_subscribers("members") == 11


def test_global_unsubscribe_blocks_every_list(store: Store, tmp_path: Path) -> None:
    run_import(store, EXAMPLE, tmp_path)
    store.unsubscribe_email("jose.garcia@example.com", source=UnsubscribeSource.ADMIN)
    assert store.get_subscriber("jose.garcia@example.com").status is SubscriberStatus.UNSUBSCRIBED
    report = run_import(store, EXAMPLE, tmp_path, list_name="other")
    assert report.counts.suppressed == 1
    assert table_count(store, suppressions) == 1


def test_interrupted_import_changes_nothing(store: Store, tmp_path: Path) -> None:
    """A file that turns out unreadable half-way leaves the store and reject file as before."""
    path = tmp_path / "half.csv"
    good = "".join(f"u{i}@example.org,U\n" for i in range(3000))
    path.write_bytes(b"email,name\nbad,x\n" + good.encode() + b"late@example.org,Jos\xe9\n")
    with pytest.raises(SubscriberFileError) as info:
        run_import(store, path, tmp_path)
    assert info.value.line == 3003
    assert table_count(store, subscribers) == 0
    assert store.lists() == []
    assert not (tmp_path / "rejects.csv").exists()
    assert not list(tmp_path.glob(".rejects*"))


def test_resubscribe_lifts_only_the_list_unsubscribe(store: Store, tmp_path: Path) -> None:
    run_import(store, EXAMPLE, tmp_path)
    list_id = store.list_id("members")
    subscriber_id = store.get_subscriber_id("priya.patel@example.org")
    assert store.unsubscribe(subscriber_id, list_id, source=UnsubscribeSource.ONE_CLICK)
    assert not store.unsubscribe(subscriber_id, list_id, source=UnsubscribeSource.ONE_CLICK)
    assert not store.is_mailable(subscriber_id, list_id)
    assert store.resubscribe(subscriber_id, list_id)
    assert store.is_mailable(subscriber_id, list_id)
    assert table_count(store, suppressions) == 1  # kept as the audit trail, lifted


def test_recipient_cannot_undo_an_unsubscribe_the_organiser_made(
    store: Store, tmp_path: Path
) -> None:
    """A removal on request (admin) is not lifted by the 'subscribe again' button."""
    run_import(store, EXAMPLE, tmp_path)
    list_id = store.list_id("members")
    subscriber_id = store.get_subscriber_id("kwame.mensah@example.net")
    store.unsubscribe_email("kwame.mensah@example.net", "members", source=UnsubscribeSource.ADMIN)
    assert not store.resubscribe(subscriber_id, list_id)
    assert not store.is_mailable(subscriber_id, list_id)


def test_the_database_holds_one_suppression_in_force_per_reason(
    store: Store, tmp_path: Path
) -> None:
    """The unique index behind idempotent unsubscribes: a second identical suppression is
    not recorded, a different reason is, and a lifted one no longer counts."""
    from mailer.clock import utcnow
    from mailer.store.suppressions import _insert_suppression

    row = {
        "email_key": "x@example.org",
        "list_id": None,
        "reason": "unsubscribed",
        "source": "one-click",
        "created_at": utcnow(),
    }
    with store.engine.begin() as connection:
        assert _insert_suppression(connection, **row)
        assert not _insert_suppression(connection, **row)
        assert _insert_suppression(connection, **{**row, "reason": "bounced"})
        connection.execute(suppressions.update().values(lifted_at=utcnow()))
        assert _insert_suppression(connection, **row)
    assert table_count(store, suppressions) == 3


def test_reject_file_keeps_every_field_of_long_and_short_rows(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(
        "email,name\nshort@\nlong@example.org,Lo,extra one,extra two\n",
        encoding="utf-8",
    )
    report = run_import(store, path, tmp_path)
    assert report.rejects_path is not None
    with report.rejects_path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["email"] for r in rows] == ["short@", "long@example.org"]
    assert rows[0]["name"] == ""
    assert rows[1]["name"] == "Lo"
    assert rows[1]["(fields beyond the header)"] == "extra one\textra two"


def test_an_oversized_field_rejects_its_row_and_the_import_goes_on(
    store: Store, tmp_path: Path
) -> None:
    """A 1 MB field, far past the csv module's 128 KiB limit, used to abort the whole import
    (issue 9). Now that row alone is rejected, with its line and reason in the report and in
    the reject file (which keeps the start of the field and says so), and nothing of it is
    stored."""
    path = tmp_path / "big.csv"
    path.write_text(
        "email,name\nana@example.org,Ana\n"
        f"big@example.org,{'x' * 1_000_000}\n"
        "dee@example.org,Dee\n",
        encoding="utf-8",
    )
    report = run_import(store, path, tmp_path)
    reason = (
        "name: longer than 1000 characters "
        f"(the reject file keeps the first {FIELD_KEEP:,} of the 1,000,000 characters of name)"
    )
    assert (report.counts.imported, report.counts.invalid) == (2, 1)
    assert report.first_invalid == [RejectedRow(3, reason)]
    assert report.rejects_path is not None
    with report.rejects_path.open(encoding="utf-8", newline="") as handle:
        (rejected,) = list(csv.DictReader(handle))
    assert (rejected["line"], rejected["reason"], rejected["email"]) == (
        "3",
        reason,
        "big@example.org",
    )
    assert rejected["name"] == "x" * FIELD_KEEP
    assert table_count(store, subscribers) == 2
    with pytest.raises(NotFoundError):
        store.get_subscriber("big@example.org")


def test_reject_file_cells_cannot_run_as_formulas(store: Store, tmp_path: Path) -> None:
    """Organisers open the reject file in a spreadsheet: a rejected `=cmd|...` (the classic
    DDE payload) or `-Ann` is written with a leading `'`, so it shows as text (OWASP), and
    reading the reject file back gives the values that were rejected."""
    path = tmp_path / "formulas.csv"
    path.write_text(
        "email,name,city\n=cmd|' /C calc'!A0,-Ann,@SUM(1+1)\nok@example.org,Ok,\t+tab\n",
        encoding="utf-8",
    )
    report = run_import(store, path, tmp_path)
    assert report.counts.invalid == 1
    assert report.rejects_path is not None
    text = report.rejects_path.read_text(encoding="utf-8")
    assert "'=cmd|' /C calc'!A0,'-Ann,'@SUM(1+1)" in text
    with report.rejects_path.open(encoding="utf-8", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    (again,) = list(parse_csv(report.rejects_path))
    assert (again.raw["email"], again.raw["name"], again.raw["city"]) == (
        "=cmd|' /C calc'!A0",
        "-Ann",
        "@SUM(1+1)",
    )
