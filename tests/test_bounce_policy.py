"""The bounce policy and the feedback use case on a real store (SQLite and PostgreSQL):
VERP envelope senders, hard and soft bounces, complaints, mailed unsubscribes, reports
that are not ours, a Maildir read twice, and the worker's polling.

Ledger rows come from a real send to the aiosmtpd test server, so every token, Message-ID
and envelope sender is the one the engine produced.
"""

from __future__ import annotations

import asyncio
import mailbox
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from campaign_support import make_settings, new_campaign, seed_list, send
from mailer.campaigns.feedback import (
    Applied,
    apply_feedback,
    fetch_bounces,
    message_key,
    poll_bounces,
)
from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.feedback.classify import OwnAddresses
from mailer.feedback.mailbox import (
    Folders,
    MailboxProtocol,
    MaildirReader,
    parse_mailbox,
)
from mailer.feedback.policy import BouncePolicy
from mailer.models import (
    Disposition,
    Feedback,
    FeedbackAction,
    FeedbackKind,
    LaterOutcome,
    SubscriberStatus,
    SuppressionReason,
    UnsubscribeSource,
)
from mailer.store import Store
from mailer.store.schema import deliveries
from mailer.store.signer import load_signer
from mailer.tokens import TokenSigner
from smtp_server import SmtpTestServer

BOUNCES = "bounces@lists.example.org"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = BouncePolicy(soft_bounce_limit=3, soft_bounce_days=30)


@dataclass
class Sent:
    settings: Settings
    signer: TokenSigner
    addresses: list[str]
    campaign_id: int
    verp: dict[str, str]
    """address -> the token of its envelope sender."""
    message_ids: dict[str, str]


@pytest.fixture
async def sent(store: Store, smtp_server: SmtpTestServer, tmp_path: Path) -> Sent:
    addresses = seed_list(store, tmp_path, 4)
    settings = make_settings(tmp_path, smtp_server.port, bounce_address=BOUNCES)
    campaign_id = new_campaign(store)
    await send(settings, store, campaign_id)
    verp, message_ids = {}, {}
    for message in smtp_server.messages:
        [rcpt] = message.rcpt_tos
        local, _, domain = message.mail_from.partition("@")
        assert domain == "lists.example.org"
        verp[rcpt] = local.removeprefix("bounces+")
        message_ids[rcpt] = message.data.split(b"Message-ID: ", 1)[1].split(b"\r\n")[0].decode()
    return Sent(settings, load_signer(settings), addresses, campaign_id, verp, message_ids)


def bounce(kind: FeedbackKind = FeedbackKind.HARD_BOUNCE, **fields: object) -> Feedback:
    values: dict[str, object] = {
        "recipients": (),
        "verp_token": None,
        "message_id": None,
        "status": "5.1.1" if kind is FeedbackKind.HARD_BOUNCE else "4.2.2",
        "diagnostic": "smtp; 550 no such user",
        "unsubscribe_token": None,
        "source": "test",
    }
    values.update(fields)
    return Feedback(kind=kind, **values)  # type: ignore[arg-type]


def apply(
    store: Store, sent: Sent, feedback: Feedback, *, now: datetime = NOW, key: str | None = None
) -> Applied:
    return apply_feedback(store, feedback, signer=sent.signer, policy=POLICY, now=now, key=key)


def later_of(store: Store, campaign_id: int, address: str) -> LaterOutcome | None:
    return {row.email: row.later for row in store.iter_report(campaign_id)}[address]


async def test_each_envelope_sender_is_a_verp_address_naming_its_row(
    store: Store, sent: Sent
) -> None:
    """MAIL FROM is bounces+TOKEN@domain; the token verifies (in any case, as some
    servers change it) to that recipient's ledger row and to no other."""
    assert len(set(sent.verp.values())) == len(sent.addresses)
    for address, token in sent.verp.items():
        for spelling in (token, token.upper()):
            target = store.delivery_target(sent.signer.verify_bounce(spelling))
            assert target is not None
            assert target.email == address
    assert sent.verp[sent.addresses[0]].isalnum()


