"""The command line: the only place that prints, prompts or exits.

Each command group lives in its own module and registers itself on `app`; `main` maps
every MailerError to one clear message (with a hint) and an exit status, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from mailer.cli import common
from mailer.errors import ConfigError, InputError, MailerError, StoreError

app = typer.Typer(
    name="mailer",
    help="Self-hosted mailing lists and event invitations: import, preview, send, unsubscribe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # -h as well as --help, on every command (subcommands inherit it).
    context_settings={"help_option_names": ["-h", "--help"]},
    # Click's plain help: Typer's Rich panels print a type beside every option,
    # `--yes <bool>`, `--help <bool>`, which tells the organiser nothing.
    rich_markup_mode=None,
)
app.callback()(common.root_options)

# Each command module adds its commands; this order is the order of `mailer --help`.
from mailer.cli.bounces_cmd import register as register_bounces  # noqa: E402
from mailer.cli.campaign_cmd import register as register_campaign  # noqa: E402
from mailer.cli.catcher_cmd import register as register_catcher  # noqa: E402
from mailer.cli.config_cmd import register as register_config  # noqa: E402
from mailer.cli.demo_cmd import register as register_demo  # noqa: E402
from mailer.cli.events_cmd import register as register_events  # noqa: E402
from mailer.cli.rsvps_cmd import register as register_rsvps  # noqa: E402
from mailer.cli.schedule_cmd import register as register_schedule  # noqa: E402
from mailer.cli.send_cmd import register as register_send  # noqa: E402
from mailer.cli.serve_cmd import register as register_serve  # noqa: E402
from mailer.cli.subscribers_cmd import register as register_subscribers  # noqa: E402
from mailer.cli.users_cmd import register as register_users  # noqa: E402

for register in (
    register_demo,
    register_subscribers,
    register_events,
    register_send,
    register_schedule,
    register_campaign,
    register_rsvps,
    register_bounces,
    register_config,
    register_catcher,
    register_serve,
    register_users,
):
    register(app)

EXIT_USAGE = 2
EXIT_FAILURE = 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Click (inside Typer) handles its own usage errors and exit codes; anything mailer
    raises on purpose is printed as one message with a hint, never a traceback.
    """
    try:
        app(args=argv)
    except MailerError as exc:
        common.print_error(exc)
        status = EXIT_USAGE if isinstance(exc, ConfigError | InputError) else EXIT_FAILURE
        sys.exit(status)
    except Exception as exc:
        # The database went away mid-command (a restart, a killed connection): one line,
        # not a traceback; whatever was sending is resumable (its lease expires).
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise
        from mailer.errors import one_line_reason

        reason = one_line_reason(exc)
        common.print_error(
            StoreError(
                f"the database failed: {reason}",
                hint="Check MAILER_DATABASE_URL and that the database is up; an interrupted "
                "send goes on with `mailer campaign resume ID`.",
            )
        )
        sys.exit(EXIT_FAILURE)
