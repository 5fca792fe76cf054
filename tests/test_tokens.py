"""Unsubscribe tokens: round trip, forgery and tampering refused, key rotation, key loading."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from mailer.config import Settings
from mailer.errors import ConfigError, TokenError
from mailer.store.signer import load_signer
from mailer.tokens import (
    TestMessageClaims,
    TokenSigner,
    UnsubscribeClaims,
    unsubscribe_url,
)

KEY = b"k" * 32
OLD_KEY = b"o" * 32
ids = st.integers(min_value=0, max_value=2**63 - 1)


@given(subscriber_id=ids, list_id=ids, campaign_id=st.none() | st.integers(0, 2**63 - 2))
def test_round_trip_for_any_ids(subscriber_id: int, list_id: int, campaign_id: int | None) -> None:
    """verify(sign(claims)) gives the claims back, and the token is URL-safe and unpadded."""
    signer = TokenSigner(KEY)
    token = signer.sign(subscriber_id=subscriber_id, list_id=list_id, campaign_id=campaign_id)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert signer.verify(token) == UnsubscribeClaims(subscriber_id, list_id, campaign_id)


def test_typical_token_is_short() -> None:
    """A realistic token (a million subscribers, some campaigns) is at most 32 characters."""
    token = TokenSigner(KEY).sign(subscriber_id=1_234_567, list_id=12, campaign_id=3_456)
    assert len(token) <= 32


def test_campaign_none_and_zero_are_different_claims() -> None:
    signer = TokenSigner(KEY)
    none = signer.sign(subscriber_id=1, list_id=1)
    zero = signer.sign(subscriber_id=1, list_id=1, campaign_id=0)
    assert none != zero
    assert signer.verify(none).campaign_id is None
    assert signer.verify(zero).campaign_id == 0


@given(data=st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    """Changing any one character of a token makes it invalid."""
    token = TokenSigner(KEY).sign(subscriber_id=42, list_id=7, campaign_id=9)
    index = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(tampered)


def test_truncated_extended_and_garbage_tokens_are_refused() -> None:
    token = TokenSigner(KEY).sign(subscriber_id=42, list_id=7)
    for bad in (token[:-1], token[:-4], token[:10], token + "A", token + "==", "", "x" * 500):
        with pytest.raises(TokenError):
            TokenSigner(KEY).verify(bad)
    for bad in ("not a token!", "é" * 20, token.replace(token[3], "/", 1)):
        with pytest.raises(TokenError):
            TokenSigner(KEY).verify(bad)


def test_same_bytes_with_other_trailing_bits_are_refused() -> None:
    """Base64 decoders ignore unused trailing bits; we accept only the one canonical spelling."""
    token = TokenSigner(KEY).sign(subscriber_id=42, list_id=7, campaign_id=1)
    assert len(token) % 4 != 0  # there are spare bits to flip
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    variants = [token[:-1] + alphabet[last ^ bit] for bit in (1, 2, 4, 8)]
    same_bytes = [
        v
        for v in variants
        if base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        == base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    ]
    assert same_bytes, "the test needs a variant decoding to the same bytes"
    for variant in same_bytes:
        with pytest.raises(TokenError):
            TokenSigner(KEY).verify(variant)


def test_token_from_another_key_is_refused() -> None:
    token = TokenSigner(OLD_KEY).sign(subscriber_id=42, list_id=7)
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(token)


def test_rotated_key_still_verifies_old_tokens_and_signs_with_the_new_one() -> None:
    """After rotation, mail already sent keeps working; new mail uses the new key only."""
    old_token = TokenSigner(OLD_KEY).sign(subscriber_id=42, list_id=7, campaign_id=3)
    rotated = TokenSigner(KEY, fallbacks=[OLD_KEY])
    assert rotated.verify(old_token) == UnsubscribeClaims(42, 7, 3)
    new_token = rotated.sign(subscriber_id=42, list_id=7, campaign_id=3)
    assert TokenSigner(KEY).verify(new_token) == UnsubscribeClaims(42, 7, 3)
    with pytest.raises(TokenError):
        TokenSigner(OLD_KEY).verify(new_token)


def test_token_holds_no_address_and_error_says_nothing_specific() -> None:
    signer = TokenSigner(KEY)
    token = signer.sign(subscriber_id=42, list_id=7)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"@" not in raw
    messages = set()
    for bad in (token[:-1], TokenSigner(OLD_KEY).sign(subscriber_id=42, list_id=7), "AAAA"):
        with pytest.raises(TokenError) as caught:
            signer.verify(bad)
        messages.add(str(caught.value))
    assert messages == {"this link is not valid"}


# -- test messages' tokens ------------------------------------------------------------------


@given(list_id=ids)
def test_test_message_token_round_trip(list_id: int) -> None:
    """A test message's token verifies as a link naming only the list, under the same keys."""
    signer = TokenSigner(KEY, fallbacks=[OLD_KEY])
    token = signer.sign_test_message(list_id=list_id)
    assert signer.verify_link(token) == TestMessageClaims(list_id)


