"""POST /webhooks/ses and POST /webhooks/bounce (issue 12), through the real app, against a
store holding a campaign sent through the in-memory relay.

SNS cannot be reached from a test, so the tests sign SNS messages with a key and a
self-signed certificate of their own, and give the app a fetcher that serves that
certificate (the app factory's `sns_fetch`). The default fetcher's host check is tested on
its own: it refuses off-host URLs before any connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from campaign_support import make_settings, new_campaign, seed_list
from mailer.config import Settings
from mailer.delivery.memory import MemoryTransport
from mailer.errors import CertificateUnavailable, WebhookError
from mailer.feedback.sns import check_sns_url, fetch_from_sns
from mailer.feedback.webhook import SIGNATURE_HEADER, sign
from mailer.models import OutgoingMessage
from mailer.sending.run import run_campaign
from mailer.store import Store
from mailer.store.schema import suppressions
from mailer.store.signer import load_signer
from mailer.web import create_app
from web_support import store_snapshot

SITE = "https://mailer.example.org"  # campaign_support's MAILER_BASE_URL
SECRET = "webhook-secret-0123456789abcdef"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de"
)


def self_signed(common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    return self_signed("sns.amazonaws.com")


@pytest.fixture(scope="module")
def other_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    return self_signed("sns.amazonaws.com (not SNS's)")


@dataclass
class FakeSns:
    """Serves certificates by URL and answers confirmations; records every URL asked."""

    certificates: dict[str, bytes]
    asked: list[str] = field(default_factory=list)
    unavailable: bool = False

    def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        if self.unavailable:
            raise CertificateUnavailable("SNS is down")
        if url.startswith("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"):
            return b"<ConfirmSubscriptionResponse/>"
        return self.certificates[url]


def signed(fields: dict[str, Any], key: rsa.RSAPrivateKey, *, version: str = "1") -> dict[str, Any]:
    """`fields` with the SNS signature: SignatureVersion 1 (SHA1withRSA) or 2 (SHA256)."""
    order = (
        ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        if fields["Type"] == "Notification"
        else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    )
    canonical = "".join(f"{k}\n{fields[k]}\n" for k in order if k in fields)
    # SignatureVersion 1 is SHA1withRSA: SNS's format, not a choice made here.
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
    return {
        **fields,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }


def notification(message: dict[str, Any], *, message_id: str = "n-1") -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(message),
        "Timestamp": "2026-12-01T09:00:00.000Z",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }


def ses_bounce(sent: OutgoingMessage, *, bounce_type: str = "Permanent") -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": sent.recipient,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-12-01T09:00:00.000Z",
            "feedbackId": "0102-feedback",
        },
        "mail": {
            "timestamp": "2026-12-01T08:59:58.000Z",
            "source": sent.sender,
            "messageId": "0102-ses-own-id",
            "destination": [sent.recipient],
            "commonHeaders": {"messageId": sent.message_id},
        },
    }


def ses_complaint(sent: OutgoingMessage) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": sent.recipient}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-12-01T09:00:00.000Z",
            "feedbackId": "0102-feedback",
        },
        "mail": {
            "source": sent.sender,
            "headers": [{"name": "Message-ID", "value": sent.message_id}],
        },
    }


@dataclass
class Site:
    store: Store
    settings: Settings
    sent: list[OutgoingMessage]
    sns: FakeSns
    client: httpx.AsyncClient

    async def post_sns(self, fields: dict[str, Any]) -> httpx.Response:
        body = json.dumps(fields).encode()
        headers = {"Content-Type": "text/plain; charset=UTF-8"}
        return await self.client.post("/webhooks/ses", content=body, headers=headers)

    async def post_generic(self, body: bytes, signature: str | bytes | None) -> httpx.Response:
        headers = [(b"Content-Type", b"application/json")]
        if signature is not None:
            value = signature.encode() if isinstance(signature, str) else signature
            headers.append((SIGNATURE_HEADER.encode(), value))
        return await self.client.post("/webhooks/bounce", content=body, headers=headers)


def bounce_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "ses_topic_arns": [TOPIC],
        "bounce_address": "bounces@mailer.example.org",
    }
    values.update(overrides)
    return make_settings(tmp_path, 2525, **values)


async def sent_campaign(store: Store, settings: Settings, tmp_path: Path) -> list[OutgoingMessage]:
    """Three subscribers, one campaign sent to them through the in-memory relay."""
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    transport = MemoryTransport()
    await run_campaign(
        settings=settings,
        store=store,
        transport=transport,
        signer=load_signer(settings),
        campaign_id=campaign_id,
    )
    assert len(transport.sent) == 3
    return list(transport.sent)


@contextlib.asynccontextmanager
async def open_site(
    store: Store,
    tmp_path: Path,
    certificate: bytes,
    *,
    sent: list[OutgoingMessage] | None = None,
) -> AsyncIterator[Site]:
    """The app over `store`; `sent`: the messages of the campaign it already holds (None:
    one is sent now)."""
    settings = bounce_settings(tmp_path)
    if sent is None:
        sent = await sent_campaign(store, settings, tmp_path)
    sns = FakeSns({CERT_URL: certificate})
    app = create_app(store=store, signer=load_signer(settings), settings=settings, sns_fetch=sns)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
        yield Site(store, settings, sent, sns, client)


@pytest.fixture
async def site(
    store: Store, tmp_path: Path, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> AsyncIterator[Site]:
    """On SQLite and PostgreSQL: for the tests where a report acts on the store."""
    async with open_site(store, tmp_path, sns_key[1]) as opened:
        yield opened


@pytest.fixture(scope="module")
def sent_sqlite_file(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[OutgoingMessage]]:
    """A SQLite store holding a sent campaign, made once for the module (sending it takes
    most of a second); each test works on its own copy."""
    directory = tmp_path_factory.mktemp("sent")
    store = Store.open(f"sqlite:///{directory / 'mailer.db'}")
    try:
        sent = asyncio.run(sent_campaign(store, bounce_settings(directory), directory))
    finally:
        store.close()
    return directory / "mailer.db", sent


@pytest.fixture
async def sqlite_site(
    tmp_path: Path,
    sent_sqlite_file: tuple[Path, list[OutgoingMessage]],
    sns_key: tuple[rsa.RSAPrivateKey, bytes],
) -> AsyncIterator[Site]:
    """On SQLite only: refusals happen before the store is asked anything (kept fast)."""
    template, sent = sent_sqlite_file
    shutil.copyfile(template, tmp_path / "mailer.db")
    store = Store.open(f"sqlite:///{tmp_path / 'mailer.db'}")
    try:
        async with open_site(store, tmp_path, sns_key[1], sent=sent) as opened:
            yield opened
    finally:
        store.close()


def suppressed(store: Store) -> dict[str, str]:
    """email key -> reason of every suppression."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(suppressions.c.email_key, suppressions.c.reason))
        return {str(key): str(reason) for key, reason in rows}


