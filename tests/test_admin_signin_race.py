"""Sign-in attempts sent all at once: at most MAX_FAILURES passwords are checked per
window, whatever the concurrency (each attempt is counted before its password is), and
every answer is a refusal, never a server error (two first attempts for one account both
made its counter row)."""

from __future__ import annotations

import asyncio
import threading

from argon2 import PasswordHasher
from starlette.applications import Starlette

from admin_support import (
    KEY,
    PASSWORD,
    add_user,
    admin_client,
    admin_settings,
    login_attempt,
)
from mailer.clock import utcnow
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.admin.passwords import Passwords
from mailer.web.admin.throttle import MAX_FAILURES

ATTEMPTS = 30


class CountingPasswords(Passwords):
    """The tests' cheap hasher, counting the passwords it is asked to check."""

    def __init__(self) -> None:
        super().__init__(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        self.checked = 0
        self._lock = threading.Lock()

    def verify(self, password_hash: str | None, password: str) -> bool:
        with self._lock:
            self.checked += 1
        return super().verify(password_hash, password)


def app_checking_with(store: Store, passwords: Passwords) -> Starlette:
    """The dashboard as admin_support.admin_app makes it, with these passwords."""
    return create_app(
        store=store,
        signer=TokenSigner(KEY),
        settings=admin_settings(),
        now=utcnow,
        passwords=passwords,
        post_rate_per_minute=None,
    )


async def test_a_burst_of_guesses_gets_no_more_checks_than_the_limit(store: Store) -> None:
    add_user(store, "ana")
    passwords = CountingPasswords()
    app = app_checking_with(store, passwords)
    async with admin_client(app) as client:
        answers = await asyncio.gather(
            *(login_attempt(client, "ana", f"guess number {n:04d}") for n in range(ATTEMPTS))
        )
        codes = sorted(answer.status_code for answer in answers)
        assert set(codes) <= {401, 429}, codes
        assert passwords.checked <= MAX_FAILURES
        assert codes.count(401) == passwords.checked
        # The account is locked now, even for the right password, and it is not checked.
        before = passwords.checked
        assert (await login_attempt(client, "ana", PASSWORD)).status_code == 429
        assert passwords.checked == before


async def test_signing_in_from_an_address_does_not_use_up_its_attempts(store: Store) -> None:
    """Each attempt is counted first; a successful one is taken back, so an office whose
    people sign in often is never locked out by its own good sign-ins."""
    add_user(store, "ana")
    passwords = CountingPasswords()
    app = app_checking_with(store, passwords)
    async with admin_client(app) as client:
        for _ in range(MAX_FAILURES + 5):
            assert (await login_attempt(client, "ana", PASSWORD)).status_code == 303
        for n in range(MAX_FAILURES - 1):  # one short of the limit: still allowed
            assert (
                await login_attempt(client, "ana", f"wrong {n:04d} password")
            ).status_code == 401
        assert (await login_attempt(client, "ana", PASSWORD)).status_code == 303
