"""`mailer send`: dry run, test send, or the real thing (resuming an unfinished campaign)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from mailer.cli import common

if TYPE_CHECKING:
    from mailer.campaigns.senders import Children
    from mailer.campaigns.trial import TestSent
    from mailer.config import Settings
    from mailer.message.event import Event
    from mailer.models import AudienceFilter, MessageKind
    from mailer.sending.run import RunResult
    from mailer.store import Store
    from mailer.tokens import TokenSigner

EXIT_INCOMPLETE = 1
EXIT_INTERRUPTED = 130

# `mailer send`, `campaign resume` and `campaign send-now` alike (run_with_signals).
SenderProcesses = Annotated[
    int | None,
    typer.Option(
        "--processes",
        metavar="N",
        min=1,
        max=256,
        help="Sender processes (default: the cores, as many as MAILER_RATE_LIMIT and "
        "the list can use: one per 1,000/s and per 2,000 recipients). 1: one process.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("send")(send)


def send(
    ctx: typer.Context,
    event_file: Annotated[Path, typer.Argument(metavar="EVENT", help="The event file (.md).")],
    list_name: Annotated[
        str, typer.Option("--list", "-l", metavar="NAME", help="The list to send to.")
    ],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Make the real send's checks, render and check every message; send nothing.",
        ),
    ] = False,
    test_to: Annotated[
        str | None,
        typer.Option(
            "--test-to", metavar="ADDRESS", help="Send one [TEST] sample to this address only."
        ),
    ] = None,
    test_as: Annotated[
        str | None,
        typer.Option(
            "--test-as",
            metavar="ADDRESS",
            help="With --test-to: personalise the sample as this member of the list "
            "(default: its first subscribed member).",
        ),
    ] = None,
    new: Annotated[
        bool,
        typer.Option(
            "--new", help="Send the event to the list again, even if it already went to it."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option(
            "--resend-unknown",
            help="Also resend messages whose outcome was lost in a crash (same Message-ID).",
        ),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            metavar="ANSWERS",
            help="Only those whose RSVP answer is one of these, comma-separated: yes, "
            "waiting, maybe, no, no-answer (e.g. --only yes,maybe).",
        ),
    ] = None,
    message: Annotated[
        str,
        typer.Option(
            "--message",
            metavar="KIND",
            help="invitation (default); reminder: the event file's '--- reminder ---' "
            "section (to yes and maybe unless --only); update: its '--- update ---' "
            "section (or the invitation) with the calendar entry's SEQUENCE raised.",
        ),
    ] = "invitation",
    processes: SenderProcesses = None,
) -> None:
    """Send an event invitation to a list; run it again after a crash to resume.

    Running the same command after the campaign finished sends nobody: --new sends the
    event to the list a second time. --message and --only send a follow-up (a reminder,
    an update) to those who answered so; nobody gets the same reminder twice."""
    from mailer.campaigns import lifecycle
    from mailer.cli.events_cmd import load_checked
    from mailer.errors import CampaignError, InputError
    from mailer.preflight import check_real_send
    from mailer.store.signer import load_signer

    if test_as is not None and test_to is None:
        raise InputError("--test-as goes with --test-to (the address the sample goes to)")
    settings = common.settings_from(ctx)
    kind, answers = _follow_up(message, only)
    # Checked as `mailer validate --list` checks it, and loaded once: what is confirmed
    # is what is sent.
    event = load_checked(settings, event_file, list_name=list_name)
    shown = event.for_message(kind)  # a follow-up without its section stops here
    with common.open_store(settings) as store:
        signer = load_signer(settings, store=store)
        check_real_send(settings)  # before any connection, a test send's too
        if dry_run:
            # Whatever the real send would refuse, the dry run refuses in the same words:
            # "all is well" from a dry run of a send that cannot happen misled an organiser.
            # Except a campaign waiting for its time: checking the messages it will send
            # before then is what a dry run is for (a review).
            try:
                plan = lifecycle.plan_send(
                    store, event=event, list_name=list_name, new=new, message=kind, only=answers
                )
                audience = (plan.message, plan.only, plan.mail_again)
            except CampaignError as refused:
                waiting = (
                    store.get_campaign(refused.campaign_id)
                    if refused.campaign_id is not None
                    else None
                )
                if waiting is None or not lifecycle.waiting_for_its_time(waiting):
                    raise
                common.console.print(
                    f"Note: {refused}. A send now would be refused; this dry run builds the "
                    "messages from this file as that campaign will.",
                    markup=False,
                )
                audience = (waiting.message, waiting.audience_filter, waiting.mail_again)
            _dry_run(store, settings, shown, list_name, signer, audience)
            return
        if test_to is not None:
            _test_send(store, settings, shown, list_name, test_to, signer, test_as)
            return
        result = _send(
            store,
            settings,
            event,
            event_file,
            list_name,
            new,
            yes,
            resend_unknown,
            kind=kind,
            only=answers,
            processes=processes,
        )
    print_result(result)
    exit_for(result)


def _follow_up(
    message: str, only: str | None
) -> tuple[MessageKind, frozenset[AudienceFilter] | None]:
    """--message and --only, read; a bad value is one line naming the option."""
    from mailer.errors import InputError
    from mailer.models import AudienceFilter, MessageKind

    try:
        kind = MessageKind(message.strip().lower())
    except ValueError as exc:
        kinds = ", ".join(k.value for k in MessageKind)
        raise InputError(f"--message {message!r}: not one of {kinds}") from exc
    if only is None:
        return kind, None
    answers: set[AudienceFilter] = set()
    for word in only.split(","):
        try:
            answers.add(AudienceFilter(word.strip().lower()))
        except ValueError as exc:
            known = ", ".join(f.value for f in AudienceFilter)
            raise InputError(f"--only {word.strip()!r}: not one of {known}") from exc
    return kind, frozenset(answers)


def _dry_run(
    store: Store,
    settings: Settings,
    event: Event,
    list_name: str,
    signer: TokenSigner,
    audience: tuple[MessageKind, frozenset[AudienceFilter] | None, bool],
) -> None:
    """`audience`: the message, its answers (`--only`) and whether the invitation goes to
    those who had it elsewhere too: to whom the send would go."""
    from mailer.campaigns.trial import dry_run

    message, only, mail_again = audience
    report = dry_run(
        store,
        settings=settings,
        event=event,
        list_name=list_name,
        signer=signer,
        message=message,
        only=only,
        mail_again=mail_again,
    )
    common.console.print(
        f"Dry run: {report.messages} messages rendered and composed "
        f"({report.total_bytes / 1e6:.1f} MB) in {report.seconds:.1f} s; "
        f"{len(report.failures)} could not be built. Nothing was sent.",
        markup=False,
    )
    for email, reason in report.failures[:10]:
        common.console.print(f"  {email}: {reason}", markup=False)
    if report.failures:
        raise typer.Exit(EXIT_INCOMPLETE)


def _test_send(
    store: Store,
    settings: Settings,
    event: Event,
    list_name: str,
    to: str,
    signer: TokenSigner,
    personalise_as: str | None,
) -> None:
    sent = asyncio.run(_send_test(store, settings, event, list_name, to, signer, personalise_as))
    outcome = sent.outcome
    common.console.print(
        f"Test message to {to}, personalised as {sent.personalised_as} of list "
        f"'{list_name}'{'' if personalise_as else ' (--test-as picks another member)'}: "
        f"{outcome.status.value} ({outcome.code or '-'} {outcome.reply}). "
        "Not recorded in any campaign.",
        markup=False,
    )
    if outcome.status.value != "sent":
        raise typer.Exit(EXIT_INCOMPLETE)


async def _send_test(
    store: Store,
    settings: Settings,
    event: Event,
    list_name: str,
    to: str,
    signer: TokenSigner,
    personalise_as: str | None,
) -> TestSent:
    from mailer.campaigns.trial import send_test
    from mailer.sending.relays import transport_for

    async with transport_for(settings, store) as transport:
        return await send_test(
            store,
            settings=settings,
            transport=transport,
            event=event,
            list_name=list_name,
            to=to,
            signer=signer,
            personalise_as=personalise_as,
        )


def _send(
    store: Store,
    settings: Settings,
    event: Event,
    event_file: Path,
    list_name: str,
    new: bool,
    yes: bool,
    resend_unknown: bool,
    *,
    kind: MessageKind,
    only: frozenset[AudienceFilter] | None,
    processes: int | None = None,
) -> RunResult:
    from mailer.campaigns import lifecycle
    from mailer.campaigns.summary import summarise_send
    from mailer.cli.events_cmd import too_late
    from mailer.clock import utcnow
    from mailer.sending.run import worker_identity

    # Decide, then ask, then write: a campaign row is work a running worker would pick up.
    plan = lifecycle.plan_send(
        store, event=event, list_name=list_name, new=new, message=kind, only=only
    )
    shown = event.for_message(kind)
    summary = summarise_send(
        settings, shown, list_name=list_name, audience=plan.audience, store=store
    )
    details = summary.lines()
    if plan.only is not None:
        answers = ", ".join(sorted(a.value for a in plan.only))
        reminded = " (leaving out anyone already reminded)" if kind.value == "reminder" else ""
        details.append(f"Only those who answered: {answers}{reminded}.")
    if plan.already_invited:
        details.append(lifecycle.already_invited_note(plan.already_invited))
    if plan.existing is not None:
        from mailer.cli.progress import describe

        common.console.print(
            f"Resuming unfinished campaign {plan.existing.id} ({plan.existing.status.value}; "
            f"{describe(store.delivery_counts(plan.existing.id))}). "
            "Pass --new to start another.",
            markup=False,
        )
        question = f"Resume campaign {plan.existing.id}: {plan.audience} to send?"
    else:
        question = f"Send to {plan.audience} subscriber(s)?"
    if plan.earlier is not None:
        when = plan.earlier.finished_at or plan.earlier.started_at or plan.earlier.created_at
        warning = (
            f"This event already went to '{list_name}': campaign {plan.earlier.id} on "
            f"{when:%Y-%m-%d %H:%M} UTC reached {plan.earlier_sent}. --new mails them again."
        )
        common.err_console.print(warning, markup=False)
        question = f"Send it again to {plan.audience} subscriber(s)?"
    question = too_late(question, event, now=utcnow())  # says so, if the event has started
    common.confirm(question, yes=yes, details=details)
    campaign = lifecycle.start_send(
        store, plan, event=event, event_path=event_file, owner=worker_identity()
    )
    reminder = lifecycle.pending_reminder(store, event, plan.list_id)
    if reminder is not None and reminder.scheduled_at is not None:
        common.console.print(
            f"The reminder (campaign {reminder.id}, to those who answered yes or maybe) is "
            f"scheduled for {reminder.scheduled_at:%Y-%m-%d %H:%M} UTC; a running "
            "`mailer worker` or `mailer serve` sends it then.",
            markup=False,
        )
    return run_with_signals(
        store,
        settings,
        campaign.id,
        resend_unknown=resend_unknown,
        total=plan.audience,
        resume=plan.existing is not None,
        event=event,
        processes=processes,
    )


def run_with_signals(
    store: Store,
    settings: Settings,
    campaign_id: int,
    *,
    resend_unknown: bool = False,
    total: int,
    resume: bool = False,
    early: bool = False,
    event: Event | None = None,
    processes: int | None = None,
    to_send: int | None = None,
) -> RunResult:
    """Run the campaign with a progress display; SIGINT/SIGTERM stop it cleanly (paused).

    With more than one process (`processes`, default: as many as the rate and `to_send`
    recipients, else `total`, can use), this process coordinates and shows progress for
    all; the others help (mailer.campaigns.senders) and are stopped with it."""
    from dataclasses import replace

    from mailer.campaigns.senders import Children, default_processes, helper_main
    from mailer.store.signer import load_signer

    signer = load_signer(settings, store=store)
    if processes is None:
        processes = default_processes(settings, audience=total if to_send is None else to_send)
    children = Children()
    children.start(helper_main, settings, campaign_id, count=processes - 1)
    try:
        result = asyncio.run(
            _run(
                store,
                settings,
                campaign_id,
                signer,
                resend_unknown=resend_unknown,
                total=total,
                resume=resume,
                early=early,
                event=event,
                children=children,
            )
        )
    except BaseException as failure:
        # The run failed: its error is shown once the helpers have finished, or at once
        # with a Ctrl-C meanwhile (the organiser's first: not "again").
        children.stop()
        _join_or_quit(
            children,
            store,
            campaign_id,
            timeout=settings.smtp_timeout + 30,
            failure=common.failure_reason(failure),
        )
        raise
    children.stop()
    _join_or_quit(children, store, campaign_id, timeout=settings.smtp_timeout + 30)
    if not children.processes:
        return result
    # The helpers have finished what they had in flight: count it.
    counts = store.delivery_counts(campaign_id)
    result.progress.count_everyone(counts)
    return replace(result, counts=counts)


async def _run(
    store: Store,
    settings: Settings,
    campaign_id: int,
    signer: TokenSigner,
    *,
    resend_unknown: bool,
    total: int,
    resume: bool,
    early: bool,
    event: Event | None,
    children: Children,
) -> RunResult:
    from mailer.cli.progress import ProgressDisplay
    from mailer.sending.run import send_campaign_via_smtp

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop(signame: str) -> None:
        common.err_console.print(
            f"\n{signame}: finishing the messages in flight, then stopping "
            "(send the signal again to quit at once)."
        )
        stop_requested.set()
        children.stop()  # they ignore the terminal's Ctrl-C: one SIGTERM each
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, quit_now, sig)

    def quit_now(sig: signal.Signals) -> None:
        _quit_at_once(store, campaign_id, sig)

    def helper_ended(pid: int, how: str) -> None:
        if not stop_requested.is_set():
            common.err_console.print(
                f"\nA helper sender process (pid {pid}) ended ({how}); the others take over "
                "its recipients, settling what it had in flight from its journal.",
                markup=False,
            )

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    watcher = asyncio.create_task(children.watch(helper_ended))
    try:
        with ProgressDisplay(total, label=f"campaign {campaign_id}") as display:
            return await send_campaign_via_smtp(
                settings=settings,
                store=store,
                signer=signer,
                campaign_id=campaign_id,
                resend_unknown=resend_unknown,
                on_progress=display.update,
                stop_requested=stop_requested,
                resume=resume,
                early=early,
                event=event,
                shared_progress=bool(children.processes),
            )
    finally:
        watcher.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _quit_at_once(
    store: Store, campaign_id: int, sig: signal.Signals, *, failure: BaseException | None = None
) -> NoReturn:
    """The second signal (or the first, after the run failed with `failure`): paused
    first, so that no worker (a running `mailer serve`) takes the campaign over when this
    sender's lease runs out and sends the rest, which a new organiser saw after pressing
    Ctrl-C twice; then out at once, as a kill -9 would be (no task or helper process is
    waited for: one may be waiting for the relay). The journals hold what was in flight;
    resuming settles it first, as after a crash."""
    from mailer.campaigns import lifecycle
    from mailer.errors import one_line_reason

    if failure is not None:
        common.err_console.print(
            f"The send stopped on an error: {common.describe_failure(failure)}", markup=False
        )

    try:
        lifecycle.pause(store, campaign_id)
        note = f"campaign {campaign_id} paused"
    except Exception as exc:  # already paused (the first signal) or ended, or no store
        try:
            note = f"campaign {campaign_id} {store.campaign_status(campaign_id).value}"
        except Exception:
            note = f"campaign {campaign_id} not paused ({one_line_reason(exc)})"
    again = "" if failure is not None else " again"
    common.err_console.print(
        f"{sig.name}{again}: quitting at once; {note}. `mailer campaign resume "
        f"{campaign_id}` goes on (the messages in flight are settled first).",
        markup=False,
    )
    common.console.show_cursor(True)  # the progress bar hid it; nothing else restores it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + sig.value)


def _join_or_quit(
    children: Children,
    store: Store,
    campaign_id: int,
    *,
    timeout: float,
    failure: BaseException | None = None,
) -> None:
    """Wait for the helper processes (already asked to stop) to finish what they have in
    flight; a signal meanwhile quits at once, as a second Ctrl-C does while sending."""
    common.join_or_quit(
        children,
        timeout=timeout,
        waiting="Waiting for the other sender process(es) to finish the messages they have "
        "in flight",
        quit_now=functools.partial(_quit_at_once, store, campaign_id, failure=failure),
    )


def print_result(result: RunResult) -> None:
    from mailer.cli.progress import describe
    from mailer.sending.engine import StopReason

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
    message = result.message
    if result.reason is StopReason.HALTED and campaign.last_error:
        # Another sender paused it (its relay was down, ...) and said why: claiming the
        # campaign cleared any older note, and an organiser's pause or cancel sets none.
        message = campaign.last_error
    common.console.print(f"Status: {campaign.status.value} — {message}", markup=False)
    common.console.print(f"Report: mailer campaign report {campaign.id} [--csv]", markup=False)


def exit_for(result: RunResult) -> None:
    """0 only when every recipient has a final outcome and nobody failed: a paused,
    waiting or partly failed send is not what was asked for."""
    from mailer.sending.engine import StopReason

    if result.reason is StopReason.INTERRUPTED:
        raise typer.Exit(EXIT_INTERRUPTED)
    counts = result.counts
    unfinished = counts.queued + counts.sending + counts.deferred
    if result.reason is not StopReason.FINISHED or unfinished or counts.failed or counts.unknown:
        raise typer.Exit(EXIT_INCOMPLETE)