async def test_a_hard_bounce_suppresses_once_however_often_it_is_reported(
    store: Store, sent: Sent
) -> None:
    gone = sent.addresses[0]
    report = bounce(verp_token=sent.verp[gone], recipients=("someone-else@example.net",))
    first = apply(store, sent, report, key="k1")
    assert (first.disposition, first.actions) == (
        Disposition.PROCESSED,
        (FeedbackAction.SUPPRESSED,),
    )
    again = apply(store, sent, report, key="k1")
    assert again.duplicate
    assert again.actions == ()
    other_copy = apply(store, sent, report, key="k2")
    assert other_copy.actions == (FeedbackAction.ALREADY,)
    record = store.subscriber_record(gone)
    assert record.subscriber is not None
    assert record.subscriber.status is SubscriberStatus.BOUNCED
    assert [(h.reason, h.source) for h in record.history] == [
        (SuppressionReason.BOUNCED, UnsubscribeSource.BOUNCE)
    ]
    assert later_of(store, sent.campaign_id, gone) is LaterOutcome.BOUNCED
    assert store.feedback_counts(sent.campaign_id).bounced == 1
    # The VERP row wins over what the report claims: nobody else was touched.
    assert [e.email for e in store.feedback_events()] == [gone, gone]


async def test_soft_bounces_suppress_only_at_the_limit_within_the_window(
    store: Store, sent: Sent, smtp_server: SmtpTestServer
) -> None:
    """Counted per message: three of our messages to the address soft-bounced within the
    window suppress it; an older one does not count."""
    address = sent.addresses[1]
    # Three more campaigns to the same list: four messages to the address in all.
    for _ in range(3):
        await send(sent.settings, store, new_campaign(store))
    tokens = [sent.signer.sign_bounce(delivery_id=d) for d in deliveries_to(store, address)]
    assert len(tokens) == 4
    days = [40, 10, 0]  # the first is outside the 30 days by the fourth report
    actions = [
        apply(store, sent, soft_bounce(token), now=NOW - timedelta(days=d)).actions
        for token, d in zip(tokens, days, strict=False)
    ]
    assert actions == [(FeedbackAction.COUNTED,)] * 3
    assert store.is_mailable(store.get_subscriber_id(address), 1)
    assert later_of(store, sent.campaign_id, address) is LaterOutcome.SOFT_BOUNCED
    third_in_window = apply(store, sent, soft_bounce(tokens[3]), now=NOW + timedelta(hours=1))
    assert third_in_window.actions == (FeedbackAction.SUPPRESSED,)
    assert not store.is_mailable(store.get_subscriber_id(address), 1)
    [entry] = store.subscriber_record(address).history
    assert entry.detail is not None
    assert entry.detail.startswith("3 soft bounces")


async def test_one_message_reported_delayed_again_and_again_counts_once(
    store: Store, sent: Sent
) -> None:
    """A server holding one message sends "delayed" notices after 4 hours, a day, two
    days...: each is a soft bounce, all about one message. They never reach the limit of
    three messages, however many arrive."""
    address = sent.addresses[1]
    delayed = soft_bounce(sent.verp[address])
    actions = [
        apply(store, sent, delayed, now=NOW + timedelta(hours=h)).actions for h in (4, 24, 48, 96)
    ]
    assert actions == [(FeedbackAction.COUNTED,)] * 4
    assert store.is_mailable(store.get_subscriber_id(address), 1)
    assert later_of(store, sent.campaign_id, address) is LaterOutcome.SOFT_BOUNCED


def soft_bounce(verp_token: str) -> Feedback:
    return bounce(FeedbackKind.SOFT_BOUNCE, verp_token=verp_token)


