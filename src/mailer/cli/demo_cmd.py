"""`mailer demo`: the main job end to end on embedded defaults, with zero configuration."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mailer.cli import common

EXAMPLE_LIST = Path("subscribers.example.csv")
DEMO_LIST = "demo"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(ctx: typer.Context) -> None:
    """Import the example subscribers and show the list (the sender joins in a later step)."""
    from mailer.importer import default_rejects_path, import_file

    settings = common.settings_from(ctx)
    common.existing_file(EXAMPLE_LIST, what="example subscriber file")
    with common.open_store(settings) as store:
        report = import_file(
            store,
            EXAMPLE_LIST,
            list_name=DEMO_LIST,
            rejects_path=default_rejects_path(EXAMPLE_LIST, settings.var_dir),
        )
        counts = report.counts
        common.console.print(
            f"Imported {EXAMPLE_LIST} into list '{DEMO_LIST}': {counts.imported} new, "
            f"{counts.unchanged + counts.updated} already there, {counts.invalid} invalid."
        )
        table = Table("email", "name", "status", title=f"List '{DEMO_LIST}'")
        for subscriber in store.iter_subscribers(DEMO_LIST):
            table.add_row(subscriber.email, subscriber.name, subscriber.status.value)
    common.console.print(table)
