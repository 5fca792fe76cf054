"""Argon2id password hashes for the dashboard's users (argon2-cffi, RFC 9106 parameters).

Verification takes tens of milliseconds and much memory on purpose (a stolen database
is slow to guess from); callers on the event loop run it in a thread. A user that does
not exist is checked against a dummy hash, so the time taken does not tell who exists.

The dummy is made at the first check of the process (for anyone, known or not, so that
first check's extra hash tells nothing either), once per set of Argon2 parameters: made
with each app it cost every `create_app` one hash (0.15 s; tests make hundreds of apps).
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mailer.errors import InputError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # a megabyte-long "password" would only cost us the hashing


_DUMMIES: dict[tuple[object, ...], str] = {}
_DUMMIES_LOCK = threading.Lock()


def dummy_hash(hasher: PasswordHasher) -> str:
    """A hash made with `hasher`'s parameters (so checking a password against it costs
    what checking a real user's does), made once per process for those parameters."""
    key = (
        hasher.type,
        hasher.time_cost,
        hasher.memory_cost,
        hasher.parallelism,
        hasher.hash_len,
        hasher.salt_len,
    )
    with _DUMMIES_LOCK:  # held while hashing: a second caller waits for the same dummy
        if key not in _DUMMIES:
            _DUMMIES[key] = hasher.hash("not a password of anyone's")
        return _DUMMIES[key]


class Passwords:
    """Hash and check passwords; `hasher` is injectable (tests use cheaper parameters)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()  # Argon2id, RFC 9106 low-memory profile

    def hash(self, password: str) -> str:
        check_password_quality(password)
        return self.hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; False for a wrong password, an unknown user (None,
        checked against a dummy for equal timing) or an unreadable hash."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        # Made (once) before any check, whoever signs in: see the module's docstring.
        dummy = dummy_hash(self.hasher)
        try:
            self.hasher.verify(password_hash or dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)


def check_password_quality(password: str) -> None:
    """Refuse passwords too short to resist guessing, or too long to hash cheaply."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters",
            hint="A few unrelated words make a long password that is easy to type.",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InputError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
