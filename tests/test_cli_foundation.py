"""The CLI as an organiser runs it: a real subprocess, real files, real exit statuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli_support import run_mailer_here
from mailer.cli import app

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environment.update(env)
    environment["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def here(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`run`, through mailer.cli.main in this process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environment.update(env)
    environment["COLUMNS"] = "200"
    return run_mailer_here(environment, cwd, *args)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "subscribers.example.csv").write_bytes(
        (REPO_ROOT / "subscribers.example.csv").read_bytes()
    )
    return tmp_path


def test_import_report_and_reject_file(workdir: Path) -> None:
    """The import prints every count, the first bad rows with lines, and the reject file."""
    (workdir / "dirty.csv").write_text(
        "email,name\nok@example.org,Ok\nnope,No\nok@EXAMPLE.org,Again\n", encoding="utf-8"
    )
    result = run(["subscribers", "import", "dirty.csv", "--list", "l"], workdir)
    assert result.returncode == 0, result.stderr
    assert "1 imported, 0 updated, 0 unchanged, 1 duplicates merged" in result.stdout
    assert "1 invalid" in result.stdout
    assert "dirty.csv:3: email: An email address must have an @-sign." in result.stdout
    rejects = list((workdir / "var" / "rejects").glob("dirty-*.rejects.csv"))
    assert len(rejects) == 1
    assert "nope" in rejects[0].read_text(encoding="utf-8")


def test_user_mistakes_exit_2_without_traceback(workdir: Path) -> None:
    missing = run(["subscribers", "import", "missing.csv", "--list", "l"], workdir)
    assert missing.returncode == 2
    assert "missing.csv: subscriber file not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad_setting = run(["lists"], workdir, MAILER_CONCURRENCY="many")
    assert bad_setting.returncode == 2
    assert bad_setting.stderr.startswith(
        "error: MAILER_CONCURRENCY: Input should be a valid integer"
    )
    assert "Traceback" not in bad_setting.stderr

    (workdir / "latin1.csv").write_bytes("email,name\na@example.org,Jos\xe9\n".encode("latin-1"))
    bad_bytes = run(["subscribers", "import", "latin1.csv", "--list", "l"], workdir)
    assert bad_bytes.returncode == 2
    assert "latin1.csv:2: not valid utf-8-sig text" in bad_bytes.stderr
    assert "--encoding" in bad_bytes.stderr


def test_config_show_masks_secrets(workdir: Path) -> None:
    result = run(["config", "show"], workdir, MAILER_SMTP_PASSWORD="hunter2")
    assert result.returncode == 0
    assert "MAILER_SMTP_PASSWORD" in result.stdout
    assert "hunter2" not in result.stdout


def test_list_management_commands(workdir: Path) -> None:
    """lists, count, unsubscribe, export and remove work on the imported example. Ten
    commands: run through mailer.cli.main in this process (tests/cli_support.py; the
    tests around this one show the statuses and messages of a real child process)."""
    assert (
        here(["subscribers", "import", "subscribers.example.csv", "-l", "m"], workdir).returncode
        == 0
    )
    assert here(["subscribers", "count", "-l", "m"], workdir).stdout.strip() == "12"
    unsub = here(["subscribers", "unsubscribe", "ZOE.martin@example.org", "-l", "m"], workdir)
    assert "Unsubscribed ZOE.martin@example.org" in unsub.stdout
    assert here(["subscribers", "count", "-l", "m"], workdir).stdout.strip() == "11"
    exported = here(["subscribers", "export", "-l", "m"], workdir).stdout.splitlines()
    assert exported[0] == "email,name,status,branch,city"
    assert "zoe.martin@example.org,Zoë Martin,unsubscribed,Central London,London" in exported
    assert here(["subscribers", "remove", "tom.reid@example.org", "--yes"], workdir).returncode == 0
    lists = here(["lists"], workdir).stdout
    assert "m" in lists
    assert "10" in lists
    gone = here(["subscribers", "remove", "tom.reid@example.org", "--yes"], workdir)
    assert gone.returncode == 1
    assert "no subscriber" in gone.stderr


def test_db_upgrade_is_idempotent(workdir: Path) -> None:
    first = run(["db", "upgrade"], workdir)
    second = run(["db", "upgrade"], workdir)
    assert "upgraded to revision" in first.stdout
    assert "already at revision" in second.stdout


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, hidden ones too, as argument paths. (Typer
    vendors its own Click, so groups are known by their `commands`, not their class.)"""
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found.extend(_commands(sub, (*path, name)))
    return found


def test_help_is_plain_short_and_spelled_one_way(workdir: Path) -> None:
    """-h works as --help on every command; no `<bool>` beside the flags, no `<str>` after
    an option (it says NAME, ADDRESS, WHEN...); argument names
    in capitals, one spelling (EVENT, ADDRESS, NAME, FILE, ID); `campaign status` is a
    hidden alias of `campaign show`."""
    short, long = run(["-h"], workdir), run(["--help"], workdir)
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert "subscribers" in short.stdout
    sub = run(["subscribers", "resubscribe", "-h"], workdir)
    assert sub.returncode == 0, sub.stderr
    assert "-r, --reason TEXT" in sub.stdout

    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    assert ("campaign", "status") in paths
    spellings: set[str] = set()
    for path in paths:
        result = runner.invoke(app, [*path, "-h"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        # An option taking a word names what it wants (--list NAME, --at WHEN), not the
        # Python type Typer would print (`--list <str>`, `--out <path>`).
        typed = re.findall(r"^\s+(?:-\w, )?(--[\w-]+) <(?:str|path)>", result.output, re.M)
        assert typed == [], (path, typed)
        usage = result.output.splitlines()[0]
        assert usage.startswith(f"Usage: mailer {' '.join(path)}".rstrip()), usage
        for argument in re.findall(r"[{\[]([^\]}]+)[}\]]", usage):
            if argument not in ("OPTIONS", "ARGS"):
                assert argument.isupper(), (path, usage)
                spellings.add(argument)
    assert spellings == {"ADDRESS", "EVENT", "FILE", "ID", "NAME", "NEW", "OLD"}
    campaign_help = runner.invoke(app, ["campaign", "-h"]).output
    assert "  show " in campaign_help
    assert "  status " not in campaign_help


def test_a_command_that_reads_the_store_does_not_make_an_empty_one(tmp_path: Path) -> None:
    """Run from a folder with no store, `mailer lists` made an empty one there and said
    "No lists yet". It now says where it looked and how to point it at the right place,
    exits non-zero and leaves the folder as it was; commands that add (import) still
    make the store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"
    for args in (("lists",), ("campaign", "list"), ("subscribers", "show", "a@example.org")):
        result = subprocess.run(
            [sys.executable, "-m", "mailer", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0, args
        assert f"no mailer store at {tmp_path / 'var' / 'mailer.db'}" in result.stderr
        assert "Run mailer from your project's folder" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()
