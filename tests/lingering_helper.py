"""A stand-in for a helper sender process that is slow to finish its messages in flight
(spawned by tests/test_quit_while_helpers_finish.py through mailer's own `Children`)."""

from __future__ import annotations

import os
import signal
import time


def linger(parent: int) -> None:
    """Ignore the stop request and stay up until the parent has gone (at most a minute)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    deadline = time.monotonic() + 60
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)
