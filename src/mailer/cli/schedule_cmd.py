"""`mailer schedule`, `mailer campaign reschedule` and `mailer worker`."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from mailer.cli import common

if TYPE_CHECKING:
    from mailer.campaigns.senders import Children
    from mailer.config import Settings
    from mailer.store import Store

At = Annotated[
    str, typer.Option("--at", metavar="WHEN", help='Local send time, e.g. "2021-09-04 10:00".')
]
Tz = Annotated[
    str | None,
    typer.Option("--tz", metavar="ZONE", help="Time zone of --at (default MAILER_TIMEZONE)."),
]


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
    app.command("worker")(worker)


def schedule(
    ctx: typer.Context,
    event_file: Annotated[Path, typer.Argument(metavar="EVENT", help="The event file (.md).")],
    list_name: Annotated[
        str, typer.Option("--list", "-l", metavar="NAME", help="The list to send to.")
    ],
    at: At,
    tz: Tz = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    new: Annotated[
        bool,
        typer.Option(
            "--new", help="Schedule the event for the list again, even if it already went."
        ),
    ] = False,
) -> None:
    """Schedule an invitation; a running `mailer worker` (or `mailer serve`) sends it then.

    An event already sent to the list, or with a campaign to it still unfinished, is not
    scheduled again unless --new."""
    from mailer.campaigns import lifecycle
    from mailer.campaigns.summary import summarise_send
    from mailer.campaigns.when import describe_time, parse_send_time
    from mailer.cli.events_cmd import load_checked, too_late
    from mailer.clock import utcnow
    from mailer.preflight import check_real_send

    settings = common.settings_from(ctx)
    zone = tz or settings.timezone
    now = utcnow()
    when = parse_send_time(at, zone, now=now)
    # The checks `mailer send` makes, and whether the event starts before `when`.
    event = load_checked(settings, event_file, list_name=list_name, now=now, send_at=when)
    check_real_send(settings)  # refused now rather than by the worker at its time
    with common.open_store(settings) as store:
        plan = lifecycle.plan_schedule(store, event=event, list_name=list_name, new=new)
        audience = plan.audience
        summary = summarise_send(
            settings, event, list_name=list_name, audience=audience, store=store
        )
        if plan.earlier is not None:
            common.err_console.print(
                f"This event already went to '{list_name}': campaign {plan.earlier.id} "
                f"reached {plan.earlier_sent}. --new mails them again.",
                markup=False,
            )
        question = too_late(
            f"Schedule it for {describe_time(when, zone)}?", event, now=now, send_at=when
        )
        details = summary.lines()
        if plan.already_invited:  # as of now: counted again when it goes
            details.append(lifecycle.already_invited_note(plan.already_invited))
        common.confirm(question, yes=yes, details=details)
        campaign = lifecycle.schedule(store, plan, event=event, event_path=event_file, when=when)
    common.console.print(
        f"Campaign {campaign.id} scheduled for {describe_time(when, zone)}.\n"
        "A running `mailer worker` or `mailer serve` sends it then; "
        f"`mailer campaign show {campaign.id}` follows it.",
        markup=False,
    )


def reschedule(
    ctx: typer.Context,
    campaign_id: Annotated[int, typer.Argument(metavar="ID")],
    at: At,
    tz: Tz = None,
) -> None:
    """Move a campaign that has not started (scheduled, missed or paused) to another time."""
    from mailer.campaigns import lifecycle
    from mailer.campaigns.when import describe_time, parse_send_time

    settings = common.settings_from(ctx)
    zone = tz or settings.timezone
    when = parse_send_time(at, zone)
    with common.open_store(settings) as store:
        lifecycle.reschedule(store, campaign_id, when)
    common.console.print(
        f"Campaign {campaign_id} rescheduled for {describe_time(when, zone)}.", markup=False
    )


Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        metavar="N",
        min=1,
        max=256,
        help="Sender processes on this machine (default: the cores, as many as "
        "MAILER_RATE_LIMIT can use, one per 1,000/s). Workers on several machines sharing "
        "one PostgreSQL send one campaign together.",
        show_default=False,
    ),
]


def worker(ctx: typer.Context, processes: Processes = None) -> None:
    """Run the scheduler and sender until SIGTERM / Ctrl-C (no web app)."""
    settings = common.settings_from(ctx)
    from mailer.campaigns.senders import Children, default_processes, worker_main
    from mailer.logs import configure_logging

    configure_logging()
    count = processes if processes is not None else default_processes(settings)
    with common.open_store(settings) as store:  # migrated once, before the children start
        children = Children()
        children.start(worker_main, settings, count=count - 1)
        try:
            asyncio.run(_work_with(settings, store, children))
        except BaseException as failure:
            # This process's worker failed: its error is shown once the others have
            # finished, or at once with a Ctrl-C meanwhile (its first: not "again").
            children.stop()
            _join_workers(
                children,
                timeout=settings.smtp_timeout + 30,
                quit_now=functools.partial(_quit_workers, failure=common.failure_reason(failure)),
            )
            raise
        children.stop()
        _join_workers(children, timeout=settings.smtp_timeout + 30)


def _join_workers(
    children: Children,
    *,
    timeout: float,
    quit_now: Callable[[signal.Signals], NoReturn] | None = None,
) -> None:
    """Wait for the other worker processes (asked to stop) to finish what they have in
    flight; a second Ctrl-C meanwhile quits at once, saying what becomes of them."""
    common.join_or_quit(
        children,
        timeout=timeout,
        waiting="Waiting for the other worker process(es) to finish the messages they have "
        "in flight",
        quit_now=quit_now or _quit_workers,
    )


def _quit_workers(
    sig: signal.Signals, *, own_in_flight: bool = False, failure: BaseException | None = None
) -> NoReturn:
    """A second signal (or the first, after this worker failed with `failure`): out at
    once, as a kill would be. The other worker processes were asked to stop and stop by
    themselves once this one has gone; what this one still had in flight is in its
    journal, settled when its campaigns are next taken up (after their leases), as after
    a crash."""
    then = (
        "what this process had in flight is settled when its campaigns are next taken up"
        if own_in_flight
        else "the other worker process(es) finish the messages they have in flight and "
        "stop by themselves"
    )
    if failure is not None:
        common.err_console.print(
            f"This worker stopped on an error: {common.describe_failure(failure)}",
            markup=False,
        )
    again = "" if failure is not None else " again"
    common.err_console.print(f"{sig.name}{again}: quitting at once; {then}.", markup=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + sig.value)


async def _work_with(settings: Settings, store: Store, children: Children) -> None:
    """This process's worker; a stop signal reaches the other processes at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    first: list[signal.Signals] = []

    def stopping(sig: signal.Signals) -> None:
        if not first:
            first.append(sig)
            common.err_console.print(
                f"{sig.name}: finishing the messages in flight, then stopping "
                f"({sig.name} again quits at once).",
                markup=False,
            )
            stop.set()
            children.stop()
        elif sig is first[0]:  # the same again (Ctrl-C twice): as `mailer send`
            _quit_workers(sig, own_in_flight=True)
        else:  # another signal, as a wrapper forwarding the terminal's: still finishing
            common.err_console.print(
                f"{sig.name}: still finishing the messages in flight "
                f"({first[0].name} again quits at once).",
                markup=False,
            )

    def ended(pid: int, how: str) -> None:
        from mailer.logs import fields

        if not stop.is_set():  # its campaigns' batches are taken over at once
            logging.getLogger("mailer.worker").warning(
                fields(event="worker-process-ended", pid=pid, how=how)
            )

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    watcher = asyncio.create_task(children.watch(ended))
    try:
        await run_worker(settings, store, stop=stop)
    finally:
        watcher.cancel()


