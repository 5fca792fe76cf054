"""CSV that mailer writes is safe to open in a spreadsheet, and reads back unchanged (issue 9).

OWASP "CSV Injection": a cell starting with = + - @ (or TAB, CR before them) runs as a
formula in Excel, LibreOffice and Google Sheets. mailer writes such cells with a leading `'`,
and its import drops exactly that `'` again.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import run_mailer_here
from mailer.safety import spreadsheet_safe, undo_spreadsheet_safe
from mailer.store import Store

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://evil.example","x")',
        "+44 20 7946 0000",
        "-Ann",
        "@SUM(1+1)",
        "\t=1+1",
        "\r=1+1",
        "=cmd|' /C calc'!A0",
    ],
)
def test_formula_cells_get_a_leading_apostrophe(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize("value", ["Ann", "ann@example.org", "", " =1", "'Tis", "1-2", "a=b"])
def test_other_cells_are_left_alone(value: str) -> None:
    assert spreadsheet_safe(value) == value


@pytest.mark.parametrize(
    "value",
    ["-Ann", "'-Ann", "''-Ann", "'", "''", "'Tis", "Ann", "", "=1", "'=1", "@", "'\t", "x'-"],
)
def test_undo_gives_back_every_value_exactly(value: str) -> None:
    """Values that already start with `'` before a formula character get one more, so the
    undo never confuses them with one that was neutralised."""
    safe = spreadsheet_safe(value)
    assert safe[:1] not in FORMULA_STARTS
    assert undo_spreadsheet_safe(safe) == value


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environment.update(env, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_here(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`run`, through mailer.cli.main in this process (tests/cli_support.py)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environment.update(env, COLUMNS="200")
    return run_mailer_here(environment, cwd, *args)


# What the store should hold: legitimate data that looks like formulas to a spreadsheet.
EXPECTED = {
    "-x@example.org": ("-Ann", {"city": '=HYPERLINK("http://evil.example","x")'}),
    "+tag@example.org": ("=1+1", {"city": "+44 20 7946 0000"}),
    "=eq@example.org": ("@home", {"city": "-"}),
    "plain@example.org": ("'=kept", {"city": "'Tis"}),
}


def stored(database: Path) -> dict[str, tuple[str, dict[str, str]]]:
    store = Store.open(f"sqlite:///{database}")
    try:
        return {
            s.email: (s.name, {k: v for k, v in s.attributes.items() if k != "status"})
            for s in store.iter_subscribers()
        }
    finally:
        store.close()


def test_export_neutralises_formulas_and_imports_back_to_the_same_values(tmp_path: Path) -> None:
    """`subscribers export` writes no cell a spreadsheet would run; importing that file into
    another store gives every address, name and attribute back exactly."""
    (tmp_path / "members.csv").write_text(
        "email,name,city\n"
        '-x@example.org,-Ann,"=HYPERLINK(""http://evil.example"",""x"")"\n'
        "+tag@example.org,=1+1,+44 20 7946 0000\n"
        "=eq@example.org,@home,-\n"
        "plain@example.org,''=kept,'Tis\n",  # `''=kept` is how `'=kept` is written, too
        encoding="utf-8",
    )
    first_db = tmp_path / "first.db"
    first = {"MAILER_DATABASE_URL": f"sqlite:///{first_db}"}
    imported = run_here(["subscribers", "import", "members.csv", "-l", "m"], tmp_path, **first)
    assert imported.returncode == 0, imported.stderr
    assert stored(first_db) == EXPECTED

    exported = run_here(["subscribers", "export", "-l", "m", "-o", "out.csv"], tmp_path, **first)
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert '\'-x@example.org,\'-Ann,subscribed,"\'=HYPERLINK(""http://evil.example""' in text
    assert "plain@example.org,''=kept,subscribed,'Tis" in text
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [cell for cell in cells if cell[:1] in FORMULA_STARTS]

    second_db = tmp_path / "second.db"
    second = {"MAILER_DATABASE_URL": f"sqlite:///{second_db}"}
    again = run_here(["subscribers", "import", "out.csv", "-l", "m"], tmp_path, **second)
    assert again.returncode == 0, again.stderr
    assert "4 imported" in again.stdout
    assert "0 invalid" in again.stdout
    assert stored(second_db) == EXPECTED


def test_import_of_a_huge_field_reports_its_row_and_imports_the_rest(tmp_path: Path) -> None:
    """Past the csv module's 128 KiB field limit the whole import used to stop with an
    error; now the organiser sees the row's line and reason, and the other rows are in."""
    (tmp_path / "big.csv").write_text(
        f"email,name\nana@example.org,Ana\nbig@example.org,{'x' * 300_000}\ndee@example.org,Dee\n",
        encoding="utf-8",
    )
    result = run(["subscribers", "import", "big.csv", "-l", "m"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 imported" in result.stdout
    assert "1 invalid" in result.stdout
    assert (
        "big.csv:3: name: longer than 1000 characters (the reject file keeps the first 4,096 "
        "of the 300,000 characters of name)"
    ) in result.stdout
    (rejects,) = (tmp_path / "var" / "rejects").glob("big-*.rejects.csv")
    with rejects.open(encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["line"], row["email"], len(row["name"])) == ("3", "big@example.org", 4096)
    assert run(["subscribers", "count", "-l", "m"], tmp_path).stdout.strip() == "2"
