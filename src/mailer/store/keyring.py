"""Which keys sign links, and which verify them: one answer for every process on a store.

Links in mail must keep working for as long as the mail exists, and `mailer send`,
`mailer worker` and `mailer serve` may run in different shells, folders or machines. So
the store remembers every key that has signed links (the signing_keys table), and:

- signing uses MAILER_SECRET_KEY when it is set (and records it in the store first);
  without it, the newest key the store generated itself (creating one on first use);
- verifying accepts the signing key, every key recorded in the store, and
  MAILER_SECRET_KEY_FALLBACKS (recorded too), minus MAILER_RETIRED_KEY_IDS.

A key change therefore never invalidates links already sent; stopping old links is a
deliberate act: put the key's id in MAILER_RETIRED_KEY_IDS (e.g. after a leak). A server
that is already running learns of keys recorded after it started (a send with a new
MAILER_SECRET_KEY) when it first meets a link it cannot verify: StoreKeySigner reads
the store again then, at most once a second, so forged links cannot make it query more.

Why the secrets themselves are in the store: verifying needs the key, and the store is
the one thing every process of an installation shares. Whoever can read the store can
forge unsubscribe links, i.e. change subscription status, which is less than they already
have (every address) and the same as before for the demo, whose key file sat beside the
SQLite database. Keys that sign anything more powerful (an organiser login) must not
come from here.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.errors import ConfigError, TokenError
from mailer.tokens import LinkClaims, RsvpClaims, TestMessageClaims, TokenSigner

MIN_KEY_CHARS = 16
# A server reads the store for new keys at most this often (seconds), on unknown links only.
KEY_REFRESH_INTERVAL = 1.0
# Versions before the store kept keys wrote the demo's key here; links it signed stay valid.
LEGACY_KEY_FILE = "secret_key"
_KEY_ID_DOMAIN = b"mailer/key-id\x00"


class KeyOrigin(enum.StrEnum):
    CONFIGURED = "configured"  # MAILER_SECRET_KEY
    FALLBACK = "fallback"  # MAILER_SECRET_KEY_FALLBACKS
    GENERATED = "generated"  # made by the store on first use, without MAILER_SECRET_KEY
    KEY_FILE = "key-file"  # var/secret_key of older versions


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    secret: str
    origin: KeyOrigin
    created_at: datetime

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"SigningKey({self.key_id!r}, {self.origin.value})"


class KeyStore(Protocol):
    """What the key ring needs from the store (store/keys.py implements it)."""

    def signing_keys(self) -> list[SigningKey]:
        """Every recorded key, oldest first."""
        ...

    def add_signing_key(self, key: SigningKey) -> None:
        """Record `key` unless a key with its id is already there."""
        ...


@dataclass(frozen=True, slots=True)
class KeyRing:
    signing: SigningKey
    verifying: tuple[SigningKey, ...]  # the signing key first

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return tuple(key_bytes(k.secret) for k in self.verifying)


def key_id(secret: str) -> str:
    """A short public name for a key (48 bits of a hash). It reveals nothing a token does
    not: anyone holding one signed link can already test guesses against its 128-bit tag."""
    return hashlib.sha256(_KEY_ID_DOMAIN + key_bytes(secret)).hexdigest()[:12]


def key_bytes(secret: str) -> bytes:
    return secret.strip().encode("utf-8")


def load_keyring(settings: Settings, store: KeyStore) -> KeyRing:
    """The keys for these settings on this store; records the ones it uses (see above)."""
    retired = set(settings.retired_key_ids)
    recorded = {k.key_id for k in store.signing_keys()}

    def record(secret: str, origin: KeyOrigin, setting: str) -> SigningKey:
        _check_length(secret, setting)
        key = SigningKey(key_id(secret), secret.strip(), origin, utcnow())
        if key.key_id not in recorded:
            store.add_signing_key(key)
            recorded.add(key.key_id)
        return key

    legacy = _read_legacy_key_file(settings.var_dir / LEGACY_KEY_FILE)
    if legacy is not None:
        record(legacy, KeyOrigin.KEY_FILE, str(settings.var_dir / LEGACY_KEY_FILE))
    for fallback in settings.secret_key_fallbacks:
        record(fallback.get_secret_value(), KeyOrigin.FALLBACK, "MAILER_SECRET_KEY_FALLBACKS")
    configured = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if configured:
        signing = record(configured, KeyOrigin.CONFIGURED, "MAILER_SECRET_KEY")
        if signing.key_id in retired:
            raise ConfigError(
                f"MAILER_SECRET_KEY is key {signing.key_id}, which MAILER_RETIRED_KEY_IDS retires",
                setting="MAILER_SECRET_KEY",
                hint="Set a new MAILER_SECRET_KEY, or take the id out of the retired list.",
            )
    else:
        signing = _store_signing_key(store, retired) or record(
            secrets.token_urlsafe(32), KeyOrigin.GENERATED, "the generated key"
        )
    # Read back: a process that generated a key at the same moment is seen here too.
    everything = store.signing_keys()
    others = tuple(k for k in everything if k.key_id not in retired | {signing.key_id})
    return KeyRing(signing=signing, verifying=(signing, *others))


class StoreKeySigner(TokenSigner):
    """Signs with the ring's signing key; verifies with the ring, and when a link fails,
    with the keys recorded in the store since (read again at most every `interval`)."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        store: KeyStore,
        retired: Sequence[str] = (),
        interval: float = KEY_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        signing, *others = ring.secrets
        super().__init__(signing, fallbacks=others)
        self._verifier = TokenSigner(signing, fallbacks=others)
        self._signing = signing
        self._known = {k.key_id for k in ring.verifying}
        self._store = store
        self._retired = frozenset(retired)
        self._interval = interval
        self._clock = clock
        self._read_at = clock()

    def verify_link(self, token: str) -> LinkClaims:
        try:
            return self._verifier.verify_link(token)
        except TokenError:
            if not self._learn_new_keys():
                raise
        return self._verifier.verify_link(token)

    def verify_calendar(self, token: str) -> int:
        try:
            return self._verifier.verify_calendar(token)
        except TokenError:
            if not self._learn_new_keys():
                raise
        return self._verifier.verify_calendar(token)

    def verify_rsvp(self, token: str) -> RsvpClaims | TestMessageClaims:
        try:
            return self._verifier.verify_rsvp(token)
        except TokenError:
            if not self._learn_new_keys():
                raise
        return self._verifier.verify_rsvp(token)

    def verify_bounce(self, token: str) -> int:
        try:
            return self._verifier.verify_bounce(token)
        except TokenError:
            if not self._learn_new_keys():
                raise
        return self._verifier.verify_bounce(token)

    def _learn_new_keys(self) -> bool:
        """True if the store holds keys this signer did not know (now it does)."""
        now = self._clock()
        if now - self._read_at < self._interval:
            return False
        self._read_at = now
        keys = [k for k in self._store.signing_keys() if k.key_id not in self._retired]
        if {k.key_id for k in keys} <= self._known:
            return False
        self._known |= {k.key_id for k in keys}
        others = [key_bytes(k.secret) for k in keys if key_bytes(k.secret) != self._signing]
        self._verifier = TokenSigner(self._signing, fallbacks=others)
        return True


