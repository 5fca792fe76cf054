"""Hostile returned mail, from raw bytes through classify and the feedback use case to a
real store holding a sent campaign (issue 12): a forged VERP token, reports naming
addresses we never mailed, forged tokens in abuse reports and mailed unsubscribes, a 50 MB
message, malformed MIME trees. Each is ignored with a log line, nothing changes but the
record that the message was seen and left for a person, and nothing raises.

(An SNS message whose certificate URL is off the SNS hosts: tests/test_webhooks.py.)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from mailer.campaigns.feedback import apply_feedback, message_key, policy_from
from mailer.config import Settings
from mailer.feedback.classify import MAX_MESSAGE_BYTES, OwnAddresses, classify
from mailer.models import Disposition, FeedbackKind, OutgoingMessage
from mailer.store import Store
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner
from test_bounce_samples import POSTFIX_DSN, UNSUBSCRIBE_MAIL
from test_webhooks import bounce_settings, sent_campaign
from web_support import store_snapshot

OWN = OwnAddresses(
    bounce="bounces@mailer.example.org", unsubscribe="unsubscribe@mailer.example.org"
)


def without_intake(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but the intake log (feedback_messages: one row per message seen)."""
    snapshot = store_snapshot(store)
    del snapshot["feedback_messages"]
    return snapshot


def take_in(store: Store, settings: Settings, raw: bytes, **classify_options: Any) -> Disposition:
    """What `mailer bounces fetch` does with one message: classify, apply, once."""
    feedback = classify(raw, own=OWN, source="maildir", **classify_options)
    applied = apply_feedback(
        store,
        feedback,
        signer=load_signer(settings),
        policy=policy_from(settings),
        now=store_now(),
        key=message_key(raw),
    )
    return applied.disposition


def store_now() -> Any:
    from mailer.clock import utcnow

    return utcnow()


@pytest.fixture
async def sent(store: Store, tmp_path: Path) -> tuple[Settings, list[OutgoingMessage]]:
    """A sent campaign on SQLite and PostgreSQL: for reports the store looks up."""
    settings = bounce_settings(tmp_path)
    return settings, await sent_campaign(store, settings, tmp_path)


@pytest.fixture
async def sqlite_sent(
    sqlite_store: Store, tmp_path: Path
) -> tuple[Store, Settings, list[OutgoingMessage]]:
    """The same on SQLite only: for messages refused before any lookup (kept fast)."""
    settings = bounce_settings(tmp_path)
    return sqlite_store, settings, await sent_campaign(sqlite_store, settings, tmp_path)