# -- the generic webhook ------------------------------------------------------------------


async def test_a_signed_bounce_suppresses_and_counts_once(site: Site) -> None:
    ana = site.sent[0]
    body = json.dumps(
        {"type": "bounce", "email": ana.recipient, "message_id": ana.message_id, "permanent": True}
    ).encode()
    response = await site.post_generic(body, sign(body, SECRET.encode()))
    assert response.status_code == 200
    assert response.json() == {
        "kind": "hard_bounce",
        "disposition": "processed",
        "actions": ["suppressed"],
        "duplicate": False,
    }
    after = store_snapshot(site.store)
    again = await site.post_generic(body, sign(body, SECRET.encode()))
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert store_snapshot(site.store) == after


BAD_SIGNATURES: list[str | bytes | None] = [
    None,
    "",
    "sha256=",
    "sha256=" + "0" * 64,
    "sha1=" + "0" * 40,
    sign(b"some other body", SECRET.encode()),
    sign(b"{}", b"another secret entirely"),
    ("sha256=" + "é" * 64).encode("latin-1"),  # not ASCII: still a clean refusal
]


async def test_unsigned_or_badly_signed_bodies_get_401_and_change_nothing(
    sqlite_site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"type": "complaint", "email": sqlite_site.sent[0].recipient}).encode()
    before = store_snapshot(sqlite_site.store)
    for signature in BAD_SIGNATURES:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mailer.web"):
            response = await sqlite_site.post_generic(body, signature)
        assert response.status_code == 401, signature
        assert "event=webhook-refused route=bounce status=401" in caplog.text
        assert SECRET not in caplog.text
    assert store_snapshot(sqlite_site.store) == before


UNREADABLE_BODIES = [
    b"not json",
    b"\xff\xfe",
    b"[1, 2]",
    b'{"type": "bounce", "email": "ana@example.org"}',
    b'{"type": "unsubscribe", "email": "ana@example.org"}',
    b'{"type": "complaint", "email": "not an address"}',
    b'{"type": "complaint", "email": "a@example.org, b@example.org"}',
    b'{"type": "complaint", "email": "ana@example.org", "message_id": 7}',
]


async def test_signed_bodies_that_cannot_be_read_get_400_and_change_nothing(
    sqlite_site: Site,
) -> None:
    before = store_snapshot(sqlite_site.store)
    for body in UNREADABLE_BODIES:
        response = await sqlite_site.post_generic(body, sign(body, SECRET.encode()))
        assert response.status_code == 400, body
    assert store_snapshot(sqlite_site.store) == before


