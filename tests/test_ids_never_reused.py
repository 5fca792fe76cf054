"""An erased person's ids never come back (migration 0013): links already mailed name them.

Unsubscribe and RSVP links name the subscriber id, a VERP bounce address the delivery id.
On SQLite without AUTOINCREMENT, erasing the subscriber with the highest id handed that id
(and, through the cascade, their deliveries' ids) to the next person added. The upgrade
that fixes it rebuilds those tables: it must keep every row that refers to them.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SAWarning

from campaign_support import make_settings
from conftest import POSTGRES_URL
from mailer.errors import StoreError
from mailer.models import CampaignStatus, SubscriberStatus
from mailer.store import Store
from mailer.store.database import (
    MIGRATIONS_DIR,
    create_store_engine,
    current_revision,
    head_revision,
    upgrade,
)
from mailer.store.schema import (
    campaigns,
    deliveries,
    feedback_events,
    lists,
    memberships,
    rsvps,
    subscribers,
    suppressions,
)
from mailer.store.signer import load_signer
from mailer.web import create_app

AT = datetime(2026, 1, 1, tzinfo=UTC)
# The tables the upgrade rebuilds, and those whose rows refer to theirs.
REBUILT = ("subscribers", "deliveries")
# Columns migrations after 0013 add (empty after the upgrade): the rows and schema a store
# at 0012 held are compared on the columns it had.
LATER_COLUMNS = {
    "campaigns": {"message_fingerprint", "mail_again", "event_key"}
}  # 0014, 0016, 0017
LATER_INDEXES = {"ix_deliveries_claimable"}  # 0015


def _campaign(store: Store, list_id: int, slug: str) -> int:
    campaign = store.create_campaign(
        event_path=f"{slug}.toml",
        event_slug=slug,
        list_id=list_id,
        subject=slug,
        status=CampaignStatus.PAUSED,
    )
    assert store.snapshot_audience(campaign, list_id) is not None
    return campaign


def _delivery_of(store: Store, campaign_id: int) -> dict[int, int]:
    """subscriber id -> delivery id, for one campaign."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.subscriber_id, deliveries.c.id).where(
                deliveries.c.campaign_id == campaign_id
            )
        ).all()
    return {int(subscriber): int(delivery) for subscriber, delivery in rows}


