"""Several sender processes on this machine (issue 15: `--processes N`).

`mailer send --processes N` runs the campaign in this process (the coordinator: the
confirmation, the progress bar, Ctrl-C, the final report) and N-1 helper processes that
claim batches of the same campaign (mailer.sending.helping). `mailer worker --processes N`
runs N workers, each a full scheduler with its own identity (host:pid); workers on other
machines sharing the PostgreSQL store join in the same way.

Children are started with `spawn` (a fresh interpreter: no inherited event loop, threads
or database connections) and given the parent's settings. They ignore the terminal's
Ctrl-C, which the parent turns into one SIGTERM each (finish what is in flight, release,
exit), and stop by themselves if the parent disappears (kill -9): their batches are never
left to a lease expiry when they can be handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from mailer.config import Settings
from mailer.logs import configure_logging, fields
from mailer.models import CampaignStatus

log = logging.getLogger("mailer.worker")

# What one process sends end to end, roughly (bench/README.md: ~1,900/s into a minimal
# sink; a real relay is slower): below this rate a second process only adds start-up.
RATE_PER_PROCESS = 1000.0
# A second process pays for itself from a few seconds of sending, not for a handful.
RECIPIENTS_PER_PROCESS = 2000
_PARENT_CHECK = 0.25  # seconds between checks that the parent is alive


def default_processes(settings: Settings, *, audience: int | None = None) -> int:
    """The machine's cores, but only as many as the rate limit and the audience can use:
    with the default 50/s, one process (exactly the single-sender behaviour)."""
    cores = os.cpu_count() or 1
    wanted = min(cores, math.ceil(settings.rate_limit / RATE_PER_PROCESS))
    if audience is not None:
        wanted = min(wanted, math.ceil(audience / RECIPIENTS_PER_PROCESS))
    return max(1, wanted)


class Children:
    """Child processes started with `spawn`, stopped with one SIGTERM each."""

    def __init__(self) -> None:
        self.processes: list[BaseProcess] = []

    def start(self, target: Callable[..., None], *args: object, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        for _ in range(count):
            process = context.Process(target=target, args=(*args, os.getpid()), daemon=True)
            process.start()
            self.processes.append(process)

    def stop(self) -> None:
        """Ask each to finish what is in flight and exit (idempotent)."""
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds in all; True if every one has ended."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        return not any(process.is_alive() for process in self.processes)

    async def watch(self, report: Callable[[int, str], None], *, every: float = 1.0) -> None:
        """Until cancelled: `report(pid, how)` once for each process that dies meanwhile
        (killed, out of memory). Asking collects every one that ended, so none is left a
        zombie that looks alive to the others (they take its batches over at once). One
        that ended by itself (exit 0: its campaign paused or ended, or it logged why it
        stopped) is not reported."""
        told: set[int] = set()
        while True:
            await asyncio.sleep(every)
            for process in self.processes:
                code = process.exitcode  # None while it runs
                if not code or process.pid is None or process.pid in told:
                    continue
                told.add(process.pid)
                report(process.pid, describe_exit(code))

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds in all, then kill any still running (stuck past
        the relay's timeout)."""
        self.wait(timeout)
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def describe_exit(code: int) -> str:
    """multiprocessing's exit code in words: a negative one is the signal that ended it."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


async def _stop_on_signal_or_orphan(stop: asyncio.Event, parent: int) -> None:
    """SIGTERM, or the parent gone (re-parented to init or a subreaper): stop."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _PARENT_CHECK)


def helper_main(settings: Settings, campaign_id: int, parent: int) -> None:
    """A helper process of `mailer send --processes N` (the spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM
    configure_logging(logging.WARNING)  # the parent's terminal shows the progress bar
    asyncio.run(_help_until_done(settings, campaign_id, parent))


async def _help_until_done(settings: Settings, campaign_id: int, parent: int) -> None:
    from mailer.sending.helping import help_campaign
    from mailer.sending.relays import transport_for
    from mailer.sending.run import make_limiter
    from mailer.store import Store
    from mailer.store.signer import load_signer

    stop = asyncio.Event()
    watcher = asyncio.create_task(_stop_on_signal_or_orphan(stop, parent))
    store = Store.open(settings.database_url, migrate=False)
    try:
        signer = load_signer(settings, store=store)
        limiter = make_limiter(settings, store)
        seen_sending = False
        while not stop.is_set():
            status = await asyncio.to_thread(store.campaign_status, campaign_id)
            if status is CampaignStatus.SENDING:
                seen_sending = True
                async with transport_for(settings, store) as transport:
                    await help_campaign(
                        settings=settings,
                        store=store,
                        transport=transport,
                        signer=signer,
                        campaign_id=campaign_id,
                        stop_requested=stop,
                        limiter=limiter,
                    )
            elif seen_sending:
                return  # paused, cancelled or finished: the coordinator has ended it
            # Rows may come back (retries, a dead sender's batch): look again shortly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.poll_interval)
    except Exception as exc:  # say why in the log; the coordinator carries on
        log.error(fields(campaign=campaign_id, event="helper-failed", error=str(exc)))
    finally:
        store.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def worker_main(settings: Settings, parent: int) -> None:
    """One more `mailer worker` process (the spawn target of `--processes N`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM
    configure_logging()
    asyncio.run(_work(settings, parent))


async def _work(settings: Settings, parent: int) -> None:
    from mailer.campaigns.scheduler import Scheduler
    from mailer.sending.relays import transport_for
    from mailer.store import Store
    from mailer.store.signer import load_signer

    stop = asyncio.Event()
    watcher = asyncio.create_task(_stop_on_signal_or_orphan(stop, parent))
    store = Store.open(settings.database_url, migrate=False)
    try:
        scheduler = Scheduler(
            settings=settings,
            store=store,
            signer=load_signer(settings, store=store),
            transport_factory=lambda settings: transport_for(settings, store),
        )
        stopping = asyncio.create_task(_forward(stop, scheduler.request_stop))
        await scheduler.run()
        stopping.cancel()
    finally:
        store.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _forward(event: asyncio.Event, callback: Callable[[], None]) -> None:
    await event.wait()
    callback()