async def test_a_signed_report_about_an_address_never_mailed_changes_nothing_but_the_log(
    site: Site,
) -> None:
    """A DSN-like report naming an address not on the list acts on nobody: the report is
    recorded as left alone (the store keeps every report), no suppression."""
    body = json.dumps({"type": "bounce", "email": "stranger@example.org", "permanent": True})
    response = await site.post_generic(body.encode(), sign(body.encode(), SECRET.encode()))
    assert response.status_code == 200
    assert response.json()["actions"] == []
    assert response.json()["disposition"] == "left-alone"
    assert suppressed(site.store) == {}


async def test_bodies_over_16_kib_are_refused(sqlite_site: Site) -> None:
    body = json.dumps({"type": "complaint", "email": "a@example.org", "pad": "x" * 20_000})
    response = await sqlite_site.post_generic(body.encode(), sign(body.encode(), SECRET.encode()))
    assert response.status_code == 413


async def test_both_routes_are_404_while_their_settings_are_unset(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = bounce_settings(tmp_path, webhook_secret=None, ses_topic_arns=[])
    sns = FakeSns({})
    app = create_app(
        store=sqlite_store, signer=load_signer(settings), settings=settings, sns_fetch=sns
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SITE) as c:
        body = b'{"type": "complaint", "email": "a@example.org"}'
        assert (await c.post("/webhooks/bounce", content=body)).status_code == 404
        signed_body = {SIGNATURE_HEADER: sign(body, SECRET.encode())}
        assert (
            await c.post("/webhooks/bounce", content=body, headers=signed_body)
        ).status_code == 404
        assert (await c.post("/webhooks/ses", content=b"{}")).status_code == 404
    assert sns.asked == []


# -- SES through SNS ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_permanent_bounce_suppresses_the_recipient(
    site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes], version: str
) -> None:
    ana = site.sent[0]
    fields = signed(notification(ses_bounce(ana)), sns_key[0], version=version)
    response = await site.post_sns(fields)
    assert response.status_code == 200, response.text
    assert response.json()["actions"] == ["suppressed"]
    assert ana.recipient in suppressed(site.store)
    assert site.sns.asked == [CERT_URL]


async def test_transient_bounces_count_and_complaints_suppress(
    site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    ana, bob = site.sent[0], site.sent[1]
    soft = signed(
        notification(ses_bounce(ana, bounce_type="Transient"), message_id="n-2"), sns_key[0]
    )
    response = await site.post_sns(soft)
    assert (response.status_code, response.json()["actions"]) == (200, ["counted"])
    complaint = signed(notification(ses_complaint(bob), message_id="n-3"), sns_key[0])
    response = await site.post_sns(complaint)
    assert (response.status_code, response.json()["actions"]) == (200, ["complained"])
    assert list(suppressed(site.store)) == [bob.recipient]
    # The certificate was fetched once and cached.
    assert site.sns.asked == [CERT_URL]
    # SNS delivers at least once: the same notification again changes nothing.
    before = store_snapshot(site.store)
    assert (await site.post_sns(complaint)).json()["duplicate"] is True
    assert store_snapshot(site.store) == before


async def test_a_subscription_confirmation_is_confirmed_on_the_sns_host(
    sqlite_site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    fields = signed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "s-1",
            "Token": "2336412f37fb687f5d51e6e2425c464de",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": SUBSCRIBE_URL,
            "Timestamp": "2026-12-01T09:00:00.000Z",
            "SigningCertURL": CERT_URL,
        },
        sns_key[0],
    )
    before = store_snapshot(sqlite_site.store)
    response = await sqlite_site.post_sns(fields)
    assert response.status_code == 200
    assert sqlite_site.sns.asked == [CERT_URL, SUBSCRIBE_URL]
    assert store_snapshot(sqlite_site.store) == before
    # One whose SubscribeURL leads elsewhere is signed all right, but not visited.
    elsewhere = signed({**fields, "SubscribeURL": "https://attacker.example/confirm"}, sns_key[0])
    response = await sqlite_site.post_sns(elsewhere)
    assert response.status_code == 401
    assert sqlite_site.sns.asked == [CERT_URL, SUBSCRIBE_URL]


OFF_HOST_URLS = [
    "https://attacker.example/SimpleNotificationService.pem",
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
    "https://sns.eu-west-1.amazonaws.com.attacker.example/cert.pem",
    "https://sns.eu-west-1.amazonaws.com@attacker.example/cert.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
    "https://attacker.example/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://s3.eu-west-1.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com\\@attacker.example/cert.pem",
    "ftp://sns.eu-west-1.amazonaws.com/cert.pem",
    "",
]


