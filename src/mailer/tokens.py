"""Unsubscribe tokens: short, opaque, unforgeable, and valid for as long as old mail exists.

A token is URL-safe base64 (no padding) of

    version (1 byte) | subscriber_id | list_id | campaign_id + 1   (unsigned LEB128 varints)
    | the first 16 bytes of HMAC-SHA256(key, DOMAIN | the bytes before)

Typical tokens are 30-32 characters. The email address is never in it, so the URL leaks
nothing when a mail scanner or a forwarded message exposes it. There is no expiry on
purpose: RFC 8058 one-click must keep working for mail read months later. A 128-bit tag
keeps forgery out of reach (2^-128 per guess) while keeping the URL short.

Test messages (`mailer send --test-to`) carry a token of their own kind:

    kind 2 (1 byte) | list_id (varint) | the first 16 bytes of HMAC-SHA256(key, TEST_DOMAIN | ...)

It names no subscriber, so clicking it (or a mail client's one-click POST) can unsubscribe
nobody; the page says it came from a test. Its own HMAC domain means no test token can
ever verify as a real one, whatever its bytes. It verifies under the same keys, so a test
sent before a key rotation still opens its page.

The "add to calendar" link (`/c/TOKEN.ics`) names only a campaign:

    kind 3 (1 byte) | campaign_id (varint)
    | the first 16 bytes of HMAC-SHA256(key, CALENDAR_DOMAIN | ...)

The same for every recipient of the campaign, so it says nothing about who clicked; its
own HMAC domain keeps it from ever verifying as an unsubscribe link, and the other way.

A guest's RSVP link (`/r/TOKEN`) names the campaign that invited them and who they are:

    kind 4 (1 byte) | subscriber_id | campaign_id   (varints)
    | the first 16 bytes of HMAC-SHA256(key, RSVP_DOMAIN | ...)

Its own HMAC domain: it can never unsubscribe anyone, and an unsubscribe link can never
answer an invitation. The RSVP page also accepts a test message's token (a test send's
RSVP links), which answers nothing.

A bounce address (VERP, `bounces+TOKEN@domain`) names one ledger row:

    kind 5 (1 byte) | delivery_id (varint)
    | the first 12 bytes of HMAC-SHA256(key, BOUNCE_DOMAIN | ...)

in lower-case base32 without padding (about 26 characters): a mail system may change the
case of a local part, and base32 survives that. 96 bits keep forgery out of reach for
what it could do (mark one row bounced); its own HMAC domain keeps it from ever verifying
as a link, and the other way.

Key rotation: tokens are signed with the current key and verified against it and then
every older key, each compare in constant time (hmac.compare_digest). Which keys those are
is load_signer's business (mailer/store/keyring.py): every key that ever signed links on the
store keeps verifying until it is deliberately retired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from mailer.errors import TokenError

VERSION = 1
TEST_MESSAGE_KIND = 2
CALENDAR_KIND = 3
RSVP_KIND = 4
TAG_BYTES = 16
# Domain separation: the same secret may one day sign other things (e.g. preference links);
# a tag made for one purpose must never verify for another.
_DOMAIN = b"mailer/unsubscribe\x00"
_TEST_MESSAGE_DOMAIN = b"mailer/test-message\x00"
_CALENDAR_DOMAIN = b"mailer/calendar\x00"
BOUNCE_KIND = 5
BOUNCE_TAG_BYTES = 12
_BOUNCE_DOMAIN = b"mailer/bounce\x00"
_MAX_BOUNCE_TOKEN_CHARS = 40  # 1 + 10 + 12 bytes -> 37 base32 characters
_RSVP_DOMAIN = b"mailer/rsvp\x00"
# Longest well-formed token: 1 + 3 varints of at most 10 bytes + tag -> 47 bytes -> 63 chars.
_MAX_TOKEN_CHARS = 64
_MAX_ID = 2**63 - 1  # BIGINT ids in the store


@dataclass(frozen=True)
class UnsubscribeClaims:
    """What a valid token says: who, from which list, and (for the report) which campaign."""

    subscriber_id: int
    list_id: int
    campaign_id: int | None


@dataclass(frozen=True)
class TestMessageClaims:
    """What the token of a test message says: only the list it was a sample of. It names
    no subscriber, so nothing can be done with it but show the "this was a test" page."""

    __test__ = False  # not a pytest test class, whatever its name

    list_id: int


LinkClaims = UnsubscribeClaims | TestMessageClaims


@dataclass(frozen=True)
class RsvpClaims:
    """What a valid RSVP token says: who was invited, by which campaign."""

    subscriber_id: int
    campaign_id: int


class TokenSigner:
    """Signs with `key`; verifies with `key` and then each of `fallbacks` (old keys)."""

    def __init__(self, key: bytes, *, fallbacks: Sequence[bytes] = ()) -> None:
        if not key:
            raise ValueError("the signing key must not be empty")
        self._keys = (key, *(k for k in fallbacks if k))
        # HMAC(key, DOMAIN | payload) per domain, fed the key and the domain once: a copy
        # and one update per token instead of the key schedule each time (~1.5 µs of a
        # ~3.5 µs tag; two or three tags a message). Only ever copied, never updated.
        # Keyed by key and domain, so a subclass that changes `_keys` never signs with an
        # old key's state.
        self._tag_states: dict[tuple[bytes, bytes], hmac.HMAC] = {}

    def sign(self, *, subscriber_id: int, list_id: int, campaign_id: int | None = None) -> str:
        for name, value in (("subscriber_id", subscriber_id), ("list_id", list_id)):
            if not 0 <= value <= _MAX_ID:
                raise ValueError(f"{name} out of range: {value}")
        if campaign_id is not None and not 0 <= campaign_id < _MAX_ID:
            raise ValueError(f"campaign_id out of range: {campaign_id}")
        payload = bytes([VERSION]) + b"".join(
            _varint(n)
            for n in (subscriber_id, list_id, 0 if campaign_id is None else campaign_id + 1)
        )
        raw = payload + self._tag(payload, _DOMAIN)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def sign_test_message(self, *, list_id: int) -> str:
        """The token for a test message's links: it unsubscribes nobody."""
        if not 0 <= list_id <= _MAX_ID:
            raise ValueError(f"list_id out of range: {list_id}")
        payload = bytes([TEST_MESSAGE_KIND]) + _varint(list_id)
        raw = payload + self._tag(payload, _TEST_MESSAGE_DOMAIN)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def sign_calendar(self, *, campaign_id: int) -> str:
        """The token of a campaign's .ics link (`calendar_url`)."""
        if not 0 <= campaign_id <= _MAX_ID:
            raise ValueError(f"campaign_id out of range: {campaign_id}")
        payload = bytes([CALENDAR_KIND]) + _varint(campaign_id)
        raw = payload + self._tag(payload, _CALENDAR_DOMAIN)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def sign_rsvp(self, *, subscriber_id: int, campaign_id: int) -> str:
        """The token of a guest's RSVP link (`rsvp_url`), per (campaign, subscriber)."""
        for name, value in (("subscriber_id", subscriber_id), ("campaign_id", campaign_id)):
            if not 0 <= value <= _MAX_ID:
                raise ValueError(f"{name} out of range: {value}")
        payload = bytes([RSVP_KIND]) + _varint(subscriber_id) + _varint(campaign_id)
        raw = payload + self._tag(payload, _RSVP_DOMAIN)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _tag(self, payload: bytes, domain: bytes) -> bytes:
        """`_tag(current key, payload, domain=domain)`, from the per-domain state."""
        key = self._keys[0]
        state = self._tag_states.get((key, domain))
        if state is None:
            state = self._tag_states[key, domain] = hmac.new(key, domain, hashlib.sha256)
        mac = state.copy()
        mac.update(payload)
        return mac.digest()[:TAG_BYTES]

    def verify_rsvp(self, token: str) -> RsvpClaims | TestMessageClaims:
        """A guest's RSVP token, or a test message's (whose RSVP page answers nothing);
        TokenError otherwise, whichever check failed."""
        raw = _decode(token)
        if len(raw) >= 1 + 1 + TAG_BYTES and raw[0] == TEST_MESSAGE_KIND:
            claims = self.verify_link(token)
            if isinstance(claims, TestMessageClaims):
                return claims
        if len(raw) < 1 + 2 + TAG_BYTES or raw[0] != RSVP_KIND:
            raise TokenError("this link is not valid")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        matched = False
        for key in self._keys:  # every key, as in verify_link
            matched |= hmac.compare_digest(_tag(key, payload, domain=_RSVP_DOMAIN), tag)
        numbers = _read_varints(payload, 1)
        if not matched or numbers is None or len(numbers) != 2:
            raise TokenError("this link is not valid")
        return RsvpClaims(subscriber_id=numbers[0], campaign_id=numbers[1])

    def verify_calendar(self, token: str) -> int:
        """The campaign id a calendar token we signed names; TokenError otherwise."""
        raw = _decode(token)
        if len(raw) < 1 + 1 + TAG_BYTES or raw[0] != CALENDAR_KIND:
            raise TokenError("this link is not valid")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        matched = False
        for key in self._keys:  # every key, as in verify_link
            matched |= hmac.compare_digest(_tag(key, payload, domain=_CALENDAR_DOMAIN), tag)
        numbers = _read_varints(payload, 1)
        if not matched or numbers is None or len(numbers) != 1:
            raise TokenError("this link is not valid")
        return numbers[0]

    def sign_bounce(self, *, delivery_id: int) -> str:
        """The token of a message's envelope sender (`verp_address`): its ledger row."""
        if not 0 <= delivery_id <= _MAX_ID:
            raise ValueError(f"delivery_id out of range: {delivery_id}")
        payload = bytes([BOUNCE_KIND]) + _varint(delivery_id)
        tag = self._tag(payload, _BOUNCE_DOMAIN)[:BOUNCE_TAG_BYTES]
        return base64.b32encode(payload + tag).decode("ascii").rstrip("=").lower()

    def verify_bounce(self, token: str) -> int:
        """The delivery id a bounce token we signed names (any case); TokenError otherwise."""
        if not 0 < len(token) <= _MAX_BOUNCE_TOKEN_CHARS or not token.isascii():
            raise TokenError("not a bounce token of ours")
        spelled = token.upper()
        try:
            raw = base64.b32decode(spelled + "=" * (-len(spelled) % 8))
        except (binascii.Error, ValueError) as exc:
            raise TokenError("not a bounce token of ours") from exc
        if len(raw) < 2 + BOUNCE_TAG_BYTES or raw[0] != BOUNCE_KIND:
            raise TokenError("not a bounce token of ours")
        payload, tag = raw[:-BOUNCE_TAG_BYTES], raw[-BOUNCE_TAG_BYTES:]
        matched = False
        for key in self._keys:  # every key, as in verify_link
            expected = _tag(key, payload, domain=_BOUNCE_DOMAIN)[:BOUNCE_TAG_BYTES]
            matched |= hmac.compare_digest(expected, tag)
        numbers = _read_varints(payload, 1)
        if not matched or numbers is None or len(numbers) != 1:
            raise TokenError("not a bounce token of ours")
        return numbers[0]

    def verify(self, token: str) -> UnsubscribeClaims:
        """The claims of a subscriber's token we signed (with any key we hold); TokenError
        otherwise, including for a test message's token.

        The error never says which check failed: a caller probing tokens learns nothing.
        """
        claims = self.verify_link(token)
        if not isinstance(claims, UnsubscribeClaims):
            raise TokenError("this link is not valid")
        return claims

    def verify_link(self, token: str) -> LinkClaims:
        """Either kind of token we signed: a subscriber's, or a test message's."""
        raw = _decode(token)
        if len(raw) < 1 + 1 + TAG_BYTES or raw[0] not in (VERSION, TEST_MESSAGE_KIND):
            raise TokenError("this link is not valid")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        domain = _DOMAIN if payload[0] == VERSION else _TEST_MESSAGE_DOMAIN
        # Check every key even after a match, so timing does not reveal which key signed.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(_tag(key, payload, domain=domain), tag)
        if not matched:
            raise TokenError("this link is not valid")
        numbers = _read_varints(payload, 1)
        # Only reachable with a key-holder's mistake, but never trust the layout blindly.
        if payload[0] == TEST_MESSAGE_KIND:
            if numbers is None or len(numbers) != 1:
                raise TokenError("this link is not valid")
            return TestMessageClaims(list_id=numbers[0])
        if numbers is None or len(numbers) != 3:
            raise TokenError("this link is not valid")
        subscriber_id, list_id, campaign = numbers
        return UnsubscribeClaims(
            subscriber_id=subscriber_id,
            list_id=list_id,
            campaign_id=None if campaign == 0 else campaign - 1,
        )


