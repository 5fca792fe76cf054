"""Alembic environment: runs on the connection the store hands over (see store/database.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mailer.store.schema import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` run by hand with -x url=...
        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
            "sqlalchemy.url"
        )
        engine = create_engine(str(url))
        with engine.begin() as own_connection:
            _configure_and_run(own_connection)
        engine.dispose()
        return
    _configure_and_run(connection)


def _configure_and_run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
