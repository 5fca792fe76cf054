"""`mailer config show` and `mailer db upgrade`."""

from __future__ import annotations

import typer
from rich.table import Table

from mailer.cli import check_cmd, common


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
    db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
    app.add_typer(config_app, name="config")
    check_cmd.register(config_app)  # `mailer config check`
    app.add_typer(db_app, name="db")

    @config_app.command("show")
    def show(ctx: typer.Context) -> None:
        """Print the home folder, every setting in effect and where the signing keys come
        from; secrets are masked. Reads the store only if it exists, and changes nothing."""
        from mailer.config import DOTENV_FILE
        from mailer.store.keyring import describe
        from mailer.store.keys import read_recorded_keys

        settings = common.settings_from(ctx)
        out = common.console
        out.print(f"Home: {settings.home}", markup=False)
        out.print(f"  why: {settings.home_reason}", markup=False)
        for path in (settings.config_file, settings.home / DOTENV_FILE):
            state = "read" if path.is_file() else "absent"
            out.print(f"  {path.name}: {path} ({state})", markup=False)
        table = Table("setting", "value", box=None, pad_edge=False)
        for key, value in settings.masked().items():
            table.add_row(key, value)
        out.print(table)
        out.print("Signing keys (never shown; ids only):")
        for line in describe(settings, read_recorded_keys(settings.database_url)):
            out.print(f"  {line}", markup=False)

    @db_app.command("upgrade")
    def upgrade(ctx: typer.Context) -> None:
        """Apply pending migrations (they also run automatically on first use)."""
        from mailer.store.database import create_store_engine, head_revision
        from mailer.store.database import upgrade as apply

        settings = common.settings_from(ctx)
        engine = create_store_engine(settings.database_url)
        try:
            changed = apply(engine)
        finally:
            engine.dispose()
        state = "upgraded to" if changed else "already at"
        common.console.print(f"Database {state} revision {head_revision()}.")
