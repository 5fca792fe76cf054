"""Message-IDs: random per message, on the ledger row from the snapshot, reused on resend."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select, update

from campaign_support import (
    EVENT,
    cli_environment,
    make_settings,
    new_campaign,
    run_mailer,
    seed_list,
    send,
)
from cli_support import run_mailer_here
from mailer.models import DeliveryStatus
from mailer.store import Store
from mailer.store.schema import deliveries
from smtp_server import SmtpTestServer


def header(data: bytes, name: bytes) -> bytes:
    return data.split(b"\r\n" + name + b": ", 1)[1].split(b"\r\n", 1)[0]


def ledger_ids(store: Store, campaign_id: int) -> dict[str, str]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.email, deliveries.c.message_id).where(
                deliveries.c.campaign_id == campaign_id
            )
        )
        return {row.email: row.message_id for row in rows}


async def test_two_fresh_stores_never_issue_the_same_message_id(
    database_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """Seen: four independent stores issued the same `<c1.s1...>` for campaign 1,
    subscriber 1. Receivers that drop repeated Message-IDs would hide later invitations."""
    ids: list[bytes] = []
    for name in ("a", "b"):
        url = database_url if name == "a" else f"sqlite:///{tmp_path / 'other.db'}"
        folder = tmp_path / name
        folder.mkdir()
        with Store.open(url) as store:
            seed_list(store, folder, 3)
            settings = make_settings(folder, smtp_server.port)
            await send(settings, store, new_campaign(store))
    ids = [header(m.data, b"Message-ID") for m in smtp_server.messages]
    assert len(ids) == 6
    assert len(set(ids)) == 6
    assert all(re.fullmatch(rb"<[0-9a-f]{32,64}@cwo\.example\.org>", i) for i in ids)


async def test_the_ledger_row_holds_the_message_id_before_sending_and_a_resend_reuses_it(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 4)
    settings = make_settings(tmp_path, smtp_server.port)
    campaign_id = new_campaign(store)
    campaign = store.get_campaign(campaign_id)
    store.snapshot_audience(campaign_id, campaign.list_id, message_id_domain="cwo.example.org")
    before = ledger_ids(store, campaign_id)
    assert len(set(before.values())) == 4
    await send(settings, store, campaign_id)
    sent = {m.rcpt_tos[0]: header(m.data, b"Message-ID").decode() for m in smtp_server.messages}
    assert sent == before
    # Stand in a crash that lost the relay's reply for one of them: resending it (as
    # --resend-unknown does) carries the same Message-ID, so receivers can drop the copy.
    with store.engine.begin() as connection:
        connection.execute(
            update(deliveries)
            .where(deliveries.c.email == "person00002@example.org")
            .values(status=DeliveryStatus.UNKNOWN.value)
        )
    await send(settings, store, campaign_id, resume=True, resend_unknown=True)
    again = header(smtp_server.messages[-1].data, b"Message-ID").decode()
    assert smtp_server.messages[-1].rcpt_tos == ["person00002@example.org"]
    assert again == before["person00002@example.org"]


def test_two_test_sends_carry_different_message_ids(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    env = cli_environment(tmp_path, smtp_server_thread.port)
    path = tmp_path / "m.csv"
    path.write_text("email,name\nann@example.org,Ann\n")
    imported = run_mailer_here(env, tmp_path, "subscribers", "import", str(path), "-l", "m")
    assert imported.returncode == 0
    for _ in range(2):  # two processes: an id made from a per-process counter would repeat
        args = ("send", str(EVENT), "-l", "m", "--test-to", "me@example.org")
        result = run_mailer(env, tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    first, second = (header(m.data, b"Message-ID") for m in smtp_server_thread.messages)
    assert first != second