def deliveries_to(store: Store, address: str) -> list[int]:
    """The ledger rows of every campaign to `address`, oldest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.id).where(deliveries.c.email == address).order_by(deliveries.c.id)
        )
        return [int(row.id) for row in rows]


async def test_a_complaint_suppresses_from_every_list_and_no_resubscribe_click_lifts_it(
    store: Store, sent: Sent
) -> None:
    """Tied by the quoted Message-ID alone (feedback loops often redact the address); a
    later bounce never downgrades the ledger's `complained`."""
    address = sent.addresses[2]
    subscriber = store.get_subscriber_id(address)
    complaint = bounce(FeedbackKind.COMPLAINT, message_id=sent.message_ids[address], status=None)
    assert apply(store, sent, complaint).actions == (FeedbackAction.COMPLAINED,)
    record = store.subscriber_record(address)
    assert record.subscriber is not None
    assert record.subscriber.status is SubscriberStatus.COMPLAINED
    [entry] = record.history
    assert (entry.reason, entry.source, entry.list_name) == (
        SuppressionReason.COMPLAINED,
        UnsubscribeSource.FEEDBACK_LOOP,
        None,
    )
    assert store.resubscribe(subscriber, 1) is False
    assert not store.is_mailable(subscriber, 1)
    apply(store, sent, bounce(verp_token=sent.verp[address]))
    assert later_of(store, sent.campaign_id, address) is LaterOutcome.COMPLAINED
    counts = store.feedback_counts(sent.campaign_id)
    assert (counts.bounced, counts.complained) == (0, 1)


async def test_a_mailed_unsubscribe_takes_the_person_off_the_list_as_mailto(
    store: Store, sent: Sent
) -> None:
    address = sent.addresses[3]
    subscriber = store.get_subscriber_id(address)
    token = sent.signer.sign(subscriber_id=subscriber, list_id=1, campaign_id=sent.campaign_id)
    mailed = bounce(FeedbackKind.UNSUBSCRIBE, unsubscribe_token=token, status=None)
    assert apply(store, sent, mailed).actions == (FeedbackAction.UNSUBSCRIBED,)
    assert apply(store, sent, mailed).actions == (FeedbackAction.ALREADY,)
    [entry] = store.subscriber_record(address).history
    assert (entry.reason, entry.source, entry.campaign_id) == (
        SuppressionReason.UNSUBSCRIBED,
        UnsubscribeSource.MAILTO,
        sent.campaign_id,
    )
    assert not store.is_mailable(subscriber, 1)
    assert later_of(store, sent.campaign_id, address) is None  # not a delivery problem


async def test_reports_that_are_not_ours_change_nothing_and_are_left_for_a_person(
    store: Store, sent: Sent
) -> None:
    """A VERP token under another key, a DSN naming an address not on the list, our
    Message-ID with someone else's address, an unsigned unsubscribe."""
    forged = TokenSigner(b"not-our-key-" * 3).sign_bounce(delivery_id=1)
    reports = [
        bounce(verp_token=forged),
        bounce(verp_token="zzzz"),
        bounce(recipients=("stranger@example.net",)),
        bounce(
            message_id=sent.message_ids[sent.addresses[0]], recipients=("stranger@example.net",)
        ),
        bounce(FeedbackKind.UNSUBSCRIBE, unsubscribe_token="A" * 30),
        bounce(FeedbackKind.AUTO_REPLY, status=None),
    ]
    for number, report in enumerate(reports):
        applied = apply(store, sent, report, key=f"not-ours-{number}")
        assert (applied.disposition, applied.actions) == (Disposition.LEFT_ALONE, ())
        assert store.feedback_seen(f"not-ours-{number}") is Disposition.LEFT_ALONE
    assert store.feedback_events() == []
    for address in sent.addresses:
        assert store.subscriber_record(address).history == []


def dsn(to: str, *, failed: str, message_id: str) -> bytes:
    """A DSN as Postfix writes one (its layout, trimmed)."""
    return (
        "Return-Path: <>\r\n"
        f"Delivered-To: {to}\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: {to}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        f"Message-Id: <dsn-{failed}@mx.example.net>\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f'Diagnostic-Code: X-Postfix; unknown user: "{failed}"\r\n\r\n'
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nSubject: Invitation\r\n\r\n"
        "--B--\r\n"
    ).encode()


def person(to: str) -> bytes:
    return (
        f"From: reader@example.net\r\nTo: {to}\r\nSubject: Can I bring a friend?\r\n"
        "Message-ID: <question@example.net>\r\n\r\nIs there room for one more?\r\n"
    ).encode()


def out_of_office(to: str) -> bytes:
    return (
        f"From: reader@example.net\r\nTo: {to}\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\nMessage-ID: <away@example.net>\r\n\r\nBack Monday.\r\n"
    ).encode()