def describe(settings: Settings, recorded: Sequence[SigningKey] | None) -> list[str]:
    """Where the keys come from, for `mailer config show`; never a secret.

    `recorded` is None when the store could not be read (not created yet, unreachable).
    """
    retired = set(settings.retired_key_ids)
    configured = settings.secret_key.get_secret_value() if settings.secret_key else ""
    lines: list[str] = []
    if configured:
        lines.append(f"signs with MAILER_SECRET_KEY (key {_safe_id(configured)})")
    elif recorded is None:
        lines.append("signs with a key the store generates on first use")
    else:
        own = _newest_own(recorded, retired)
        lines.append(
            f"signs with the store's own key {own.key_id}"
            if own is not None
            else "signs with a key the store generates on first use"
        )
    if recorded is None:
        lines.append("keys recorded in the store: unknown (the store cannot be read yet)")
    else:
        shown = ", ".join(f"{k.key_id} ({k.origin.value})" for k in recorded) or "none yet"
        lines.append(f"keys recorded in the store, all verifying links: {shown}")
    lines.append(f"MAILER_SECRET_KEY_FALLBACKS: {len(settings.secret_key_fallbacks)} key(s)")
    if retired:
        lines.append(f"retired, no longer verifying: {', '.join(sorted(retired))}")
    return lines


# -- internals ------------------------------------------------------------------------------


def _store_signing_key(store: KeyStore, retired: set[str]) -> SigningKey | None:
    return _newest_own(store.signing_keys(), retired)


def _newest_own(keys: Sequence[SigningKey], retired: set[str]) -> SigningKey | None:
    """The newest key that mailer made itself (not a configured one), unless retired."""
    own = [
        k
        for k in keys
        if k.origin in (KeyOrigin.GENERATED, KeyOrigin.KEY_FILE) and k.key_id not in retired
    ]
    return max(own, key=lambda k: (k.created_at, k.key_id), default=None)


def _check_length(secret: str, source: str) -> None:
    if len(key_bytes(secret)) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{source}: the secret key must be at least {MIN_KEY_CHARS} characters",
            setting=source if source.startswith("MAILER_") else "MAILER_SECRET_KEY",
            hint="Use a long random value: `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`.",
        )


def _safe_id(secret: str) -> str:
    return key_id(secret) if len(key_bytes(secret)) >= MIN_KEY_CHARS else "too short"


def _read_legacy_key_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the secret key file {path}: {exc.strerror}",
            setting="MAILER_SECRET_KEY",
            hint="It holds the key of links sent by an older version; make it readable.",
        ) from exc
    return text or None
