"""Each import keeps its own reject file: two imports of one file within the same second
(the dashboard and the CLI, or a retry) wrote the same path, the second over the first's."""

from __future__ import annotations

from pathlib import Path

from mailer.audience.importer import default_rejects_path, import_file
from mailer.store import Store


def test_two_imports_of_one_file_in_one_second_keep_both_reject_files(
    store: Store, tmp_path: Path
) -> None:
    source = tmp_path / "members.csv"
    source.write_text("email,name\nada@example.org,Ada\nnot-an-address,Bad One\n")
    first_path = default_rejects_path(source, tmp_path / "var")
    first = import_file(store, source, list_name="members", rejects_path=first_path)
    source.write_text("email,name\nbob@example.org,Bob\nalso-bad,Bad Two\n")
    second_path = default_rejects_path(source, tmp_path / "var")
    second = import_file(store, source, list_name="members", rejects_path=second_path)
    assert first_path != second_path
    assert (first.counts.invalid, second.counts.invalid) == (1, 1)
    assert "not-an-address" in first_path.read_text()
    assert "also-bad" in second_path.read_text()
    assert sorted(p.name for p in (tmp_path / "var" / "rejects").iterdir()) == sorted(
        [first_path.name, second_path.name]
    )