async def test_a_maildir_is_read_once_handled_mail_moved_the_rest_left_alone(
    store: Store, sent: Sent, tmp_path: Path
) -> None:
    gone = sent.addresses[0]
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    verp_to = f"bounces+{sent.verp[gone]}@lists.example.org"
    for message in (
        dsn(verp_to, failed=gone, message_id=sent.message_ids[gone]),
        person(BOUNCES),
        out_of_office(verp_to),
    ):
        box.add(message)
    location = parse_mailbox(f"maildir:{tmp_path / 'bounces'}", home=tmp_path)
    own = OwnAddresses(bounce=BOUNCES)

    def read() -> tuple[int, int, int]:
        reader = MaildirReader(location, Folders(processed="Processed"))
        try:
            report = fetch_bounces(
                store, reader, signer=sent.signer, policy=POLICY, own=own, source="maildir"
            )
        finally:
            reader.close()
        return report.read, report.processed, report.left_alone

    # 50 MB of one line: only the first MAX_MESSAGE_BYTES are read, and it is no report.
    huge = box.add(b"Subject: huge\r\n\r\n" + b"x" * (50 * 1024 * 1024))
    assert read() == (4, 1, 3)
    box.remove(huge)
    assert len(box.get_folder("Processed")) == 1
    assert len(box) == 2
    assert not store.is_mailable(store.get_subscriber_id(gone), 1)
    assert read() == (2, 0, 2)  # the two left alone are only recognised
    assert len(store.feedback_events()) == 1
    assert message_key(person(BOUNCES)).startswith("sha256:")


async def test_the_worker_polls_the_bounce_mailbox_until_stopped(
    store: Store, sent: Sent, tmp_path: Path
) -> None:
    gone = sent.addresses[1]
    box = mailbox.Maildir(tmp_path / "polled", create=True)
    settings = sent.settings.model_copy(
        update={"bounce_mailbox": f"maildir:{tmp_path / 'polled'}", "bounce_poll_interval": 0.05}
    )
    stop = asyncio.Event()
    polling = asyncio.create_task(poll_bounces(settings, store, signer=sent.signer, stop=stop))
    try:
        await asyncio.sleep(0.1)  # an empty mailbox first: nothing happens
        box.add(
            dsn(
                f"bounces+{sent.verp[gone]}@lists.example.org",
                failed=gone,
                message_id=sent.message_ids[gone],
            )
        )
        async with asyncio.timeout(10):
            while not store.feedback_events():  # noqa: ASYNC110  # the store has no event to await
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(polling, 10)
    assert later_of(store, sent.campaign_id, gone) is LaterOutcome.BOUNCED
    assert len(box) == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "imaps://bounces@lists.example.org@mail.example.org/INBOX",
            (MailboxProtocol.IMAP, True, "mail.example.org", 993, "bounces@lists.example.org"),
        ),
        (
            "pop3s://bounces%40lists.example.org@mail.example.org:1995",
            (MailboxProtocol.POP3, True, "mail.example.org", 1995, "bounces@lists.example.org"),
        ),
        ("imap://box@127.0.0.1:1143/", (MailboxProtocol.IMAP, False, "127.0.0.1", 1143, "box")),
    ],
)
def test_mailbox_urls(url: str, expected: tuple[object, ...], tmp_path: Path) -> None:
    found = parse_mailbox(url, home=tmp_path)
    assert (found.protocol, found.tls, found.host, found.port, found.user) == expected
    assert "password" not in found.describe()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("imap://box@mail.example.org/INBOX", "in clear"),
        ("imaps://box:secret@mail.example.org/INBOX", "password in the URL"),
        ("ftp://box@mail.example.org", "unknown scheme"),
        ("imaps://mail.example.org", "USER@HOST"),
        ("imaps://box@mail.example.org/In%22box", "folder"),
        ("maildir:", "needs a folder"),
    ],
)
def test_bad_mailbox_urls_name_the_setting(url: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILER_BOUNCE_MAILBOX") as caught:
        parse_mailbox(url, home=tmp_path)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("bounce_address", "bounces+x@lists.example.org"),
        ("bounce_address", "not an address"),
        ("bounce_mailbox", "imap4://box@mail.example.org"),
        ("soft_bounce_limit", "0"),
        ("bounce_processed_folder", 'Done"*'),
        ("bounce_unhandled_folder", "Boîte"),
    ],
)
def test_bad_bounce_settings_are_refused_by_name(setting: str, value: str, tmp_path: Path) -> None:
    from mailer.config import load_settings

    with pytest.raises(ConfigError, match=f"MAILER_{setting.upper()}"):
        load_settings(home=tmp_path, **{setting: value})


