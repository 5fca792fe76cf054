"""`mailer send`: dry run, test send, or the real thing (resuming an unfinished campaign)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli import common
from mailer.cli.progress import ProgressDisplay, describe
from mailer.config import Settings
from mailer.models import Outcome
from mailer.sending.engine import Dispatcher, StopReason
from mailer.sending.run import RunResult, send_campaign_via_smtp, worker_identity
from mailer.store import Store
from mailer.tokens import TokenSigner

EXIT_PAUSED = 1
EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    app.command("send")(send)


def send(
    ctx: typer.Context,
    event_file: Annotated[Path, typer.Argument(metavar="EVENT", help="The event file (.md).")],
    list_name: Annotated[str, typer.Option("--list", "-l", help="The list to send to.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check every message; send nothing.")
    ] = False,
    test_to: Annotated[
        str | None,
        typer.Option("--test-to", help="Send one [TEST] sample to this address only."),
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a new campaign even if one is unfinished.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option(
            "--resend-unknown",
            help="Also resend messages whose outcome was lost in a crash (same Message-ID).",
        ),
    ] = False,
) -> None:
    """Send an event invitation to a list; run it again after a crash to resume."""
    from mailer.campaigns.actions import dry_run as run_dry
    from mailer.campaigns.actions import start_or_resume
    from mailer.message.event import load_event
    from mailer.tokens import load_signer

    settings = common.settings_from(ctx)
    common.existing_file(event_file, what="event file")
    event = load_event(event_file)
    signer = load_signer(settings)
    with common.open_store(settings) as store:
        if dry_run:
            report = run_dry(
                store, settings=settings, event_path=event_file, list_name=list_name, signer=signer
            )
            common.console.print(
                f"Dry run: {report.messages} messages rendered and composed "
                f"({report.total_bytes / 1e6:.1f} MB) in {report.seconds:.1f} s; "
                f"{len(report.failures)} could not be built. Nothing was sent."
            )
            for email, reason in report.failures[:10]:
                common.console.print(f"  {email}: {reason}", markup=False)
            return
        if test_to is not None:
            outcome = asyncio.run(
                _send_test(store, settings, event_file, list_name, test_to, signer)
            )
            common.console.print(
                f"Test message to {test_to}: {outcome.status.value} "
                f"({outcome.code or '-'} {outcome.reply}). Not recorded in any campaign.",
                markup=False,
            )
            if outcome.status.value != "sent":
                raise typer.Exit(EXIT_PAUSED)
            return
        # Ask before writing anything: a campaign row is work a running worker would pick up.
        pending = (
            None if new else store.find_unfinished_campaign(event.slug, store.list_id(list_name))
        )
        if pending is not None:
            counts = store.delivery_counts(pending.id)
            common.console.print(
                f"Resuming unfinished campaign {pending.id} ({pending.status.value}; "
                f"{describe(counts)}). Pass --new to start another.",
                markup=False,
            )
        audience = store.count_subscribers(list_name)
        if not yes:
            label = f"campaign {pending.id}" if pending else "a new campaign"
            _confirm(settings, audience, list_name, event.subject, label, pending is not None)
        choice = start_or_resume(
            store,
            event_path=event_file,
            event=event,
            list_name=list_name,
            new=new,
            owner=worker_identity(),
        )
        campaign = choice.campaign
        result = run_with_signals(
            store,
            settings,
            campaign.id,
            resend_unknown=resend_unknown,
            total=audience,
            resume=choice.resumed,
        )
    print_result(result)
    exit_for(result)


def _confirm(
    settings: Settings, audience: int, list_name: str, subject: str, label: str, resumed: bool
) -> None:
    what = "Resume" if resumed else "Send"
    question = (
        f"{what} {label}: '{subject}' to {audience} subscribers of "
        f"'{list_name}' via {settings.smtp_host}:{settings.smtp_port}?"
    )
    if not sys.stdin.isatty():
        from mailer.errors import CampaignError

        raise CampaignError(
            f"not confirmed: {question}",
            hint="Not a terminal, so nobody can be asked: pass --yes to send.",
        )
    if not typer.confirm(question, default=False):
        common.console.print("Not sent; nothing was changed.")
        raise typer.Exit(0)


async def _send_test(
    store: Store,
    settings: Settings,
    event_file: Path,
    list_name: str,
    to: str,
    signer: TokenSigner,
) -> Outcome:
    from mailer.campaigns.actions import send_test
    from mailer.delivery.smtp import SmtpTransport

    transport = SmtpTransport.from_settings(settings)
    try:
        return await send_test(
            store,
            settings=settings,
            transport=transport,
            event_path=event_file,
            list_name=list_name,
            to=to,
            signer=signer,
        )
    finally:
        await transport.aclose()


def run_with_signals(
    store: Store,
    settings: Settings,
    campaign_id: int,
    *,
    resend_unknown: bool = False,
    total: int,
    resume: bool = False,
) -> RunResult:
    """Run the campaign with a progress display; SIGINT/SIGTERM stop it cleanly (paused)."""
    from mailer.tokens import load_signer

    signer = load_signer(settings)
    return asyncio.run(
        _run(store, settings, campaign_id, signer, resend_unknown, total, resume=resume)
    )


async def _run(
    store: Store,
    settings: Settings,
    campaign_id: int,
    signer: TokenSigner,
    resend_unknown: bool,
    total: int,
    *,
    resume: bool,
) -> RunResult:
    dispatchers: list[Dispatcher] = []
    loop = asyncio.get_running_loop()

    def stop(signame: str) -> None:
        common.err_console.print(
            f"\n{signame}: finishing the messages in flight, then stopping "
            "(send the signal again to quit at once)."
        )
        for dispatcher in dispatchers:
            dispatcher.request_stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        with ProgressDisplay(total, label=f"campaign {campaign_id}") as display:
            return await send_campaign_via_smtp(
                settings=settings,
                store=store,
                signer=signer,
                campaign_id=campaign_id,
                resend_unknown=resend_unknown,
                on_progress=display.update,
                stop_requests=dispatchers,
                resume=resume,
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def print_result(result: RunResult) -> None:
    campaign = result.campaign
    recovery = result.recovery
    if recovery.applied or recovery.unknown or recovery.requeued:
        common.console.print(
            f"Recovered from an interrupted run: {recovery.applied} outcomes replayed from "
            f"the journal, {recovery.requeued} never sent (queued again), "
            f"{recovery.unknown} unknown.",
            markup=False,
        )
    progress = result.progress
    common.console.print(
        f"Campaign {campaign.id} ({campaign.subject}) to list '{campaign.list_name}': "
        f"{describe(result.counts)} of {result.counts.total}; "
        f"{progress.sent_this_run} sent in this run at {progress.rate:.1f}/s.",
        markup=False,
    )
    common.console.print(f"Status: {campaign.status.value} — {result.message}", markup=False)
    common.console.print(f"Report: mailer campaign report {campaign.id} [--csv]", markup=False)


def exit_for(result: RunResult) -> None:
    if result.reason is StopReason.BREAKER:
        raise typer.Exit(EXIT_PAUSED)
    if result.reason is StopReason.INTERRUPTED:
        raise typer.Exit(EXIT_INTERRUPTED)
