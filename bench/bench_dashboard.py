"""The dashboard's overview and report of a finished 1,000,000-recipient campaign, on SQLite
and PostgreSQL (target, issue 13: each under 300 ms).

    .venv/bin/python bench/bench_dashboard.py [--recipients 1000000] [--runs 7]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Builds, with set-based SQL (not the importer: the ledger's shape is what matters here),
one list of N subscribers and one finished campaign with N ledger rows over 40 domains:
97% sent over about five hours, 1% bounced, 1% failed, 1% deferred-then-failed, some
later bounces and complaints, 0.3% unsubscribes through its links. Then, in process
(httpx over ASGI, a signed-in organiser), times:

- the report's first view (computes the figures from the ledger and keeps them),
- later report views (the kept figures: the fingerprint check is a few indexed lookups),
- the overview (kept figures for the recent campaign, index-only list counts).

Prints each as the median and the maximum of the runs.
"""

# ruff: noqa: S608 - the SQL below is built from integers and table names of this file only

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.store import Store
from mailer.store.admin import AdminRole
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.admin.passwords import Passwords

SITE = "https://lists.example.org"
PASSWORD = "a bench password of no value"

DOMAINS = 40


def build(store: Store, recipients: int) -> int:
    """The list, its members and one finished campaign with `recipients` ledger rows."""
    dialect = store.engine.dialect.name
    series = (
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {recipients})"
        if dialect == "sqlite"
        else ""
    )
    source = "n" if dialect == "sqlite" else f"generate_series(1, {recipients}) AS n(i)"
    ts = "datetime('2031-06-01 08:00:00', '+' || (i * 18 / 1000) || ' seconds')"
    if dialect != "sqlite":
        ts = "TIMESTAMPTZ '2031-06-01 08:00:00+00' + (i * 18 / 1000) * INTERVAL '1 second'"
    with store.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO lists (name, created_at) VALUES ('members', :at)"),
            {"at": "2031-05-01 00:00:00"},
        )
        attributes = "'{}'"
        connection.execute(
            text(
                f"{series} INSERT INTO subscribers (id, email, email_key, name, attributes, "
                "status, smtputf8, created_at, updated_at) "
                f"SELECT i, 'person' || i || '@domain' || (i % {DOMAINS}) || '.example', "
                f"'person' || i || '@domain' || (i % {DOMAINS}) || '.example', "
                f"'Person ' || i, {attributes}, 'subscribed', 0, "
                f"'2031-05-01 00:00:00', '2031-05-01 00:00:00' FROM {source}"
            )
        )
        connection.execute(
            text(
                f"{series} INSERT INTO memberships (list_id, subscriber_id, status, created_at,"
                f" updated_at) SELECT 1, i, 'subscribed', '2031-05-01 00:00:00', "
                f"'2031-05-01 00:00:00' FROM {source}"
            )
        )
        connection.execute(
            text(
                "INSERT INTO campaigns (id, event_path, event_slug, list_id, subject, status, "
                "scheduled_at, snapshot_at, started_at, finished_at, created_at, updated_at, "
                "relay_pauses, message) VALUES (1, '/x/meeting.md', 'meeting', 1, "
                "'Invitation: the big meeting', 'finished', '2031-06-01 08:00:00', "
                "'2031-06-01 08:00:00', '2031-06-01 08:00:00', '2031-06-01 13:00:00', "
                "'2031-06-01 07:00:00', '2031-06-01 13:00:00', 0, 'invitation')"
            )
        )
        status = (
            "CASE WHEN i % 100 = 1 THEN 'bounced' WHEN i % 100 IN (2, 3) THEN 'failed' "
            "ELSE 'sent' END"
        )
        connection.execute(
            text(
                f"{series} INSERT INTO deliveries (id, campaign_id, subscriber_id, email, status,"
                " attempts, last_code, last_reply, message_id, sent_at, updated_at, feedback, "
                "feedback_at) SELECT i, 1, i, 'person' || i || '@domain' || "
                f"(i % {DOMAINS}) || '.example', {status}, 1, "
                "CASE WHEN i % 100 = 1 THEN 550 WHEN i % 100 IN (2, 3) THEN 554 ELSE 250 END, "
                "CASE WHEN i % 100 = 1 THEN '5.1.1 no such user' ELSE '2.0.0 ok' END, "
                f"'<' || i || '@bench>', {ts}, {ts}, "
                "CASE WHEN i % 500 = 7 THEN 'bounced' WHEN i % 2000 = 9 THEN 'complained' END, "
                f"CASE WHEN i % 500 = 7 OR i % 2000 = 9 THEN {ts} END FROM {source}"
            )
        )
        connection.execute(
            text(
                f"{series} INSERT INTO suppressions (email_key, list_id, reason, source, "
                f"campaign_id, created_at) SELECT 'person' || i || '@domain' || (i % {DOMAINS})"
                f" || '.example', 1, 'unsubscribed', 'page', 1, {ts} FROM {source} "
                "WHERE i % 300 = 5"
            )
        )
        if dialect != "sqlite":
            for table in ("subscribers", "deliveries", "campaigns", "lists"):
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    if dialect != "sqlite":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    else:
        with store.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return 1


async def measure(store: Store, runs: int) -> dict[str, list[float]]:
    passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    settings = Settings(
        secret_key=SecretStr("bench-key-0123456789abcdef0123456789"),
        base_url=SITE,
        templates_dir=Path("templates"),
    )
    app = create_app(
        store=store,
        signer=TokenSigner(b"bench-key-0123456789abcdef0123456789"),
        settings=settings,
        passwords=passwords,
        post_rate_per_minute=None,
    )
    store.add_admin_user(
        "bench", role=AdminRole.VIEWER, password_hash=passwords.hash(PASSWORD), now=utcnow()
    )
    times: dict[str, list[float]] = {"report (first view)": [], "report": [], "overview": []}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
        form = await client.get("/admin/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        signed_in = await client.post(
            "/admin/login",
            data={"csrf_token": token.group(1), "name": "bench", "password": PASSWORD},
            headers={"Origin": SITE},
        )
        assert signed_in.status_code == 303, signed_in.text

        async def timed(label: str, path: str) -> None:
            started = time.perf_counter()
            answer = await client.get(path)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200, answer.text[:500]
            times[label].append(elapsed)

        await timed("report (first view)", "/admin/campaigns/1/report")
        for _ in range(runs):
            await timed("report", "/admin/campaigns/1/report")
            await timed("overview", "/admin")
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    for what, values in times.items():
        ms = [v * 1000 for v in values]
        print(
            f"{label:<11} {what:<20} median {statistics.median(ms):8.1f} ms   "
            f"max {max(ms):8.1f} ms   ({len(ms)} run{'s' if len(ms) > 1 else ''})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--postgres", default=None, help="an admin URL to create a database in")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{Path(folder) / 'bench.db'}")
        started = time.perf_counter()
        build(store, options.recipients)
        print(f"SQLite: built {options.recipients:,} rows in {time.perf_counter() - started:.0f} s")
        report("SQLite", asyncio.run(measure(store, options.runs)))
        store.close()
    if options.postgres:
        admin_url = make_url(options.postgres).set(drivername="postgresql+psycopg")
        name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            store = Store.open(url)
            started = time.perf_counter()
            build(store, options.recipients)
            print(
                f"PostgreSQL: built {options.recipients:,} rows in "
                f"{time.perf_counter() - started:.0f} s"
            )
            report("PostgreSQL", asyncio.run(measure(store, options.runs)))
            store.close()
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
