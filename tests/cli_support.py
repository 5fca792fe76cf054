"""`mailer ARGS` run inside the test process: the same `mailer.cli.main` the console script
and `python -m mailer` call, with the environment, working folder and program name a child
process would have, and its exit status, stdout and stderr as `subprocess.run` gives them.

A child process costs 1.5-2.5 s on the test machine (Python start-up and mailer's imports,
more under coverage), which adds up to minutes in a suite that runs hundreds of commands.
Use this where what is checked is the command's words, exit status and effect on the store
or files; keep a real process (campaign_support.run_mailer) where the process boundary is
the point: a terminal, signals, kills, the console script itself, logging set up per
process, `mailer serve`.

Standard input is not a terminal (as with run_mailer's /dev/null): a command that would ask
refuses, exactly as in a child process. An exception mailer does not turn into an error
line is not swallowed: it fails the test with its traceback.

mailer's two Rich consoles (mailer/cli/common.py) take their width from COLUMNS when they
are made, once per process; pytest-xdist's workers have COLUMNS=80 by then. A child makes
them with its own COLUMNS, so each run here gets consoles made the same way, inside its
environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

from rich.console import Console
from typer.testing import CliRunner

from mailer.cli import common, main


def run_mailer_here(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mailer ARGS` in this process as run_mailer runs it in a child: `env` is the
    whole environment (MAILER_ variables not in it are unset meanwhile), `cwd` the working
    folder; the caller checks the status."""
    overrides: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("MAILER_") and name not in env
    }
    overrides.update(env)
    argv = sys.argv
    status: int = 0
    with (
        contextlib.chdir(cwd),
        CliRunner().isolation(env=overrides) as (stdout, stderr, _mixed),
        # As mailer/cli/common.py makes them; here, after COLUMNS is the child's.
        mock.patch.object(common, "console", Console(highlight=False, soft_wrap=True)),
        mock.patch.object(
            common, "err_console", Console(stderr=True, highlight=False, soft_wrap=True)
        ),
    ):
        # Click names the program after argv[0] in usage lines ("Usage: mailer send ...").
        sys.argv = ["mailer", *args]
        try:
            main(list(args))
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                status = exit_.code or 0
            else:  # sys.exit("words"): Python prints them to stderr, status 1
                print(exit_.code, file=sys.stderr)
                status = 1
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        out = stdout.getvalue().decode("utf-8", "replace")
        err = stderr.getvalue().decode("utf-8", "replace")
    return subprocess.CompletedProcess(["mailer", *args], status, out, err)