async def test_an_erased_persons_links_never_reach_the_next_person_added(
    store: Store, tmp_path: Path
) -> None:
    """Ana and Bob are mailed; Bob is erased; Carol is added and mailed. Carol gets neither
    Bob's subscriber id nor his delivery id, and Bob's old one-click unsubscribe leaves
    her subscribed (it answers "invalid link")."""
    store.create_list("members", title="Members")
    list_id = store.list_id("members")
    for address in ("ana@example.org", "bob@example.org"):
        store.add_subscriber(address, "members")
    bob = store.get_subscriber("bob@example.org")
    assert bob.id is not None
    first = _campaign(store, list_id, "first")
    bob_delivery = _delivery_of(store, first)[bob.id]
    settings = make_settings(tmp_path, 25)
    signer = load_signer(settings, store=store)
    bob_unsubscribe = signer.sign(subscriber_id=bob.id, list_id=list_id, campaign_id=first)

    store.remove_subscriber("bob@example.org")  # erase: the row is deleted
    store.add_subscriber("carol@example.org", "members")
    carol = store.get_subscriber("carol@example.org")
    assert carol.id != bob.id
    second = _campaign(store, list_id, "second")
    assert bob_delivery not in _delivery_of(store, second).values()
    assert signer.verify_bounce(signer.sign_bounce(delivery_id=bob_delivery)) == bob_delivery
    assert store.delivery_target(bob_delivery) is None

    app = create_app(store=store, signer=signer, settings=settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=settings.base_url
    ) as client:
        response = await client.post(
            f"/u/{bob_unsubscribe}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code != 200
    assert store.get_subscriber("carol@example.org").status == SubscriberStatus.SUBSCRIBED
    assert [s.email for s in store.iter_subscribers("members", only_subscribed=True)] == [
        "ana@example.org",
        "carol@example.org",
    ]
    with store.engine.connect() as connection:
        assert connection.execute(select(suppressions)).all() == []


def _held(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the database has (reflected, not mailer's current schema),
    in primary-key order, without the columns later migrations add: equal before and after
    an upgrade when it kept every row as it was. Those columns must be empty (NULL, or
    the 0 of a flag whose default it is)."""
    tables = MetaData()
    with warnings.catch_warnings():  # an index on an expression: rows are what is compared
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        tables.reflect(engine)
    held: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for table in tables.sorted_tables:
            if table.name in ("sqlite_sequence", "alembic_version"):
                continue
            later = LATER_COLUMNS.get(table.name, set())
            order = table.primary_key.columns or table.columns
            rows = []
            for row in connection.execute(select(table).order_by(*order)).mappings():
                assert all(row[name] in (None, 0) for name in later if name in row)
                rows.append({k: v for k, v in row.items() if k not in later})
            held[table.name] = rows
    return held


# -- the upgrade from 0012 ---------------------------------------------------------------


def _migrate_to(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _hold_data(connection: Connection) -> None:
    """What a store at 0012 holds: three people on a list, mailed, answering, one of them
    unsubscribed; a bounce report about a delivery (9) since erased with its person."""
    connection.execute(insert(lists).values(id=1, name="members", created_at=AT))
    connection.execute(
        insert(subscribers),
        [
            {
                "id": n,
                "email": f"{who}@example.org",
                "email_key": f"{who}@example.org",
                "name": who.title(),
                "attributes": {"n": n},
                "status": "subscribed",
                "smtputf8": 0,
                "created_at": AT,
                "updated_at": AT,
            }
            for n, who in ((1, "ana"), (2, "bob"), (3, "dan"))
        ],
    )
    connection.execute(
        insert(memberships),
        [
            {"list_id": 1, "subscriber_id": n, "status": status, "created_at": AT, "updated_at": AT}
            for n, status in ((1, "subscribed"), (2, "unsubscribed"), (3, "subscribed"))
        ],
    )
    connection.execute(
        insert(campaigns).values(
            id=1,
            event_path="e.toml",
            event_slug="e",
            list_id=1,
            subject="E",
            status="finished",
            created_at=AT,
            updated_at=AT,
        )
    )
    connection.execute(
        insert(deliveries),
        [
            {
                "id": n + 4,
                "campaign_id": 1,
                "subscriber_id": n,
                "email": f"{n}@example.org",
                "status": "sent",
                "attempts": 1,
                "message_id": f"<{n}@example.org>",
                "updated_at": AT,
            }
            for n in (1, 2, 3)
        ],
    )
    connection.execute(
        insert(rsvps),
        [
            {
                "event_slug": "e",
                "subscriber_id": n,
                "campaign_id": 1,
                "status": "yes",
                "answered_at": AT,
                "updated_at": AT,
            }
            for n in (1, 3)
        ],
    )
    connection.execute(
        insert(suppressions).values(
            email_key="bob@example.org",
            list_id=1,
            reason="unsubscribed",
            source="page",
            campaign_id=1,
            created_at=AT,
        )
    )
    connection.execute(
        insert(feedback_events).values(
            kind="bounce",
            action="suppressed",
            email_key="gone@example.org",
            email="gone@example.org",
            campaign_id=1,
            delivery_id=9,
            source="mailbox",
            created_at=AT,
        )
    )


def _at_0012_holding_data(url: str) -> Engine:
    """A database migrated to 0012 and filled, through an engine as mailer opens it (on
    SQLite: foreign keys ON)."""
    engine = create_store_engine(url)
    with engine.begin() as connection:
        _migrate_to(connection, "0012")
        _hold_data(connection)
    return engine


def _schema_of(engine: Engine) -> dict[str, Any]:
    """Indexes (less their order), foreign keys and columns of every table, as SQLite
    reports them."""
    with engine.connect() as connection:
        names = [
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            name: (
                sorted(
                    tuple(r)[1:]
                    for r in connection.exec_driver_sql(f"PRAGMA index_list({name})")
                    if r[1] not in LATER_INDEXES
                ),
                sorted(
                    tuple(r)[2:]
                    for r in connection.exec_driver_sql(f"PRAGMA foreign_key_list({name})")
                ),
                [  # its columns, less those later migrations add (LATER_COLUMNS)
                    tuple(r)
                    for r in connection.exec_driver_sql(f"PRAGMA table_info({name})")
                    if r[1] not in LATER_COLUMNS.get(name, set())
                ],
            )
            for name in names
            if name != "sqlite_sequence"
        }


def test_the_upgrade_keeps_every_row_and_then_never_reuses_an_id(tmp_path: Path) -> None:
    """SQLite at 0012 holding people, memberships, deliveries, answers, suppressions: after
    the upgrade every row of every table is there unchanged, the schema is the same but
    for AUTOINCREMENT, and erasing the highest subscriber gives the next person a new id,
    the next delivery an id above every one ever named."""
    engine = _at_0012_holding_data(f"sqlite:///{tmp_path / 'old.db'}")
    before = _held(engine)
    schema_before = _schema_of(engine)
    assert upgrade(engine)
    assert current_revision(engine) == head_revision()
    store = Store(engine)
    assert _held(engine) == before
    assert _schema_of(engine) == schema_before
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        for table in REBUILT:
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).scalar_one()
            assert "AUTOINCREMENT" in sql
        assert sorted(connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")) == [
            ("deliveries", 9),
            ("subscribers", 3),
        ]

    store.remove_subscriber("dan@example.org")  # the highest id: 3
    with engine.connect() as connection:  # the cascade still works after the rebuild
        assert (
            connection.execute(select(deliveries.c.id).where(deliveries.c.subscriber_id == 3)).all()
            == []
        )
    store.add_subscriber("eve@example.org", "members")
    assert store.get_subscriber("eve@example.org").id == 4
    second = _campaign(store, 1, "second")
    assert min(_delivery_of(store, second).values()) > 9
    engine.dispose()


def test_an_upgrade_finding_broken_references_changes_nothing(tmp_path: Path) -> None:
    """A membership naming a subscriber that does not exist (written with foreign keys off,
    by hand): `PRAGMA foreign_key_check` fails the upgrade, which keeps nothing of itself,
    DDL included."""
    engine = _at_0012_holding_data(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql(
            "INSERT INTO memberships (list_id, subscriber_id, status, created_at, updated_at) "
            "VALUES (1, 77, 'subscribed', '2026-01-01', '2026-01-01')"
        )
        connection.commit()
        connection.invalidate()
    before = _held(engine)
    schema_before = _schema_of(engine)
    with pytest.raises(StoreError, match="memberships row"):
        upgrade(engine)
    assert current_revision(engine) == "0012"
    assert _held(engine) == before
    assert _schema_of(engine) == schema_before
    engine.dispose()


def test_the_migration_refuses_to_run_with_foreign_keys_on(tmp_path: Path) -> None:
    """`alembic upgrade` on a connection enforcing foreign keys would cascade the rebuild's
    DROP TABLE into every membership, delivery and answer: 0013 stops first."""
    engine = _at_0012_holding_data(f"sqlite:///{tmp_path / 'old.db'}")
    before = _held(engine)
    with pytest.raises(RuntimeError, match="foreign keys ON"), engine.begin() as connection:
        _migrate_to(connection, "0013")
    assert current_revision(engine) == "0012"
    assert _held(engine) == before
    engine.dispose()


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A brand-new PostgreSQL database (as tests/test_migrations.py makes them)."""
    if not POSTGRES_URL:
        pytest.skip("MAILER_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"mailer_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_the_upgrade_changes_nothing_on_postgresql(postgres_database_url: str) -> None:
    """Sequences never hand out a value twice: 0013 leaves PostgreSQL's rows alone."""
    engine = _at_0012_holding_data(postgres_database_url)
    before = _held(engine)
    assert upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert _held(engine) == before
    engine.dispose()
