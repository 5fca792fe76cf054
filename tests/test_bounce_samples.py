"""Real returned mail, classified as a table says (issue 12).

The samples under tests/data/bounces/ (see its README): flufl.bounce's own test corpus of
DSNs and non-standard bounces from two decades of real servers, the ARF examples of
RFC 5965 appendix B and a redacted feedback-loop report as RFC 6449 describes, and
auto-replies (RFC 3834, Exchange, Gmail). Where the table differs from flufl.bounce's own
expectations it says why.
"""

from __future__ import annotations

import email
from pathlib import Path

import flufl.bounce
import pytest

from mailer.feedback.classify import OwnAddresses, classify
from mailer.models import Feedback, FeedbackKind

SAMPLES_DIR = Path(__file__).parent / "data" / "bounces"
OWN = OwnAddresses(bounce="bounces@lists.example.org", unsubscribe="unsubscribe@lists.example.org")
TOKEN = "AAECAwQFBgcICQoLDA0ODxA"  # shaped like a token; classify never verifies one

HARD = FeedbackKind.HARD_BOUNCE
SOFT = FeedbackKind.SOFT_BOUNCE
COMPLAINT = FeedbackKind.COMPLAINT
AUTO = FeedbackKind.AUTO_REPLY
OTHER = FeedbackKind.OTHER
UNSUBSCRIBE = FeedbackKind.UNSUBSCRIBE

