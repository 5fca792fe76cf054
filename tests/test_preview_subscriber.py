"""`mailer preview --list NAME` previews for a subscriber as the store holds them (what a
send would use), found by the address normalised as the import does; without --list the
CSV is searched the same way. The commands run through mailer.cli.main in the test
process (test_preview_cli.run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_preview_cli import run, write_event

BODY = "Hello {{ subscriber.name }} from {{ subscriber.attributes.city }}.\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The store's list 'members' (as imported last) and a stale example CSV in the
    working folder that says otherwise about Alice."""
    members = tmp_path / "members.csv"
    members.write_text(
        "email,name,city\nalice@example.org,Alice S.,London\nzoe@bücher.de,Zoë Martin,Leeds\n",
        encoding="utf-8",
    )
    others = tmp_path / "others.csv"
    others.write_text("email,name,city\nbob@example.org,Bob,York\n", encoding="utf-8")
    for path, name in ((members, "members"), (others, "others")):
        imported = run(tmp_path, "subscribers", "import", str(path), "--list", name)
        assert imported.returncode == 0, imported.stderr
    (tmp_path / "subscribers.example.csv").write_text(
        "email,name,city\nalice@example.org,Alice Smith,Paris\nzoe@bücher.de,Zoë,Oslo\n",
        encoding="utf-8",
    )
    return tmp_path


def preview_text(tmp_path: Path, *args: str) -> str:
    event = write_event(tmp_path, BODY)
    result = run(tmp_path, "preview", str(event), "--out", "out", *args)
    assert result.returncode == 0, result.stderr
    return (tmp_path / "out" / "meeting.txt").read_text(encoding="utf-8")


def test_preview_with_a_list_reads_the_store(project: Path) -> None:
    """--list members shows the store's "Alice S." from London, not the CSV's "Alice
    Smith" from Paris; the address is found whatever its case."""
    text = preview_text(project, "--list", "members", "--subscriber", "ALICE@example.org")
    assert "Hello Alice S. from London." in text
    assert "Alice Smith" not in text
    assert "members" in text  # the footer names the list


def test_preview_finds_an_internationalised_domain_as_imported(project: Path) -> None:
    """`zoe@bücher.de` finds the subscriber the import stored as `zoe@xn--bcher-kva.de`,
    and the message goes to that ASCII address."""
    text = preview_text(project, "--list", "members", "--subscriber", "zoe@bücher.de")
    assert "Hello Zoë Martin from Leeds." in text
    eml = (project / "out" / "meeting.eml").read_bytes()
    assert b"zoe@xn--bcher-kva.de>" in eml


def test_preview_without_a_subscriber_takes_the_lists_first_member(project: Path) -> None:
    assert "Hello Alice S. from London." in preview_text(project, "--list", "members")


def test_preview_refuses_someone_not_on_the_list(project: Path) -> None:
    """bob@ is in the store but not on 'members': one line saying so, nothing written."""
    event = write_event(project, BODY)
    args = ("--list", "members", "--subscriber", "bob@example.org", "--out", "out")
    result = run(project, "preview", str(event), *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "bob@example.org is not a subscribed member of list 'members'" in result.stderr
    assert not (project / "out").exists()


def test_preview_from_the_csv_normalises_the_address_too(project: Path) -> None:
    """Without --list, the CSV is searched as the import would match: the domain's case
    and its Unicode or ASCII form do not matter."""
    text = preview_text(project, "--subscriber", "Zoe@BÜCHER.de")
    assert "Hello Zoë from Oslo." in text


def test_list_and_csv_together_are_refused(project: Path) -> None:
    event = write_event(project, BODY)
    args = ("--list", "members", "--subscribers", "subscribers.example.csv")
    result = run(project, "preview", str(event), *args)
    assert result.returncode == 2
    assert "--list and --subscribers" in result.stderr
