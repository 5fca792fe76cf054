"""Alembic migrations for the store; applied by `mailer db upgrade` and on first use."""