# file -> (kind, recipients). Deliberate differences from flufl.bounce's own tables:
# - dsn_02: "Action: failed" with Status 4.4.7 (gave up retrying): soft, not permanent.
# - simple_42: a DSN refusing the message as spam, Status 5.7.1: a policy refusal says
#   nothing about the address, so soft (flufl's SimpleMatch alone finds nothing there).
# - bounce_01, dumbass_01, groupwise_03, simple_43: no address to be read (flufl too).
SAMPLES: list[tuple[str, FeedbackKind, tuple[str, ...]]] = [
    ("flufl/aol_01.txt", HARD, ("screenname@aol.com",)),
    ("flufl/bounce_01.txt", OTHER, ()),
    ("flufl/bounce_02.txt", HARD, ("userx@example.com",)),
    ("flufl/bounce_03.txt", HARD, ("userx@example.uk",)),
    ("flufl/caiwireless_01.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_01.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_02.txt", SOFT, ("zzzzz@example.uk",)),
    ("flufl/dsn_03.txt", HARD, ("userx@example.be",)),
    ("flufl/dsn_04.txt", HARD, ("userx@example.ch",)),
    ("flufl/dsn_05.txt", SOFT, ("userx@example.cz",)),
    ("flufl/dsn_06.txt", SOFT, ("userx@example.com",)),
    ("flufl/dsn_07.txt", SOFT, ("userx@example.nz",)),
    ("flufl/dsn_08.txt", SOFT, ("userx@example.de",)),
    ("flufl/dsn_09.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_10.txt", HARD, ("anne.person@dom.ain",)),
    ("flufl/dsn_11.txt", HARD, ("joem@example.com",)),
    ("flufl/dsn_12.txt", HARD, ("userx@example.jp",)),
    ("flufl/dsn_13.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_14.txt", HARD, ("userx@example.com.dk",)),
    ("flufl/dsn_15.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_16.txt", HARD, ("userx@example.com",)),
    ("flufl/dsn_17.txt", SOFT, ("userx@example.fi",)),
    ("flufl/dsn_18.txt", HARD, ("email@replaced.net",)),
    ("flufl/dumbass_01.txt", OTHER, ()),
    ("flufl/exim_01.txt", HARD, ("userx@its.example.nl",)),
    ("flufl/groupwise_01.txt", HARD, ("userx@example.edu",)),
    ("flufl/groupwise_02.txt", HARD, ("userx@example.com",)),
    ("flufl/groupwise_03.txt", OTHER, ()),
    ("flufl/hotpop_01.txt", HARD, ("userx@example.com",)),
    ("flufl/llnl_01.txt", HARD, ("user1@example.gov",)),
    ("flufl/microsoft_01.txt", HARD, ("userx@example.com",)),
    ("flufl/microsoft_02.txt", HARD, ("userx@example.com",)),
    ("flufl/microsoft_03.txt", HARD, ("userx@example.com",)),
    ("flufl/microsoft_04.txt", HARD, ("userx@example.com",)),
    ("flufl/netscape_01.txt", HARD, ("aaaaa@corel.com", "bbbbb@corel.com")),
    ("flufl/newmailru_01.txt", HARD, ("zzzzz@newmail.ru",)),
    ("flufl/postfix_01.txt", HARD, ("xxxxx@local.ie",)),
    ("flufl/postfix_02.txt", HARD, ("yyyyy@digicool.com",)),
    ("flufl/postfix_03.txt", HARD, ("ttttt@ggggg.com",)),
    ("flufl/postfix_04.txt", HARD, ("userx@mail1.example.com",)),
    ("flufl/postfix_05.txt", HARD, ("userx@example.net",)),
    ("flufl/qmail_01.txt", HARD, ("userx@example.de",)),
    ("flufl/qmail_02.txt", HARD, ("userx@example.com",)),
    ("flufl/qmail_03.txt", HARD, ("userx@example.jp",)),
    ("flufl/qmail_04.txt", HARD, ("userx@example.au",)),
    ("flufl/qmail_05.txt", HARD, ("userx@example.com",)),
    ("flufl/qmail_06.txt", HARD, ("ntl@xxx.com",)),
    ("flufl/qmail_07.txt", HARD, ("user@example.net",)),
    ("flufl/qmail_08.txt", AUTO, ()),
    ("flufl/sendmail_01.txt", HARD, ("zzzzz@nfg.nl", "zzzzz@shaft.coal.nl")),
    ("flufl/simple_01.txt", HARD, ("bbbsss@example.com",)),
    ("flufl/simple_02.txt", HARD, ("userx@example.net",)),
    ("flufl/simple_03.txt", SOFT, ("userx@example.za",)),
    ("flufl/simple_04.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_05.txt", HARD, ("userx@example.net",)),
    ("flufl/simple_06.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_07.txt", HARD, ("userx@example.net",)),
    ("flufl/simple_08.txt", HARD, ("userx@example.de",)),
    ("flufl/simple_09.txt", HARD, ("userx@example.de",)),
    ("flufl/simple_10.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_11.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_12.txt", HARD, ("userx@example.ac.jp",)),
    ("flufl/simple_13.txt", HARD, ("userx@example.fr",)),
    ("flufl/simple_14.txt", HARD, ("userx@example.com", "usery@example.com")),
    ("flufl/simple_15.txt", HARD, ("userx@example.be",)),
    ("flufl/simple_16.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_17.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_18.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_19.txt", HARD, ("userx@example.com.ar",)),
    ("flufl/simple_20.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_21.txt", SOFT, ("userx@example.com",)),
    ("flufl/simple_22.txt", SOFT, ("User@example.org",)),
    ("flufl/simple_23.txt", HARD, ("userx@example.it",)),
    ("flufl/simple_24.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_25.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_26.txt", HARD, ("userx@example.it",)),
    ("flufl/simple_27.txt", HARD, ("userx@example.net.py",)),
    ("flufl/simple_28.txt", SOFT, ("userx@example.com",)),
    ("flufl/simple_29.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_30.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_31.txt", HARD, ("userx@example.fr",)),
    ("flufl/simple_32.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_33.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_34.txt", HARD, ("roland@example.com",)),
    ("flufl/simple_35.txt", SOFT, ("calvin@example.com",)),
    ("flufl/simple_36.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_37.txt", HARD, ("user@example.edu",)),
    ("flufl/simple_38.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_39.txt", HARD, ("userx@example.ru",)),
    ("flufl/simple_40.txt", SOFT, ("user@example.com",)),
    ("flufl/simple_41.txt", HARD, ("userx@example.com",)),
    ("flufl/simple_42.txt", HARD, ("david...@gmail.com",)),
    ("flufl/simple_43.txt", OTHER, ()),
    ("flufl/simple_44.txt", HARD, ("user@example.com",)),
    ("flufl/simple_45.txt", HARD, ("subscriber@earthlink.net",)),
    ("flufl/sina_01.txt", HARD, ("userx@sina.com", "usery@sina.com")),
    ("flufl/smtp32_01.txt", HARD, ("userx@example.ph",)),
    ("flufl/smtp32_02.txt", HARD, ("userx@example.com",)),
    ("flufl/smtp32_03.txt", HARD, ("userx@example.com",)),
    ("flufl/smtp32_04.txt", HARD, ("after_another@example.net", "one_bad_address@example.net")),
    ("flufl/smtp32_05.txt", HARD, ("userx@example.com",)),
    ("flufl/smtp32_06.txt", HARD, ("Absolute_garbage_addr@example.net",)),
    ("flufl/smtp32_07.txt", HARD, ("userx@example.com",)),
    ("flufl/yahoo_01.txt", HARD, ("userx@example.com",)),
    ("flufl/yahoo_02.txt", HARD, ("userx@example.es",)),
    ("flufl/yahoo_03.txt", HARD, ("userx@example.com",)),
    ("flufl/yahoo_04.txt", HARD, ("userx@example.es", "usery@example.uk")),
    ("flufl/yahoo_05.txt", HARD, ("userx@example.com", "usery@example.com")),
    (
        "flufl/yahoo_06.txt",
        HARD,
        ("usera@example.com", "userx@example.com", "usery@example.com", "userz@example.com"),
    ),
    (
        "flufl/yahoo_07.txt",
        HARD,
        ("userw@example.com", "userx@example.com", "usery@example.com", "userz@example.com"),
    ),
    (
        "flufl/yahoo_08.txt",
        HARD,
        (
            "usera@example.com",
            "userb@example.com",
            "userc@example.com",
            "userd@example.com",
            "usere@example.com",
            "userf@example.com",
        ),
    ),
    ("flufl/yahoo_09.txt", HARD, ("userx@example.com", "usery@example.com")),
    ("flufl/yahoo_10.txt", HARD, ("userx@example.com", "usery@example.com", "userz@example.com")),
    ("flufl/yahoo_11.txt", HARD, ("bad_user@aol.com",)),
    ("flufl/yahoo_12.txt", HARD, ("user@yahoo.com",)),
    ("flufl/yahoo_13.txt", HARD, ("bogus-address@example.net",)),
    ("flufl/yale_01.txt", HARD, ("userx@cs.yale.edu", "userx@yale.edu")),
    ("arf/auth_failure_not_a_complaint.eml", OTHER, ("reader@mailbox.example.net",)),
    ("arf/fbl_redacted_headers_only.eml", COMPLAINT, ("redacted@mailbox.example.net",)),
    ("arf/rfc5965_b1_simple.eml", COMPLAINT, ()),
    ("arf/rfc5965_b2_full.eml", COMPLAINT, ("user@example.com",)),
    ("autoreply/exchange_automatic_reply.eml", AUTO, ()),
    ("autoreply/exchange_automatische_antwort.eml", AUTO, ()),
    ("autoreply/gmail_vacation_responder.eml", AUTO, ()),
    ("autoreply/rfc3834_vacation.eml", AUTO, ()),
    ("autoreply/vacation_quoting_a_failure.eml", AUTO, ()),
    ("autoreply/x_autoreply_header.eml", AUTO, ()),
]


