"""What every command shares: the consoles, settings loading, store opening, error printing."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from mailer.errors import CampaignError, ConfigError, MailerError

if TYPE_CHECKING:
    from mailer.campaigns.senders import Children
    from mailer.config import Settings
    from mailer.store import Store

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    """Options given before the command (`mailer --database-url ... send`)."""

    overrides: dict[str, Any]

    def __init__(self) -> None:
        self.overrides = {}


def root_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="Overrides MAILER_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Self-hosted mailing lists and event invitations."""
    state = State()
    if database_url is not None:
        # A path typed on the command line means what the shell means: from this folder,
        # not from the home folder that settings found in files are anchored to.
        from mailer.config import anchor_sqlite_url

        state.overrides["database_url"] = anchor_sqlite_url(database_url, Path.cwd())
    ctx.obj = state


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Load settings once for this command, with root options and `overrides` on top.

    Settings are found from the home folder (MAILER_HOME, else the nearest folder upwards
    holding mailer.toml, .env or var/mailer.db), so every command run from anywhere inside
    a mailer folder uses the same store; `mailer config show` says which and why.
    """
    from mailer.config import load_settings

    state = ctx.find_root().obj
    merged: dict[str, Any] = dict(state.overrides) if isinstance(state, State) else {}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(**merged)


def open_store(settings: Settings, *, existing: bool = False) -> Store:
    """Open (and migrate) the store named by the settings.

    `existing`: the command works on what the store holds (shows, exports, pauses): a
    SQLite file that is not there is an error naming where it was looked for, not a new
    empty store. Run from the wrong folder, `mailer lists` made one there and said "No
    lists yet", and the organiser wondered where their lists had gone."""
    from mailer.store import Store

    if existing:
        missing = _missing_sqlite_file(settings.database_url)
        if missing is not None:
            raise ConfigError(
                f"no mailer store at {missing}: nothing has been imported or sent with "
                "these settings",
                hint=f"Run mailer from your project's folder (taken as the home here: "
                f"{settings.home}), or set MAILER_HOME or MAILER_DATABASE_URL.",
            )
    return Store.open(settings.database_url)


def _missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file the URL names, if it does not exist; None for anything else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # Store.open says what is wrong with it
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    path = Path(database)
    return None if path.exists() else path


def confirm(question: str, *, yes: bool, details: list[str] | None = None) -> None:
    """Ask before anything is changed; the one confirmation every command uses.

    With --yes nothing is asked. Without a terminal nobody can answer: refuse, saying how
    to confirm. Declined: say nothing changed and exit 0 (the organiser chose so)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CampaignError(
            f"not confirmed: {question}",
            hint="Not a terminal, so nobody can be asked: pass --yes to confirm.",
        )
    for line in details or []:
        console.print(line, markup=False)
    if not typer.confirm(question, default=False):
        console.print("Nothing was changed.")
        raise typer.Exit(0)


def print_error(exc: MailerError) -> None:
    err_console.print(
        f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, soft_wrap=True
    )
    if exc.hint:
        err_console.print(f"[dim]hint:[/dim] {escape(exc.hint)}", soft_wrap=True)


def existing_file(path: Path, *, what: str) -> Path:
    from mailer.errors import InputError

    if not path.is_file():
        raise InputError(f"{what} not found", path=path, hint="Check the path and try again.")
    return path


# Child processes asked to stop usually end within this; after it, say what we wait for.
QUIET_JOIN = 1.0


def join_or_quit(
    children: Children,
    *,
    timeout: float,
    waiting: str,
    quit_now: Callable[[signal.Signals], NoReturn],
) -> None:
    """Wait for child processes already asked to stop to finish what they have in flight,
    saying `waiting` if that takes more than a moment. A signal meanwhile calls
    `quit_now`: the terminal's default would raise KeyboardInterrupt here, a traceback
    for the organiser, who pressed Ctrl-C a second time to quit."""
    if not children.processes:
        return
    if threading.current_thread() is not threading.main_thread():
        children.join(timeout)  # signals reach only the main thread: nothing to catch here
        return

    def on_signal(signum: int, _frame: object) -> None:
        quit_now(signal.Signals(signum))

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not children.wait(QUIET_JOIN):
            err_console.print(f"{waiting} (Ctrl-C quits at once).", markup=False)
            children.join(timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def failure_reason(failure: BaseException | None) -> BaseException | None:
    """What to say a run stopped on: an error (its text, else its kind), or None for an
    interruption (a Ctrl-C or an exit caught on its way out is not an error)."""
    return failure if isinstance(failure, Exception) else None


def describe_failure(failure: BaseException) -> str:
    from mailer.errors import one_line_reason

    return one_line_reason(failure) or type(failure).__name__
