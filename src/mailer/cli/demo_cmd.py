"""`mailer demo`: the main job end to end on embedded defaults, with zero configuration.

Imports subscribers.example.csv, then sends the London Public Meeting invitation through
the real SMTP path (pool, rate limit, ledger, journal) to an embedded catcher on a
loopback port, which writes every message it receives to var/outbox/ as an .eml file.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailer.cli import common
from mailer.cli.send_cmd import print_result

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.store import Store
    from mailer.tokens import TokenSigner

EXAMPLE_LIST = Path("subscribers.example.csv")
DEMO_LIST = "demo"
DEMO_EVENT = Path("events") / "london-public-meeting.md"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(ctx: typer.Context) -> None:
    """Import the example list and send it the example invitation via a local catcher."""
    from mailer.audience.importer import default_rejects_path, import_file
    from mailer.tokens import load_signer

    settings = common.settings_from(ctx)
    # From the home folder, like every other path: the demo run from a subfolder uses
    # the same list, store and outbox as from the top.
    example_list = common.existing_file(
        settings.home / EXAMPLE_LIST, what="example subscriber file"
    )
    event_path = settings.templates_dir / DEMO_EVENT
    common.existing_file(event_path, what="example event")
    with common.open_store(settings) as store:
        # Without MAILER_SECRET_KEY the store's own key signs, the one `mailer serve` on
        # this store verifies with (see mailer/keyring.py).
        signer = load_signer(settings, store=store)
        report = import_file(
            store,
            example_list,
            list_name=DEMO_LIST,
            rejects_path=default_rejects_path(example_list, settings.var_dir),
        )
        counts = report.counts
        common.console.print(
            f"1. Imported {EXAMPLE_LIST} into list '{DEMO_LIST}': {counts.imported} new, "
            f"{counts.unchanged + counts.updated} already there, {counts.suppressed} "
            f"unsubscribed earlier (skipped), {counts.invalid} invalid."
        )
        asyncio.run(_send(settings, store, event_path, signer))


async def _send(settings: Settings, store: Store, event_path: Path, signer: TokenSigner) -> None:
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.config import SmtpSecurity
    from mailer.delivery.catcher import Catcher
    from mailer.message.event import load_event
    from mailer.sending.run import send_campaign_via_smtp

    outbox = settings.var_dir / "outbox"
    async with Catcher(outbox, host="127.0.0.1", port=0) as catcher:
        local = settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": catcher.port,
                "smtp_security": SmtpSecurity.NONE,
                "smtp_username": None,
                "smtp_password": None,
            }
        )
        common.console.print(f"2. Embedded SMTP catcher listening on 127.0.0.1:{catcher.port}.")
        event = load_event(event_path)
        choice = start_or_resume(
            store, event_path=event_path, event=event, list_name=DEMO_LIST, new=True
        )
        result = await send_campaign_via_smtp(
            settings=local, store=store, signer=signer, campaign_id=choice.campaign.id
        )
    common.console.print("3. Sent:")
    print_result(result)
    received = sorted(outbox.glob("*.eml"))
    if not received:
        common.console.print("The catcher received nothing.")
        raise typer.Exit(1)
    sample = received[-1]
    message = message_from_bytes(sample.read_bytes(), policy=policy.default)
    link = str(message.get("List-Unsubscribe", "")).split(",")[0].strip(" <>")
    common.console.print(
        f"4. The catcher saved {catcher.received} messages in {outbox}/; one of them:"
    )
    common.console.print(f"   {sample}", markup=False)
    common.console.print(f"   To: {message['To']}   Subject: {message['Subject']}", markup=False)
    common.console.print(f"   Unsubscribe link: {link}", markup=False)
    common.console.print(
        "   Run `mailer serve` (default http://127.0.0.1:8000) and open the link to try it."
    )