async def test_the_list_unsubscribe_mailto_carries_the_token_and_a_mailed_request_acts(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """What a mail client's unsubscribe sends (the mailto's address and subject, RFC 2369)
    takes that reader off the list, recorded as mailto, when the mailbox is read."""
    from email import message_from_bytes
    from urllib.parse import unquote, urlsplit

    from mailer.feedback.classify import classify

    addresses = seed_list(store, tmp_path, 2)
    settings = make_settings(
        tmp_path, smtp_server.port, unsubscribe_mailto="unsubscribe@lists.example.org"
    )
    campaign_id = new_campaign(store)
    await send(settings, store, campaign_id)
    sent_to = {m.rcpt_tos[0]: m.data for m in smtp_server.messages}
    header = str(message_from_bytes(sent_to[addresses[0]])["List-Unsubscribe"])
    mailto = urlsplit(header.split("<mailto:", 1)[1].rstrip(">"))
    subject = unquote(mailto.query.removeprefix("subject="))
    assert subject.startswith("unsubscribe ")
    request = (
        f"From: {addresses[0]}\r\nTo: {mailto.path}\r\nSubject: {subject}\r\n"
        "Message-ID: <request@example.org>\r\n\r\n\r\n"
    ).encode()
    own = OwnAddresses(unsubscribe="unsubscribe@lists.example.org")
    feedback = classify(request, own=own, source="imap")
    assert feedback.kind is FeedbackKind.UNSUBSCRIBE
    applied = apply_feedback(
        store, feedback, signer=load_signer(settings), policy=POLICY, now=NOW, key="request"
    )
    assert applied.actions == (FeedbackAction.UNSUBSCRIBED,)
    [entry] = store.subscriber_record(addresses[0]).history
    assert (entry.source, entry.campaign_id) == (UnsubscribeSource.MAILTO, campaign_id)
    assert store.is_mailable(store.get_subscriber_id(addresses[1]), 1)


def test_fetch_without_a_mailbox_or_with_one_that_is_down_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    from campaign_support import cli_environment, run_mailer
    from mail_servers import free_port

    env = cli_environment(tmp_path, 2525)
    unset = run_mailer(env, tmp_path, "bounces", "fetch")
    assert unset.returncode == 2
    assert "MAILER_BOUNCE_MAILBOX is not set" in unset.stderr
    down = run_mailer(
        env
        | {
            "MAILER_BOUNCE_MAILBOX": f"imap://box@127.0.0.1:{free_port()}/INBOX",
            "MAILER_BOUNCE_PASSWORD": "hunter2-secret",
        },
        tmp_path,
        "bounces",
        "fetch",
    )
    assert down.returncode == 1
    assert "bounce mailbox imap://box@127.0.0.1:" in down.stderr
    assert "Traceback" not in down.stderr
    assert "hunter2" not in down.stderr + down.stdout


def test_config_check_of_the_bounce_mailbox(tmp_path: Path) -> None:
    from mailer.campaigns.doctor import Status, check_bounce_mailbox

    none = make_settings(tmp_path, 2525)
    assert check_bounce_mailbox(none) is None  # no bounce handling configured: no line
    unread = make_settings(tmp_path, 2525, bounce_address=BOUNCES)
    finding = check_bounce_mailbox(unread)
    assert finding is not None
    assert finding.status is Status.FAIL
    assert "nothing reads them" in finding.line
    mailbox.Maildir(tmp_path / "box", create=True)
    local = make_settings(tmp_path, 2525, bounce_mailbox=f"maildir:{tmp_path / 'box'}")
    found = check_bounce_mailbox(local)
    assert found is not None
    assert found.status is Status.OK
    missing = make_settings(tmp_path, 2525, bounce_mailbox=f"maildir:{tmp_path / 'nowhere'}")
    gone = check_bounce_mailbox(missing)
    assert gone is not None
    assert gone.status is Status.FAIL
    assert "not a Maildir" in gone.line
