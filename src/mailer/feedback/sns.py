"""Amazon SES bounce and complaint notifications, delivered by SNS: verify, then read.

An SNS message is JSON signed with the RSA key of a certificate that SNS names by URL
(`SigningCertURL`). Verifying it (AWS: "Verifying the signatures of Amazon SNS messages"):

1. the certificate URL must be https on an SNS host, `sns.<region>.amazonaws.com`
   (`.com.cn` in China): anything else is refused before any connection, or anyone could
   sign with a key of their own and host its certificate;
2. the certificate is fetched (over verified TLS, no redirects) and cached by URL;
3. the signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA, PKCS#1 v1.5) is
   checked over the canonical string of the message's fields.

That proves SNS sent it, not that it is about our mail: anyone can create a topic in
their own AWS account and subscribe our endpoint. So the topic must also be one of ours
(MAILER_SES_TOPIC_ARNS); a genuine message from any other topic is refused the same way.

A `SubscriptionConfirmation` from one of our topics is confirmed at once by fetching its
SubscribeURL, which must be on an SNS host too: the organiser subscribes the endpoint in
the AWS console and nothing else is needed. (The alternative, logging the URL for the
organiser to open, would put its confirmation token in the log.)

The notification itself (`Message`, JSON) says Bounce (Permanent -> HARD_BOUNCE;
Transient or Undetermined -> SOFT_BOUNCE) or Complaint (COMPLAINT); a Delivery or
anything else is OTHER. The VERP token, when we sent with one, is in `mail.source`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.errors import CertificateUnavailable, WebhookError
from mailer.feedback.classify import OwnAddresses, tagged_token
from mailer.feedback.mime import addresses, message_id
from mailer.models import Feedback, FeedbackKind

Fetch = Callable[[str], bytes]
"""GET an https URL on an SNS host, the body (a certificate, or a confirmation answer)."""

_SNS_NETLOC = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?(?::443)?")
_MAX_FETCH_BYTES = 64 * 1024  # a PEM certificate is about 2 KiB
_FETCH_TIMEOUT = 10.0
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SNS's default; SHA-1 here is SNS's choice, not ours
    "2": hashes.SHA256,
}
_MAX_DIAGNOSTIC = 500


def check_sns_url(url: str, *, what: str) -> str:
    """`url` if it is https on an SNS host (no user, no other port); WebhookError if not.
    The netloc as a whole must match, so `sns.x.amazonaws.com@evil.example` and
    `sns.x.amazonaws.com.evil.example` are refused."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not _SNS_NETLOC.fullmatch(parts.netloc.lower()):
        raise WebhookError(f"{what} is not an https URL on an SNS host")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the SNS hosts after the check: none is followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_from_sns(url: str) -> bytes:
    """The default `Fetch`: the host check again (whoever calls it), verified TLS, no
    redirects, at most 64 KiB, 10 s."""
    check_sns_url(url, what="the URL")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context()), _NoRedirects()
    )
    try:
        with opener.open(url, timeout=_FETCH_TIMEOUT) as response:
            body: bytes = response.read(_MAX_FETCH_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CertificateUnavailable(f"fetching from SNS failed: {exc}") from exc
    if len(body) > _MAX_FETCH_BYTES:
        raise CertificateUnavailable("the SNS answer is larger than 64 KiB")
    return body


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message from one of our topics."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    subscribe_url: str | None


class SnsVerifier:
    """Checks SNS messages: fields, topic, certificate URL, signature. Certificates are
    cached by URL (SNS rotates them rarely), at most `max_certificates`."""

    def __init__(
        self, fetch: Fetch, *, topic_arns: Collection[str], max_certificates: int = 16
    ) -> None:
        self._fetch = fetch
        self._topics = frozenset(topic_arns)
        self._max = max_certificates
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, body: bytes) -> SnsMessage:
        """The message, or WebhookError saying why not (never acted on)."""
        fields = _json_object(body)
        kind = _text(fields, "Type")
        signed = _SIGNED_FIELDS.get(kind)
        if signed is None:
            raise WebhookError("not an SNS message type we know")
        topic = _text(fields, "TopicArn")
        if topic not in self._topics:
            raise WebhookError("a topic that is not in MAILER_SES_TOPIC_ARNS")
        algorithm = _HASHES.get(str(fields.get("SignatureVersion")))
        if algorithm is None:
            raise WebhookError("an SNS SignatureVersion other than 1 or 2")
        cert_url = check_sns_url(_text(fields, "SigningCertURL"), what="SigningCertURL")
        try:
            signature = base64.b64decode(_text(fields, "Signature"), validate=True)
        except binascii.Error as exc:
            raise WebhookError("the signature is not base64") from exc
        canonical = "".join(
            f"{name}\n{fields[name]}\n"
            for name in signed
            if name in fields and (name != "Subject" or fields[name] is not None)
        )
        try:
            self._key(cert_url).verify(
                signature, canonical.encode("utf-8"), padding.PKCS1v15(), algorithm()
            )
        except InvalidSignature as exc:
            raise WebhookError("the SNS signature does not verify") from exc
        subscribe_url = fields.get("SubscribeURL")
        return SnsMessage(
            type=kind,
            message_id=_text(fields, "MessageId"),
            topic_arn=topic,
            message=_text(fields, "Message"),
            subscribe_url=subscribe_url if isinstance(subscribe_url, str) else None,
        )

    def confirm(self, message: SnsMessage) -> None:
        """Confirm a verified SubscriptionConfirmation: GET its SubscribeURL (SNS hosts
        only)."""
        url = check_sns_url(message.subscribe_url or "", what="SubscribeURL")
        self._fetch(url)

    def _key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            cached = self._keys.get(url)
        if cached is not None:
            return cached
        pem = self._fetch(url)  # CertificateUnavailable passes through: SNS retries
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise WebhookError("SigningCertURL does not serve a PEM certificate") from exc
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookError("the SNS certificate's key is not RSA")
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > self._max:
                self._keys.popitem(last=False)
        return key


