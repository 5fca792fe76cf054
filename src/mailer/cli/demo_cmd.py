"""`mailer demo`: the main job end to end on embedded defaults, with zero configuration.

Imports subscribers.example.csv, then sends the London Public Meeting invitation through
the real SMTP path (pool, rate limit, ledger, journal) to an embedded catcher on a
loopback port, which writes every message it receives as an .eml file.

Everything the demo makes stays in its own folder, var/demo/ (its store demo.db, the
outbox, the journal, the reject files), never in the organiser's store: trying mailer
out leaves no "demo" list or campaign among the real ones, and the real database (maybe
PostgreSQL) is not even opened.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailer.cli import common

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.store import Store
    from mailer.tokens import TokenSigner

EXAMPLE_LIST = Path("subscribers.example.csv")
DEMO_LIST = "demo"
DEMO_TITLE = "the mailer demo"
DEMO_EVENT = Path("events") / "london-public-meeting.md"
DEMO_FOLDER = "demo"  # under MAILER_VAR_DIR
DEMO_STORE = "demo.db"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo_settings(settings: Settings) -> Settings:
    """The organiser's settings with the store and every data folder moved to var/demo/,
    and nothing of theirs that reaches outside it: the links are signed with the demo
    store's own key and point at a `mailer serve` on this machine, and the messages go to
    the embedded catcher only (no MAILER_RELAYS, no bounce address). With the
    organiser's MAILER_SECRET_KEY and MAILER_BASE_URL (from a .env), a demo link named
    subscriber 1 of list 1 and was valid on their real server: opened, it unsubscribed a
    real person from a real list."""
    from mailer.config import Settings

    var_dir = (
        settings.var_dir if settings.var_dir.is_absolute() else settings.home / settings.var_dir
    )
    folder = var_dir / DEMO_FOLDER
    return settings.model_copy(
        update={
            "database_url": f"sqlite:///{folder / DEMO_STORE}",
            "var_dir": folder,
            "secret_key": None,
            "secret_key_fallbacks": [],
            "retired_key_ids": [],
            "base_url": Settings.model_fields["base_url"].default,
            "relays": [],
            "bounce_address": None,
        }
    )


def demo(ctx: typer.Context) -> None:
    """Import the example list and send it the example invitation via a local catcher
    (all kept in var/demo/, apart from your own data)."""
    from mailer.audience.importer import default_rejects_path, import_file
    from mailer.store.signer import load_signer

    settings = demo_settings(common.settings_from(ctx))
    # From the home folder, like every other path: the demo run from a subfolder uses
    # the same list, store and outbox as from the top.
    example_list = common.existing_file(
        settings.home / EXAMPLE_LIST, what="example subscriber file"
    )
    event_path = settings.templates_dir / DEMO_EVENT
    common.existing_file(event_path, what="example event")
    with common.open_store(settings) as store:
        # Without MAILER_SECRET_KEY the demo store's own key signs, the one `mailer serve`
        # on this store verifies with (see mailer/store/keyring.py).
        signer = load_signer(settings, store=store)
        report = import_file(
            store,
            example_list,
            list_name=DEMO_LIST,
            rejects_path=default_rejects_path(example_list, settings.var_dir),
        )
        if store.list_title(DEMO_LIST) is None:
            store.describe_list(DEMO_LIST, title=DEMO_TITLE)
        counts = report.counts
        common.console.print(
            f"1. Imported {EXAMPLE_LIST} into list '{DEMO_LIST}': {counts.imported} new, "
            f"{counts.unchanged + counts.updated} already there, {counts.suppressed} "
            f"unsubscribed earlier (skipped), {counts.invalid} invalid.",
            markup=False,
        )
        asyncio.run(_send(settings, store, event_path, signer))


async def _send(settings: Settings, store: Store, event_path: Path, signer: TokenSigner) -> None:
    from mailer.campaigns.lifecycle import cancel, pending_reminder, start_or_resume
    from mailer.cli.progress import describe
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
    # The example event has a reminder, scheduled with the invitation: a `mailer serve`
    # with its scheduler on the demo's store (with the organiser's settings) would send it
    # through their relay. The demo sends nothing later.
    reminder = pending_reminder(store, event, choice.campaign.list_id)
    if reminder is not None:
        cancel(store, reminder.id)
    common.console.print(
        f"3. Sent campaign {result.campaign.id} ({result.campaign.subject}): "
        f"{describe(result.counts)} of {result.counts.total}.",
        markup=False,
    )
    received = sorted(outbox.glob("*.eml"))
    if not received:
        common.console.print("The catcher received nothing.")
        raise typer.Exit(1)
    sample = received[-1]
    message = message_from_bytes(sample.read_bytes(), policy=policy.default)
    link = str(message.get("List-Unsubscribe", "")).split(",")[0].strip(" <>")
    database = f"sqlite:///{_shown(settings.var_dir / DEMO_STORE)}"
    lines = [
        f"4. The catcher saved {catcher.received} messages in {_shown(outbox)}/; one of them:",
        f"   {_shown(sample)}",
        f"   To: {message['To']}   Subject: {message['Subject']}",
        f"   Unsubscribe link: {link}",
        # --no-scheduler: serve only the pages. The worker would run with the organiser's
        # settings (a .env beside): read their bounce mailbox into the demo's store, or
        # send what is due there through their relays.
        f"   To try it: mailer --database-url {database} serve --no-scheduler, then open the link.",
        f"The demo keeps all it made in {_shown(settings.var_dir)}/, apart from your own data.",
        "",
        "Next, with your own list (set your relay and sender first: README.md, "
        "`mailer config check`):",
        "  1. Import your list:  mailer subscribers import members.csv --list members",
        f"  2. Write an event:    copy {_shown(event_path)}, then mailer validate YOUR-EVENT.md",
        "  3. Preview it:        mailer preview YOUR-EVENT.md --list members --open",
        "  4. Test send:         mailer send YOUR-EVENT.md --list members "
        "--test-to you@example.org",
        "  5. Send:              mailer send YOUR-EVENT.md --list members",
    ]
    common.console.print("\n".join(lines), markup=False)


def _shown(path: Path) -> Path:
    """`path` from the current folder when it is below it (short, and what a shell
    typed there means), else in full."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
