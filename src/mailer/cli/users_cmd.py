"""`mailer users ...`: who may sign in to the dashboard (`mailer serve`, /admin/)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from mailer.cli import common

Name = Annotated[str, typer.Argument(metavar="NAME", help="The name they sign in with.")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (one line), for scripts.",
    ),
]


def register(app: typer.Typer) -> None:
    users = typer.Typer(help="Dashboard users: who may sign in to /admin/.", no_args_is_help=True)
    app.add_typer(users, name="users")
    users.command("add")(add)
    users.command("list")(list_users)
    users.command("remove")(remove)
    users.command("reset-password")(reset_password)


def _read_password(password_stdin: bool) -> str:
    """The new password: one line from stdin, or typed twice at a terminal (not echoed)."""
    from mailer.errors import InputError
    from mailer.web.admin.passwords import check_password_quality

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise InputError(
            "no terminal to type the password at",
            hint="Pass --password-stdin and give the password on standard input.",
        )
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    check_password_quality(password)
    return password


def _valid_name(name: str) -> str:
    from mailer.errors import InputError

    cleaned = name.strip()
    if not cleaned or len(cleaned) > 100 or any(not c.isprintable() for c in cleaned):
        raise InputError(
            f"user name {name!r}: 1 to 100 printable characters",
            hint="e.g. `mailer users add ana`.",
        )
    return cleaned


def add(
    ctx: typer.Context,
    name: Name,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            metavar="ROLE",
            help="organiser (everything) or viewer (reads the overview and reports).",
        ),
    ] = "organiser",
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a dashboard user; the password is asked twice (or read with --password-stdin)."""
    from mailer.clock import utcnow
    from mailer.errors import InputError
    from mailer.store.admin import AdminRole
    from mailer.web.admin.passwords import Passwords

    cleaned = _valid_name(name)
    try:
        chosen = AdminRole(role.strip().lower())
    except ValueError as exc:
        roles = ", ".join(r.value for r in AdminRole)
        raise InputError(f"--role {role!r}: not one of {roles}") from exc
    settings = common.settings_from(ctx)
    with common.open_store(settings) as store:
        if store.find_admin_user(cleaned) is not None:
            raise InputError(
                f"a user named {cleaned!r} already exists",
                hint=f"`mailer users reset-password {cleaned}` changes their password.",
            )
        password_hash = Passwords().hash(_read_password(password_stdin))
        store.add_admin_user(cleaned, role=chosen, password_hash=password_hash, now=utcnow())
    common.console.print(
        f"User {cleaned!r} added ({chosen.value}). They sign in at "
        f"{settings.base_url.rstrip('/')}/admin/ while `mailer serve` runs.",
        markup=False,
    )


def list_users(ctx: typer.Context) -> None:
    """Every dashboard user with their role."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        users = store.admin_users()
    if not users:
        common.console.print("No dashboard users yet: `mailer users add NAME`.", markup=False)
        return
    table = Table("name", "role", "added")
    for user in users:
        table.add_row(user.name, user.role.value, f"{user.created_at:%Y-%m-%d %H:%M} UTC")
    common.console.print(table)


def remove(
    ctx: typer.Context,
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a user; any browser they are signed in with is signed out at once."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        store.admin_user(name)  # NotFoundError before asking
        common.confirm(f"Remove dashboard user {name!r}?", yes=yes)
        ended = store.remove_admin_user(name)
    common.console.print(
        f"User {name!r} removed; {ended} signed-in session(s) ended.", markup=False
    )


def reset_password(ctx: typer.Context, name: Name, password_stdin: PasswordStdin = False) -> None:
    """Set a new password; the user's signed-in sessions end."""
    from mailer.clock import utcnow
    from mailer.web.admin.passwords import Passwords

    with common.open_store(common.settings_from(ctx), existing=True) as store:
        store.admin_user(name)
        password_hash = Passwords().hash(_read_password(password_stdin))
        ended = store.set_admin_password(name, password_hash=password_hash, now=utcnow())
    common.console.print(
        f"Password of {name!r} changed; {ended} signed-in session(s) ended.", markup=False
    )