def ses_feedback(message: SnsMessage, *, own: OwnAddresses) -> Feedback:
    """What an SES notification (the verified SNS message's `Message`) says."""
    notification = _json_object(message.message.encode("utf-8"), authenticated=True)
    kind_name = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail")
    mail = mail if isinstance(mail, dict) else {}
    source = mail.get("source")
    verp_token = tagged_token([source], own.bounce) if isinstance(source, str) else None
    sent_id = _sent_message_id(mail)
    if kind_name == "Bounce":
        bounce = _object(notification, "bounce")
        entries = _entries(bounce, "bouncedRecipients")
        kind = (
            FeedbackKind.HARD_BOUNCE
            if bounce.get("bounceType") == "Permanent"
            else FeedbackKind.SOFT_BOUNCE  # Transient, or Undetermined: let repeats decide
        )
        first = entries[0] if entries else {}
        status = first.get("status")
        diagnostic = first.get("diagnosticCode")
        return Feedback(
            kind=kind,
            recipients=_addresses(entries),
            verp_token=verp_token,
            message_id=sent_id,
            status=status if isinstance(status, str) else None,
            diagnostic=diagnostic[:_MAX_DIAGNOSTIC] if isinstance(diagnostic, str) else None,
            unsubscribe_token=None,
            source="ses",
        )
    if kind_name == "Complaint":
        complaint = _object(notification, "complaint")
        feedback_type = complaint.get("complaintFeedbackType")
        return Feedback(
            kind=FeedbackKind.OTHER if feedback_type == "not-spam" else FeedbackKind.COMPLAINT,
            recipients=_addresses(_entries(complaint, "complainedRecipients")),
            verp_token=verp_token,
            message_id=sent_id,
            status=None,
            diagnostic=f"complaintFeedbackType: {feedback_type}" if feedback_type else None,
            unsubscribe_token=None,
            source="ses",
        )
    return Feedback(
        kind=FeedbackKind.OTHER,
        recipients=(),
        verp_token=None,
        message_id=None,
        status=None,
        diagnostic=f"an SES {kind_name} notification" if isinstance(kind_name, str) else None,
        unsubscribe_token=None,
        source="ses",
    )


def _json_object(body: bytes, *, authenticated: bool = False) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookError("the body is not JSON", authenticated=authenticated) from exc
    if not isinstance(value, dict):
        raise WebhookError("the body is not a JSON object", authenticated=authenticated)
    return value


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise WebhookError(f"the SNS message has no {name}")
    return value


def _object(notification: dict[str, Any], name: str) -> dict[str, Any]:
    value = notification.get(name)
    if not isinstance(value, dict):
        raise WebhookError(f"the SES notification has no {name}", authenticated=True)
    return value


def _entries(section: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = section.get(name)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _addresses(entries: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(addresses([str(e.get("emailAddress", "")) for e in entries])))


def _sent_message_id(mail: dict[str, Any]) -> str | None:
    """Our Message-ID (SES's own `messageId` is its id, not the header)."""
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        return message_id(common["messageId"])
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else []:
        if (
            isinstance(header, dict)
            and str(header.get("name", "")).lower() == "message-id"
            and isinstance(header.get("value"), str)
        ):
            return message_id(header["value"])
    return None