def test_test_message_token_never_passes_as_a_subscriber_token() -> None:
    """verify() (a subscriber's token) refuses it; verify_link() tells the two kinds apart."""
    signer = TokenSigner(KEY)
    token = signer.sign_test_message(list_id=7)
    with pytest.raises(TokenError):
        signer.verify(token)
    real = signer.sign(subscriber_id=42, list_id=7)
    assert signer.verify_link(real) == UnsubscribeClaims(42, 7, None)


def test_test_message_token_verifies_after_a_key_rotation_and_not_under_another_key() -> None:
    old = TokenSigner(OLD_KEY).sign_test_message(list_id=3)
    assert TokenSigner(KEY, fallbacks=[OLD_KEY]).verify_link(old) == TestMessageClaims(3)
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify_link(old)


def test_kind_byte_cannot_be_switched() -> None:
    """Each kind is tagged under its own HMAC domain: rewriting the kind byte of a test
    token into a subscriber token (or back) breaks the tag, whatever the bytes say."""
    signer = TokenSigner(KEY)

    def raw(token: str) -> bytes:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))

    def spelled(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    test_token = raw(signer.sign_test_message(list_id=7))
    real_token = raw(signer.sign(subscriber_id=1, list_id=7))
    # The same payload layout as a subscriber token (three varints), test tag kept.
    forged = bytes([1]) + bytes([1, 7, 0]) + test_token[-16:]
    for bad in (bytes([1]) + test_token[1:], bytes([2]) + real_token[1:], forged):
        with pytest.raises(TokenError):
            signer.verify_link(spelled(bad))


def test_test_message_token_is_short_and_names_nobody() -> None:
    token = TokenSigner(KEY).sign_test_message(list_id=12)
    assert len(token) <= 32
    with pytest.raises(ValueError, match="list_id"):
        TokenSigner(KEY).sign_test_message(list_id=-1)


def test_unsubscribe_url() -> None:
    assert unsubscribe_url("https://lists.example.org", "abc") == "https://lists.example.org/u/abc"


# -- load_signer ----------------------------------------------------------------------------


def settings_for(
    tmp_path: Path,
    *,
    secret_key: SecretStr | None = None,
    secret_key_fallbacks: Sequence[SecretStr] = (),
) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'mailer.db'}",
        var_dir=tmp_path / "var",
        secret_key=secret_key,
        secret_key_fallbacks=list(secret_key_fallbacks),
    )


# Keys kept in the store (none configured, rotation, retiring): tests/test_signing_keys.py.


def test_configured_key_and_fallbacks_are_used(tmp_path: Path) -> None:
    old = TokenSigner(b"the-old-key-0123456789").sign(subscriber_id=1, list_id=2)
    settings = settings_for(
        tmp_path,
        secret_key=SecretStr("the-new-key-0123456789"),
        secret_key_fallbacks=[SecretStr("the-old-key-0123456789")],
    )
    signer = load_signer(settings)
    assert signer.verify(old) == UnsubscribeClaims(1, 2, None)
    new = signer.sign(subscriber_id=1, list_id=2)
    assert TokenSigner(b"the-new-key-0123456789").verify(new) == UnsubscribeClaims(1, 2, None)


def test_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_for(tmp_path, secret_key=SecretStr("short")))
    assert caught.value.setting == "MAILER_SECRET_KEY"
