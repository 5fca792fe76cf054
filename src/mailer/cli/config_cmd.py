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
        """Print every setting as it is in effect now; secrets are masked."""
        settings = common.settings_from(ctx)
        table = Table("setting", "value", box=None, pad_edge=False)
        for key, value in settings.masked().items():
            table.add_row(key, value)
        common.console.print(table)

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