def unsubscribe_url(base_url: str, token: str) -> str:
    """The link for List-Unsubscribe and the message footers."""
    return f"{base_url}/u/{token}"


def rsvp_url(base_url: str, token: str) -> str:
    """A guest's answer page: GET shows it, only its form's POST records an answer."""
    return f"{base_url}/r/{token}"


def verp_address(bounce_address: str, token: str) -> str:
    """`bounces@lists.example.org` + TOKEN -> `bounces+TOKEN@lists.example.org` (VERP): a
    relay with `recipient_delimiter = +` delivers it to the bounce mailbox, and the DSN
    it comes back with names the ledger row whatever the report says."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def calendar_url(base_url: str, token: str) -> str:
    """The campaign's .ics as `mailer serve` has it: the short "add to calendar" link."""
    return f"{base_url}/c/{token}.ics"


# -- internals ------------------------------------------------------------------------------

_ONE_BYTE = tuple(bytes([n]) for n in range(0x80))


def _tag(key: bytes, payload: bytes, *, domain: bytes = _DOMAIN) -> bytes:
    return hmac.new(key, domain + payload, hashlib.sha256).digest()[:TAG_BYTES]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:  # one byte: most ids of a small list, every list and campaign id
        return _ONE_BYTE[value]
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varints(data: bytes, start: int) -> list[int] | None:
    """Decode canonical varints from data[start:]; None if malformed or non-canonical."""
    numbers: list[int] = []
    value = shift = 0
    for index in range(start, len(data)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            if shift >= 63:
                return None
            continue
        if byte == 0 and shift > 7:  # a trailing zero group: same number, other bytes
            return None
        numbers.append(value)
        value = shift = 0
    return numbers if shift == 0 else None


def _decode(token: str) -> bytes:
    if not 0 < len(token) <= _MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("this link is not valid")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("this link is not valid") from exc
    # One token, one spelling: reject stray characters and unused trailing bits, which
    # b64decode would otherwise silently drop or ignore.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise TokenError("this link is not valid")
    return raw