def assert_ignored(
    store: Store,
    settings: Settings,
    raw: bytes,
    caplog: pytest.LogCaptureFixture,
    *,
    says: str,
    **classify_options: Any,
) -> None:
    """`raw` taken in changes nothing but the intake log; the log says one of `says`
    (alternatives separated by |), and names no address."""
    before = without_intake(store)
    seen = len(store_snapshot(store)["feedback_messages"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailer.feedback"):
        disposition = take_in(store, settings, raw, **classify_options)
    assert disposition is Disposition.LEFT_ALONE
    assert without_intake(store) == before
    assert len(store_snapshot(store)["feedback_messages"]) == seen + 1
    assert any(one in caplog.text for one in says.split("|")), caplog.text
    # Neither a token nor an address of the report reaches the log.
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", caplog.text), caplog.text


async def test_a_forged_verp_token_changes_nothing_even_naming_a_real_recipient(
    store: Store, sent: tuple[Settings, list[OutgoingMessage]], caplog: pytest.LogCaptureFixture
) -> None:
    """A DSN to `bounces+FORGED@`, naming a recipient we did mail and its Message-ID: the
    token decides, and a token we did not sign ties it to nothing."""
    settings, messages = sent
    target = messages[0]
    for forged in (
        TokenSigner(b"someone-elses-key-0123456789").sign_bounce(delivery_id=1),
        "aaaaaaaaaaaaaaaaaaaaaaaaaa",
        load_signer(settings).sign_bounce(delivery_id=10_000),  # ours, naming no row
    ):
        raw = POSTFIX_DSN.format(token=forged).encode()
        raw = raw.replace(b"nobody@dead.example.org", target.recipient.encode())
        raw = raw.replace(b"Nobody@Dead.Example.org", target.recipient.encode())
        raw = raw.replace(b"<20261201090714.77aa@lists.example.org>", target.message_id.encode())
        raw = raw.replace(b"lists.example.org", b"mailer.example.org")
        assert classify(raw, own=OWN, source="t").verp_token == forged
        assert_ignored(store, settings, raw, caplog, says="event=feedback-ignored kind=hard_bounce")
        assert forged not in caplog.text


async def test_reports_about_addresses_never_mailed_change_nothing(
    store: Store, sent: tuple[Settings, list[OutgoingMessage]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, _ = sent
    stranger = POSTFIX_DSN.replace(
        "bounces+{token}@lists.example.org", "bounces@mailer.example.org"
    )
    assert_ignored(
        store,
        settings,
        stranger.encode(),
        caplog,
        says="reason='its Message-ID is not ours for the recipient it names'",
    )
    arf = (Path(__file__).parent / "data/bounces/arf/rfc5965_b2_full.eml").read_bytes()
    assert_ignored(store, settings, arf, caplog, says="event=feedback-ignored kind=complaint")


async def test_reports_naming_a_real_recipient_without_our_message_id_change_nothing(
    store: Store, sent: tuple[Settings, list[OutgoingMessage]], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can mail the bounce mailbox. A DSN or an abuse report that names an address
    we did mail, but carries neither a VERP token nor a Message-ID of ours nor a signed
    link, could come from anybody who knows the address: it suppresses nobody."""
    settings, messages = sent
    target = messages[0]
    plain = POSTFIX_DSN.replace("bounces+{token}@lists.example.org", "bounces@mailer.example.org")
    plain = plain.replace("Nobody@Dead.Example.org", target.recipient)
    foreign_id = plain.replace("nobody@dead.example.org", target.recipient)
    assert_ignored(
        store, settings, foreign_id.encode(), caplog, says="event=feedback-ignored kind=hard_bounce"
    )
    headers_start = foreign_id.index(
        "--3F2A61C0A1.1764581234/relay.lists.example.org\n"
        "Content-Description: Undelivered Message Headers"
    )
    no_id = foreign_id[:headers_start] + "--3F2A61C0A1.1764581234/relay.lists.example.org--\n"
    assert classify(no_id.encode(), own=OWN, source="t").message_id is None
    assert_ignored(
        store, settings, no_id.encode(), caplog, says="event=feedback-ignored kind=hard_bounce"
    )
    arf = (Path(__file__).parent / "data/bounces/arf/rfc5965_b2_full.eml").read_bytes()
    arf = arf.replace(b"user@example.com", target.recipient.encode())
    assert target.recipient in classify(arf, own=OWN, source="t").recipients
    assert_ignored(store, settings, arf, caplog, says="event=feedback-ignored kind=complaint")


async def test_a_plain_dsn_quoting_our_message_id_still_acts(
    store: Store, sent: tuple[Settings, list[OutgoingMessage]]
) -> None:
    """Without VERP (or to the bare bounce address) a DSN is tied by the Message-ID it
    quotes together with the recipient it names, as the issue asks."""
    settings, messages = sent
    target = messages[1]
    raw = POSTFIX_DSN.replace("bounces+{token}@lists.example.org", "bounces@mailer.example.org")
    raw = raw.replace("Nobody@Dead.Example.org", target.recipient)
    raw = raw.replace("nobody@dead.example.org", target.recipient)
    raw = raw.replace("<20261201090714.77aa@lists.example.org>", target.message_id)
    assert take_in(store, settings, raw.encode()) is Disposition.PROCESSED
    [event] = store.feedback_events()
    assert (event.email, event.kind) == (target.recipient, FeedbackKind.HARD_BOUNCE)


async def test_forged_tokens_in_abuse_reports_and_mailed_unsubscribes_change_nothing(
    store: Store, sent: tuple[Settings, list[OutgoingMessage]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, messages = sent
    forged = TokenSigner(b"someone-elses-key-0123456789").sign(subscriber_id=1, list_id=1)
    fbl = (Path(__file__).parent / "data/bounces/arf/fbl_redacted_headers_only.eml").read_bytes()
    fbl = fbl.replace(b"AQEBAgMEBQYHCAkKCwwNDg8Q", forged.encode())
    fbl = fbl.replace(b"bounces+AAECAwQFBgcICQoLDA0ODxA@lists.example.org", b"events@x.example")
    assert classify(fbl, own=OWN, source="t").unsubscribe_token == forged
    assert_ignored(store, settings, fbl, caplog, says="event=feedback-ignored kind=complaint")
    mail = UNSUBSCRIBE_MAIL.format(
        to="unsubscribe@mailer.example.org", subject=f"unsubscribe {forged}"
    ).replace("ana@example.org", messages[0].recipient)
    assert_ignored(
        store,
        settings,
        mail.encode(),
        caplog,
        says="reason='an unsubscribe token we did not sign'",
    )
    assert forged not in caplog.text


async def test_a_50_mb_message_is_not_parsed_and_changes_nothing(
    sqlite_sent: tuple[Store, Settings, list[OutgoingMessage]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Written to a file here (never committed): a DSN that would act if it were read,
    padded to 50 MB. Whole, or as the start a reader passes with the true size."""
    store, settings, messages = sqlite_sent
    target = messages[0]
    dsn = POSTFIX_DSN.format(token="x").replace("bounces+x@lists.example.org", "bounces@x.example")
    dsn = dsn.replace("Nobody@Dead.Example.org", target.recipient)
    path = tmp_path / "huge.eml"
    with path.open("wb") as handle:
        handle.write(
            dsn.encode().replace(b"--3F2A61C0A1.1764581234/relay.lists.example.org--", b"")
        )
        chunk = b"x" * 1023 + b"\n"
        for _ in range(50 * 1024):
            handle.write(chunk)
    raw = path.read_bytes()
    assert len(raw) > 50 * 1024 * 1024 > MAX_MESSAGE_BYTES
    assert_ignored(store, settings, raw, caplog, says="event=feedback-too-large")
    start = raw[: 4 * 1024 * 1024]
    assert_ignored(store, settings, start, caplog, says="event=feedback-too-large", size=len(raw))


def nested(depth: int) -> bytes:
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    return (
        b"From: MAILER-DAEMON@x.example\nSubject: deep\n"
        + opening
        + b"Content-Type: text/plain\n\nhi\n"
    )


MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("no header end", b"From: MAILER-DAEMON@x.example\nSubject: x"),
    ("NULs and 8-bit junk", b"\x00\xff\xfe" * 1000),
    (
        "multipart without a boundary",
        b"Content-Type: multipart/report; report-type=delivery-status\n\n--x\n\nbody\n",
    ),
    (
        "boundary never closed",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        b"Final-Recipient: rfc822; \nAction: failed\n",
    ),
    (
        "delivery-status of garbage",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\n\x00\x01 no colons here\n\n:::\n"
        b"--B--\n",
    ),
    (
        "base64 delivery-status that is not base64",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        b"!!!!not base64!!!!\n--B--\n",
    ),
    (
        "broken encoded words and charsets",
        b"From: =?x-unknown?q?=FF=FE?= <MAILER-DAEMON@x.example>\n"
        b"Subject: =?utf-8?b?////?= =?utf-8?q?=ZZ?=\n"
        b"Content-Type: text/plain; charset=no-such-charset\n\n\xff\xfe",
    ),
    (
        "a 10 KB address in Final-Recipient",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        b"Final-Recipient: rfc822; " + b"a" * 10_000 + b"@example.org\nAction: failed\n"
        b"Status: 5.1.1\n\n--B--\n",
    ),
    ("nested 5,000 deep", nested(5_000)),
    ("nested 1,000 deep", nested(1_000)),
    ("nested 99 deep (parsed)", nested(99)),
    (
        "300 parts (parsed, too many for the heuristics)",
        b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b\n\n"
        + b"--b\n\nx\n" * 300
        + b"--b--\n",
    ),
    (
        "50,000 tiny parts",
        b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b\n\n"
        + b"--b\n\nx\n" * 50_000
        + b"--b--\n",
    ),
]


async def test_malformed_mime_trees_are_left_for_a_person_without_a_crash(
    sqlite_sent: tuple[Store, Settings, list[OutgoingMessage]], caplog: pytest.LogCaptureFixture
) -> None:
    store, settings, _ = sqlite_sent
    for name, raw in MALFORMED:
        feedback = classify(raw, own=OWN, source="t")
        assert feedback.kind in (FeedbackKind.OTHER, FeedbackKind.HARD_BOUNCE), name
        says = (
            "event=feedback-left-alone|event=feedback-unreadable|event=feedback-too-many-parts"
            if feedback.kind is FeedbackKind.OTHER
            else "event=feedback-ignored kind=hard_bounce"
        )
        assert_ignored(store, settings, raw, caplog, says=says)