async def test_a_certificate_url_off_the_sns_hosts_is_refused_before_any_fetch(
    sqlite_site: Site, other_key: tuple[rsa.RSAPrivateKey, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The forger signs with a key of their own and hosts its certificate: refused, with
    a log line, before the fetcher is asked for anything; nothing changes."""
    before = store_snapshot(sqlite_site.store)
    for cert_url in OFF_HOST_URLS:
        sqlite_site.sns.certificates[cert_url] = other_key[1]
        fields = signed(
            {**notification(ses_bounce(sqlite_site.sent[0])), "SigningCertURL": cert_url},
            other_key[0],
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mailer.web"):
            response = await sqlite_site.post_sns(fields)
        assert response.status_code == 401, cert_url
        assert "reason='SigningCertURL is not an https URL on an SNS host'" in caplog.text
    assert sqlite_site.sns.asked == []
    assert store_snapshot(sqlite_site.store) == before


async def test_forged_tampered_or_foreign_sns_messages_get_401_and_change_nothing(
    sqlite_site: Site,
    sns_key: tuple[rsa.RSAPrivateKey, bytes],
    other_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    ana = sqlite_site.sent[0]
    good = signed(notification(ses_bounce(ana)), sns_key[0])
    forged = signed(notification(ses_bounce(ana)), other_key[0])  # not the certificate's key
    tampered = {**good, "Message": json.dumps(ses_bounce(sqlite_site.sent[1]))}
    foreign_topic = signed(
        {**notification(ses_bounce(ana)), "TopicArn": "arn:aws:sns:eu-west-1:999999999999:x"},
        sns_key[0],
    )
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    version_3 = {**good, "SignatureVersion": "3"}
    not_base64 = {**good, "Signature": "%%%"}
    unknown_type = signed({**notification(ses_bounce(ana)), "Type": "Surprise"}, sns_key[0])
    before = store_snapshot(sqlite_site.store)
    for fields in (forged, tampered, foreign_topic, unsigned, version_3, not_base64, unknown_type):
        response = await sqlite_site.post_sns(fields)
        assert response.status_code == 401, fields
    for body in (b"not json", b"[]", b"{}"):
        response = await sqlite_site.client.post("/webhooks/ses", content=body)
        assert response.status_code == 401
    assert store_snapshot(sqlite_site.store) == before
    # The foreign topic was refused before its certificate was fetched.
    assert sqlite_site.sns.asked.count(CERT_URL) == 1


async def test_a_certificate_that_cannot_be_fetched_gets_503(
    sqlite_site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    sqlite_site.sns.unavailable = True
    before = store_snapshot(sqlite_site.store)
    response = await sqlite_site.post_sns(
        signed(notification(ses_bounce(sqlite_site.sent[0])), sns_key[0])
    )
    assert (response.status_code, response.headers["Retry-After"]) == (503, "60")
    assert store_snapshot(sqlite_site.store) == before


async def test_a_certificate_url_serving_no_certificate_gets_401(
    sqlite_site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    sqlite_site.sns.certificates[CERT_URL] = b"<html>not a certificate</html>"
    response = await sqlite_site.post_sns(
        signed(notification(ses_bounce(sqlite_site.sent[0])), sns_key[0])
    )
    assert response.status_code == 401


async def test_genuine_notifications_that_are_not_feedback_change_nothing(
    sqlite_site: Site, sns_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    before = store_snapshot(sqlite_site.store)
    delivery = {"notificationType": "Delivery", "mail": {"source": sqlite_site.sent[0].sender}}
    response = await sqlite_site.post_sns(
        signed(notification(delivery, message_id="d-1"), sns_key[0])
    )
    assert (response.status_code, response.json()["actions"]) == (200, [])
    not_json = signed({**notification({}), "Message": "not json"}, sns_key[0])
    assert (await sqlite_site.post_sns(not_json)).status_code == 400
    assert store_snapshot(sqlite_site.store)["suppressions"] == before["suppressions"]


# -- the default fetcher ------------------------------------------------------------------


@pytest.mark.parametrize("url", OFF_HOST_URLS)
def test_the_default_fetcher_refuses_off_host_urls_before_connecting(url: str) -> None:
    """WebhookError from the host check (a connection attempt would have failed with
    CertificateUnavailable: no test reaches the network)."""
    with pytest.raises(WebhookError) as refused:
        fetch_from_sns(url)
    assert not isinstance(refused.value, CertificateUnavailable)


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.us-gov-west-1.amazonaws.com/cert.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/cert.pem",
        "https://SNS.EU-WEST-1.AMAZONAWS.COM:443/cert.pem",
    ],
)
def test_sns_hosts_pass_the_check(url: str) -> None:
    assert check_sns_url(url, what="the URL") == url
