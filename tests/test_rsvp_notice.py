"""The moved-up guest's notice, sent by `mailer serve` after the answer page has gone out,
must not hold the server's event loop: it reads and writes the store, and on SQLite a
write waits (up to the busy timeout, 30 s) while another writer, such as an upload being
imported in the dashboard (one transaction), holds the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from campaign_support import make_settings, seed_list
from mailer.message.event import load_event
from mailer.store import Store
from smtp_server import SmtpTestServer
from test_rsvp import ORIGIN, client, copy_event, invite, rsvp_path


async def test_the_notice_waits_for_a_busy_database_off_the_event_loop(
    sqlite_store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """One place, two guests: the second waits. While the first's "can't come" is being
    answered, another writer takes the SQLite database just as the relay takes the notice.
    The server keeps answering (here: its health check) while the notice waits for the
    database, and once the other writer is done the guest moved up is marked told."""
    store = sqlite_store
    settings = make_settings(tmp_path, smtp_server.port)
    first, second = seed_list(store, tmp_path, 2)
    event_file = copy_event(
        tmp_path,
        replace={
            "starts_at: 2021-09-11T14:30": "starts_at: 2031-09-11T14:30",
            "ends_at: 2021-09-11T16:30": "ends_at: 2031-09-11T16:30",
            "capacity: 40": "capacity: 1",
        },
    )
    await invite(store, settings, event_file)
    paths = {m.rcpt_tos[0]: rsvp_path(m) for m in smtp_server.messages}
    slug = load_event(event_file).slug
    invitations = len(smtp_server.messages)
    database = tmp_path / "mailer.db"
    other_writer = sqlite3.connect(database, isolation_level=None, timeout=30)
    async with client(store, settings) as web:
        for guest in (first, second):
            answered = await web.post(paths[guest], data={"answer": "yes"}, headers=ORIGIN)
            assert answered.status_code == 200
        assert store.rsvp_counts(slug).waiting == 1

        # The relay holds the notice's end of data a moment; meanwhile the answer is
        # committed and another writer takes the database.
        smtp_server.delays["END"] = 0.3
        leaving = asyncio.create_task(web.post(paths[first], data={"answer": "no"}, headers=ORIGIN))
        while smtp_server.commands["RCPT"] <= invitations:  # noqa: ASYNC110 - a plain Counter
            await asyncio.sleep(0.01)
        other_writer.execute("BEGIN IMMEDIATE")
        try:
            while len(smtp_server.messages) <= invitations:  # noqa: ASYNC110 - a plain list
                await asyncio.sleep(0.01)
            # The notice is accepted and now waits for the database: the server answers.
            health = await web.get("/healthz")
            assert health.status_code == 200
            await asyncio.sleep(0.5)
        finally:
            other_writer.execute("COMMIT")
            other_writer.close()
        answer = await leaving
        assert answer.status_code == 200
    (notice,) = smtp_server.messages[invitations:]
    assert notice.rcpt_tos == [second]
    counts = store.rsvp_counts(slug)
    assert (counts.yes, counts.waiting, counts.no) == (1, 0, 1)
    assert counts.untold == 0, "the guest moved up was told, yet not marked so"