def read(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def classified(raw: bytes, *, envelope_recipient: str | None = None) -> Feedback:
    return classify(raw, own=OWN, source="test", envelope_recipient=envelope_recipient)


@pytest.mark.parametrize(
    ("name", "kind", "recipients"), SAMPLES, ids=[name for name, _, _ in SAMPLES]
)
def test_each_sample_is_classified_as_the_table_says(
    name: str, kind: FeedbackKind, recipients: tuple[str, ...]
) -> None:
    feedback = classified(read(name))
    assert (feedback.kind, feedback.recipients) == (kind, recipients)
    assert feedback.source == "test"


def test_every_vendored_sample_is_in_the_table() -> None:
    on_disk = {
        str(p.relative_to(SAMPLES_DIR))
        for p in SAMPLES_DIR.rglob("*")
        if p.suffix in (".txt", ".eml")
    }
    assert on_disk == {name for name, _, _ in SAMPLES}
    kinds = {kind for _, kind, _ in SAMPLES}
    assert kinds == {HARD, SOFT, COMPLAINT, AUTO, OTHER}


def test_no_auto_reply_is_taken_for_a_bounce() -> None:
    """Every auto-reply sample is AUTO_REPLY, including one whose body quotes a failure
    that flufl.bounce's heuristics alone do take for a permanent bounce."""
    for name, kind, _ in SAMPLES:
        if name.startswith("autoreply/"):
            assert kind is AUTO, name
    quoting = read("autoreply/vacation_quoting_a_failure.eml")
    _, permanent = flufl.bounce.all_failures(email.message_from_bytes(quoting))
    assert permanent == {b"frank.osei@example.org"}  # the heuristic alone is fooled
    assert classified(quoting).kind is AUTO


def test_mail_systems_marking_bounces_auto_replied_are_still_bounces() -> None:
    """Postfix, mail.ru and Vade Secure mark bounces `Auto-Submitted: auto-replied`: from
    MAILER-DAEMON or a "Mail Delivery System" that marker does not make an auto-reply."""
    for name in ("flufl/simple_39.txt", "flufl/simple_45.txt", "flufl/simple_38.txt"):
        assert b"Auto-Submitted: auto-replied" in read(name)
        assert classified(read(name)).kind is HARD, name


def test_a_dsn_gives_status_diagnostic_and_the_returned_message_id() -> None:
    feedback = classified(read("flufl/dsn_10.txt"))
    assert feedback.kind is HARD
    assert feedback.status == "5.0.0"
    assert feedback.diagnostic is not None
    assert "550" in feedback.diagnostic
    assert feedback.message_id == "<200210211625.12753.b.a.dude@example.com>"
    delayed = classified(read("flufl/dsn_06.txt"))
    assert (delayed.kind, delayed.status) == (SOFT, "4.4.0")


POSTFIX_DSN = """\
Return-Path: <>
Delivered-To: bounces+{token}@lists.example.org
From: MAILER-DAEMON@relay.lists.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces+{token}@lists.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="3F2A61C0A1.1764581234/relay.lists.example.org"
Message-Id: <20261201090714.3F2A61C0A1@relay.lists.example.org>

--3F2A61C0A1.1764581234/relay.lists.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host relay.lists.example.org.

<nobody@dead.example.org>: unknown user: "nobody"

--3F2A61C0A1.1764581234/relay.lists.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.lists.example.org
X-Postfix-Queue-ID: 3F2A61C0A1
X-Postfix-Sender: rfc822; bounces+{token}@lists.example.org
Arrival-Date: Tue,  1 Dec 2026 09:07:14 +0000 (UTC)

Final-Recipient: rfc822; nobody@dead.example.org
Original-Recipient: rfc822;Nobody@Dead.Example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "nobody"

--3F2A61C0A1.1764581234/relay.lists.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounces+{token}@lists.example.org>
From: CWO London <events@lists.example.org>
To: nobody@dead.example.org
Subject: Public meeting
Message-ID: <20261201090714.77aa@lists.example.org>

--3F2A61C0A1.1764581234/relay.lists.example.org--
"""


def test_a_postfix_dsn_to_the_verp_address_names_the_row_and_the_message() -> None:
    """Postfix's own DSN shape (text/rfc822-headers): the VERP token from the address it
    came back to, the original recipient as we mailed it (domain in lower case), the
    Message-ID we sent."""
    feedback = classified(POSTFIX_DSN.format(token=TOKEN).encode())
    assert feedback == Feedback(
        kind=HARD,
        recipients=("Nobody@dead.example.org",),
        verp_token=TOKEN,
        message_id="<20261201090714.77aa@lists.example.org>",
        status="5.1.1",
        diagnostic='X-Postfix; unknown user: "nobody"',
        unsubscribe_token=None,
        source="test",
    )


@pytest.mark.parametrize(
    "recipient_header",
    [
        "Delivered-To: bounces+{t}@lists.example.org",
        "X-Original-To: bounces+{t}@lists.example.org",
        "To: Bounces <BOUNCES+{t}@Lists.Example.ORG>",
    ],
)
def test_the_verp_token_is_read_from_each_recipient_header(recipient_header: str) -> None:
    raw = read("flufl/qmail_01.txt")
    raw = recipient_header.format(t=TOKEN).encode() + b"\n" + raw
    assert classified(raw).verp_token == TOKEN


def test_the_verp_token_is_read_from_the_envelope_recipient_the_reader_gives() -> None:
    raw = read("flufl/qmail_01.txt")
    assert classified(raw).verp_token is None
    feedback = classified(raw, envelope_recipient=f"bounces+{TOKEN}@lists.example.org")
    assert (feedback.kind, feedback.verp_token) == (HARD, TOKEN)


@pytest.mark.parametrize(
    "address",
    [
        f"bounces+{TOKEN}@lists.example.org.attacker.example",
        f"xbounces+{TOKEN}@lists.example.org",
        f"bounces+{TOKEN}@example.org",
        "bounces+short@lists.example.org",
        f"bounces+{TOKEN}!@lists.example.org",
    ],
)
def test_look_alike_verp_addresses_give_no_token(address: str) -> None:
    raw = f"Delivered-To: {address}\n".encode() + read("flufl/qmail_01.txt")
    assert classified(raw).verp_token is None


def test_anything_else_at_a_verp_address_counts_as_a_soft_bounce() -> None:
    """Only a mail system answers an envelope sender: an unreadable answer counts soft."""
    raw = (
        f"To: bounces+{TOKEN}@lists.example.org\nFrom: robot@example.net\n"
        "Subject: please confirm you are human\n\nClick here to be let through.\n"
    ).encode()
    feedback = classified(raw)
    assert (feedback.kind, feedback.verp_token, feedback.recipients) == (SOFT, TOKEN, ())
    plain = raw.replace(f"bounces+{TOKEN}@".encode(), b"someone@")
    assert classified(plain).kind is OTHER


def test_an_abuse_report_ties_to_our_message_by_token_verp_and_message_id() -> None:
    """The redacted feedback-loop report names no reader: what ties it to the row is the
    returned message's List-Unsubscribe token, its VERP envelope sender, its Message-ID."""
    feedback = classified(read("arf/fbl_redacted_headers_only.eml"))
    assert feedback.kind is COMPLAINT
    assert feedback.unsubscribe_token == "AQEBAgMEBQYHCAkKCwwNDg8Q"
    assert feedback.verp_token == TOKEN
    assert feedback.message_id == "<20261201080209.1f3e9a7c@lists.example.org>"
    full = classified(read("arf/rfc5965_b2_full.eml"))
    assert (full.recipients, full.message_id) == (
        ("user@example.com",),
        "<8787KJKJ3K4J3K4J3K4J3.mail@example.net>",
    )


UNSUBSCRIBE_MAIL = """\
From: Ana Lopez <ana@example.org>
To: {to}
Subject: {subject}
Date: Tue, 1 Dec 2026 08:05:00 +0000
Message-ID: <unsub-1@example.org>

"""


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        (f"unsubscribe+{TOKEN}@lists.example.org", "unsubscribe"),
        ("unsubscribe@lists.example.org", f"unsubscribe {TOKEN}"),
        ("<Unsubscribe@lists.example.org>", f"Re: unsubscribe {TOKEN}"),
    ],
)
def test_mail_to_the_unsubscribe_address_carries_its_token(to: str, subject: str) -> None:
    feedback = classified(UNSUBSCRIBE_MAIL.format(to=to, subject=subject).encode())
    assert feedback.kind is UNSUBSCRIBE
    assert feedback.unsubscribe_token == TOKEN
    assert feedback.recipients == ("ana@example.org",)


def test_mail_to_the_unsubscribe_address_without_a_token_is_left_for_a_person() -> None:
    raw = UNSUBSCRIBE_MAIL.format(to="unsubscribe@lists.example.org", subject="please remove me")
    feedback = classified(raw.encode())
    assert (feedback.kind, feedback.unsubscribe_token) == (OTHER, None)
    assert feedback.diagnostic == "mail to the unsubscribe address without a token"


def test_without_own_addresses_no_token_is_read() -> None:
    raw = POSTFIX_DSN.format(token=TOKEN).encode()
    feedback = classify(raw, own=OwnAddresses(), source="test")
    assert (feedback.kind, feedback.verp_token) == (HARD, None)
