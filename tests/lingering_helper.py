"""A stand-in for a helper sender process that is slow to finish its messages in flight
(spawned by tests/test_quit_while_helpers_finish.py through mailer's own `Children`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# A file the lingering process makes once it ignores the stop request (optional).
READY = "LINGER_READY_FILE"


async def until_a_lingering_process_is_up() -> None:
    """For a stand-in run that fails: not before the lingering process ignores SIGTERM
    (the failure's stop request would end it while its interpreter starts)."""
    import asyncio

    ready = Path(os.environ[READY])
    for _ in range(600):
        if await asyncio.to_thread(ready.exists):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the lingering process never started")


def linger(parent: int) -> None:
    """Ignore the stop request and stay up until the parent has gone (at most a minute)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if ready := os.environ.get(READY):  # the stop request can no longer end it
        with open(ready, "w"):
            pass
    deadline = time.monotonic() + 60
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)


def linger_as_worker(_settings: object, parent: int) -> None:
    """`mailer worker --processes N`'s other process (worker_main's signature), lingering."""
    linger(parent)


def linger_as_helper(_settings: object, _campaign_id: int, parent: int) -> None:
    """`mailer send --processes N`'s helper (helper_main's signature), lingering."""
    linger(parent)


def end_at_once(parent: int) -> None:
    """A helper that ends by itself at once, with exit status 0."""
