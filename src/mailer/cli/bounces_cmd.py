"""`mailer bounces ...`: read the bounce mailbox once, and list what came back."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mailer.cli import common


def register(app: typer.Typer) -> None:
    bounces = typer.Typer(
        help="Bounces, complaints and mailed unsubscribes (MAILER_BOUNCE_MAILBOX).",
        no_args_is_help=True,
    )
    app.add_typer(bounces, name="bounces")
    bounces.command("fetch")(fetch)
    bounces.command("list")(list_bounces)


def fetch(ctx: typer.Context) -> None:
    """Read the bounce mailbox once: suppress bounced and complaining addresses, apply
    mailed unsubscribes, move what was handled to the processed folder (POP3: delete it)
    and leave everything else for a person."""
    from mailer.campaigns.feedback import fetch_once
    from mailer.logs import configure_logging
    from mailer.store.signer import load_signer

    settings = common.settings_from(ctx)
    configure_logging()
    with common.open_store(settings) as store:
        signer = load_signer(settings, store=store)
        report = fetch_once(settings, store, signer=signer)
    done = ", ".join(f"{n} {action}" for action, n in sorted(report.actions.items()))
    common.console.print(
        f"Read {report.read} message(s) from the bounce mailbox: {report.processed} handled"
        f"{f' ({done})' if done else ''}, {report.left_alone} left for a person"
        + (f", {report.seen_before} already recorded earlier" if report.seen_before else "")
        + ".",
        markup=False,
    )


def list_bounces(
    ctx: typer.Context,
    campaign: Annotated[
        int | None, typer.Option("--campaign", metavar="ID", help="Only this campaign's.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
) -> None:
    """Bounces, complaints and mailed unsubscribes recorded, newest first."""
    with common.open_store(common.settings_from(ctx), existing=True) as store:
        if campaign is not None:
            store.get_campaign(campaign)  # a clear error for a campaign that does not exist
        events = store.feedback_events(campaign_id=campaign, limit=limit)
    if not events:
        common.console.print("No bounces, complaints or mailed unsubscribes recorded.")
        return
    table = Table("when (UTC)", "email", "kind", "action", "campaign", "status", "diagnostic")
    # The address is what the list is for: never cut or wrapped, the diagnostic gives way.
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    table.columns[1].min_width = max(len(event.email) for event in events)
    for event in events:
        # Addresses and diagnostics come from outside: plain Text, never Rich markup.
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M}",
            Text(event.email),
            event.kind.value.replace("_", " "),
            event.action.value,
            str(event.campaign_id) if event.campaign_id is not None else "-",
            Text(event.status or ""),
            Text((event.diagnostic or "")[:80]),
        )
    common.console.print(table)
