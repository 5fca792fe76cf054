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
    def __init__(self, store: Store, *, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def locked(self, *, name: str, address: str) -> Lockout | None:
        """The lockout in force for this account or address, if any."""
        now = self.now()
        ends = []
        for key in (account_key(name), address_key(address)):
            found = self.store.login_failures(key)
            if found is not None and found.locked_until is not None and found.locked_until > now:
                ends.append(found.locked_until)
        return Lockout(max(ends)) if ends else None

    def failed(self, *, name: str, address: str) -> None:
        now = self.now()
        for key in (account_key(name), address_key(address)):
            counted = self.store.record_login_failure(
                key,
                now=now,
                window_start=now - WINDOW,
                limit=MAX_FAILURES,
                lock_until=now + LOCKOUT,
            )
            if counted.failures == MAX_FAILURES:
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

    def succeeded(self, *, name: str) -> None:
        self.store.clear_login_failures(account_key(name))
