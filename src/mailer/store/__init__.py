"""All SQL lives in this package (SQLAlchemy Core). `Store` is the one object callers hold.

Each concern is a mixin in its own module (lists and subscribers, imports, suppressions,
campaigns and the ledger); `Store` combines them over one engine.
"""

from __future__ import annotations

from sqlalchemy import Engine

from mailer.store.admin import AdminQueries
from mailer.store.batches import BatchQueries
from mailer.store.campaigns import CampaignQueries, SchedulingQueries
from mailer.store.dashboard import DashboardQueries
from mailer.store.database import create_store_engine, upgrade
from mailer.store.feedback import FeedbackQueries
from mailer.store.imports import ImportQueries
from mailer.store.keys import SigningKeyQueries
from mailer.store.ledger import LedgerQueries
from mailer.store.lists import ListQueries
from mailer.store.rate_budget import RateBudgetQueries
from mailer.store.recipient_pages import PageQueries
from mailer.store.rsvps import RsvpQueries
from mailer.store.search import SearchQueries
from mailer.store.suppressions import SuppressionQueries


class Store(
    ListQueries,
    ImportQueries,
    CampaignQueries,
    SchedulingQueries,
    BatchQueries,
    LedgerQueries,
    RateBudgetQueries,
    FeedbackQueries,
    SuppressionQueries,
    PageQueries,
    SigningKeyQueries,
    RsvpQueries,
    AdminQueries,
    DashboardQueries,
    SearchQueries,
):
    """The database: lists, subscribers, suppressions, campaigns and their ledger."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._leaving_out = {}

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to `url` and, unless told not to, apply any pending migrations."""
        engine = create_store_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


__all__ = ["Store"]
