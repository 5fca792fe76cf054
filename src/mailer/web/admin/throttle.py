"""Sign-in rate limiting: 10 failed sign-ins within 15 minutes, for one account or from
one client address, lock that account (or address) out for 15 minutes.

Both keys are counted in the store, so the count survives a restart and is shared by
every process serving the dashboard. A lockout is logged with the account and address,
never the password. While locked, even the right password is refused (otherwise the
lockout would only tell the guesser when they were right).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.logs import fields
from mailer.store import Store

MAX_FAILURES = 10
WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)

log = logging.getLogger("mailer.web.admin")


def account_key(name: str) -> str:
    return f"account:{name.strip().casefold()[:300]}"


def address_key(address: str) -> str:
    return f"address:{address[:300]}"


@dataclass(frozen=True, slots=True)
class Lockout:
    until: datetime


class SignInThrottle:
    """Every attempt is counted before its password is checked (`begin`), and the
    attempts beyond MAX_FAILURES within the window are refused unchecked: however many a
    guesser sends at once, at most MAX_FAILURES passwords are tried per window, per account
    and per address. A successful sign-in takes its attempt back (`succeeded`)."""

    def __init__(self, store: Store, *, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def begin(self, *, name: str, address: str) -> Lockout | None:
        """Count this attempt; the lockout in force for the account or address, if any
        (then the password must not be checked)."""
        now = self.now()
        ends = []
        for key in (account_key(name), address_key(address)):
            counted = self.store.count_login_attempt(key, now=now, window_start=now - WINDOW)
            if counted.locked_until is not None:
                ends.append(counted.locked_until)
            elif counted.failures > MAX_FAILURES:
                # Sent alongside the attempt that reached the limit: refused unchecked,
                # and the lock starts now if that one has not set it yet.
                self.store.lock_login(key, until=now + LOCKOUT)
                ends.append(now + LOCKOUT)
        return Lockout(max(ends)) if ends else None

    def failed(self, *, name: str, address: str) -> None:
        """The password was wrong: at the MAX_FAILURES-th failure, lock the key."""
        now = self.now()
        for key in (account_key(name), address_key(address)):
            found = self.store.login_failures(key)
            if found is not None and found.failures >= MAX_FAILURES and found.locked_until is None:
                self.store.lock_login(key, until=now + LOCKOUT)
                log.warning(
                    fields(
                        event="admin-sign-in-locked",
                        key=key.split(":", 1)[0],
                        user=name[:100],
                        client=address,
                        minutes=int(LOCKOUT.total_seconds() // 60),
                    )
                )
        log.info(fields(event="admin-sign-in-failed", user=name[:100], client=address))

    def succeeded(self, *, name: str, address: str) -> None:
        self.store.clear_login_failures(account_key(name))
        self.store.forgive_login_attempt(address_key(address))