async def run_worker(
    settings: Settings, store: Store, *, stop: asyncio.Event | None = None
) -> None:
    """The scheduler loop with clean SIGINT/SIGTERM handling; used by `worker` and `serve`."""
    from mailer.campaigns.scheduler import Scheduler
    from mailer.sending.relays import transport_for
    from mailer.store.signer import load_signer

    signer = load_signer(settings, store=store)
    scheduler = Scheduler(
        settings=settings,
        store=store,
        signer=signer,
        transport_factory=lambda settings: transport_for(settings, store),
    )
    if stop is None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, scheduler.request_stop)
    else:
        asyncio.get_running_loop().create_task(_stop_when(stop, scheduler.request_stop))
    if settings.bounce_mailbox is None:
        await scheduler.run()
        return
    # The bounce mailbox is read beside the scheduler, every MAILER_BOUNCE_POLL_INTERVAL,
    # and stops with it (a message being read is finished first: its outcome is committed).
    from mailer.campaigns.feedback import poll_bounces

    polling_stop = asyncio.Event()
    polling = asyncio.create_task(poll_bounces(settings, store, signer=signer, stop=polling_stop))
    try:
        await scheduler.run()
    finally:
        polling_stop.set()
        await polling


async def _stop_when(event: asyncio.Event, callback: Callable[[], None]) -> None:
    await event.wait()
    callback()
