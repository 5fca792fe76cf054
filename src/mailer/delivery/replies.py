"""What an SMTP reply (or its absence) means for one message, and for the session.

Per message (one recipient per message, so one reply decides):

    2xx                         SENT
    4xx, or no reply before     DEFERRED  the engine retries later
      the end of DATA                     (code is None: the server never answered)
    5xx                         BOUNCED   a hard bounce; the address gets suppressed
    5.7.x, 5.6.x, 5.3.4, 5.2.3  FAILED    policy, content or size: the relay refused the
      (RFC 3463 enhanced code),           message, not the mailbox; suppressing is wrong
      or a bare 552
    no reply once the final     UNKNOWN   the message may have been delivered
      dot reached our kernel

Per session (decided while connecting, before any message is tried):

    no session at all: refused,  -> Outcome(DEFERRED, None, "cannot connect to HOST:PORT: ...")
      DNS, unreachable, timeout     (`cannot_connect(outcome)` is true: the relay is down or
      or hang-up before the         unreachable, so the engine may stop early)
      greeting
    4xx greeting                 -> Outcome(DEFERRED, 421, reply): up, but busy
    timeout or hang-up after the -> Outcome(DEFERRED, None, "HOST:PORT stopped answering ...")
      greeting (EHLO, STARTTLS,
      AUTH), 4xx to AUTH        -> Outcome(DEFERRED, code, reply)
    TLS certificate or handshake failure,       -> TransportError(code=...): retrying cannot
      AUTH 5xx (535), greeting 5xx, STARTTLS       help, so the engine should pause the
      or AUTH not offered, not SMTP at all,        campaign and show the hint
      MAIL FROM refused with 5xx (same sender
      for every message: a config problem),
      530 "authentication required" (MAIL/RCPT)
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TypeVar

import aiosmtplib

from mailer.errors import ConfigError, TransportError
from mailer.models import DeliveryStatus, Outcome

# RFC 3463 enhanced status code at the start of the reply text: class.subject.detail
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# Permanent refusals of *this message* (RFC 3463): 5.7.x security/policy, 5.6.x media
# (content), 5.3.4 / 5.2.3 too big. Bouncing on these would suppress a healthy mailbox.
_MESSAGE_REFUSALS = {("7", None), ("6", None), ("3", "4"), ("2", "3")}


def classify_reply(code: int, reply: str) -> DeliveryStatus:
    """The delivery status for an SMTP reply to RCPT, DATA or the final dot."""
    if 200 <= code < 300:
        return DeliveryStatus.SENT
    if 400 <= code < 500:
        return DeliveryStatus.DEFERRED
    if 500 <= code < 600:
        match = _ENHANCED.match(reply)
        if match is not None and match.group(1) == "5":
            subject, detail = match.group(2), match.group(3)
            if (subject, None) in _MESSAGE_REFUSALS or (subject, detail) in _MESSAGE_REFUSALS:
                return DeliveryStatus.FAILED
        elif match is None and code == 552:
            # "Exceeded storage allocation" with nothing more said: the message was too
            # big (or, at RCPT, too many recipients), not a dead mailbox. Suppressing the
            # address for good on that guess would lose a subscriber.
            return DeliveryStatus.FAILED
        return DeliveryStatus.BOUNCED
    # Not a valid reply code: the server is broken, which is its problem; try later.
    return DeliveryStatus.DEFERRED


AUTH_REQUIRED = 530  # RFC 4954: the relay wants AUTH first; true of every message


def login_required(code: int, reply: str, *, at_recipient: bool = False) -> TransportError:
    """530 (RFC 4954). At RCPT some relays say it for some recipients only (those outside
    their own domains), so there it counts as an attempt at that message."""
    return TransportError(
        f"the relay requires a login: {code} {reply}",
        code=code,
        judged_message=at_recipient,
        hint="Set MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD (and usually "
        "MAILER_SMTP_SECURITY=starttls: relays offer AUTH only over TLS).",
    )


def sender_refused(code: int, reply: str, sender: str) -> TransportError:
    """MAIL FROM refused for good (e.g. 530 auth required, 553 sender not allowed)."""
    return TransportError(
        f"the relay refused the sender {sender}: {code} {reply}",
        code=code,
        hint="Check MAILER_FROM_ADDRESS (or MAILER_BOUNCE_ADDRESS, whose address is the "
        "sender when it is set: the relay must accept it) and the SMTP login "
        "(MAILER_SMTP_USERNAME / MAILER_SMTP_PASSWORD).",
    )


def message_too_big(code: int, reply: str, size: int) -> TransportError:
    """MAIL FROM refused for the announced size (RFC 1870: 552, or 5.3.4 "message too big
    for system"). Every invitation of a campaign is about as big, so it is the campaign's
    problem, as a refused sender is, but not one the sender settings can fix."""
    return TransportError(
        f"the relay refuses messages of this size ({size:,} bytes): {code} {reply}",
        code=code,
        judged_message=True,  # sizes differ a little by recipient (names, links)
        hint="Make the message smaller (a shorter event text, a smaller layout or "
        "stylesheet), or ask the relay's administrator to raise its size limit.",
    )


def is_size_refusal(code: int, reply: str, *, size_announced: bool) -> bool:
    """Whether a 5xx to MAIL FROM refuses the announced size: the enhanced code says so
    (5.3.4, 5.2.3) whatever the reply code, or, without one, a bare 552 to a MAIL FROM
    that carried SIZE=. A 552 with another enhanced code (5.7.1 ...) or to a MAIL FROM
    without SIZE is a refused sender."""
    match = _ENHANCED.match(reply)
    if match is not None:
        return match.groups() in (("5", "3", "4"), ("5", "2", "3"))
    return code == 552 and size_announced


class SessionDeferred(Exception):
    """A connection could not be set up for a reason that may pass (network, 4xx)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reply)
        self.outcome = outcome


CANNOT_CONNECT = "cannot connect"


def cannot_connect(outcome: Outcome) -> bool:
    """True when no SMTP session could be opened at all (connection refused, name not
    resolved, host unreachable, no connection or no greeting within the timeout): the
    relay is down or unreachable, for every message alike."""
    return (
        outcome.status is DeliveryStatus.DEFERRED
        and outcome.code is None
        and outcome.reply.startswith(CANNOT_CONNECT)
    )


def session_failure(exc: Exception, where: str, *, connected: bool) -> Exception:
    """Map a failure to set up a session to SessionDeferred (may pass) or TransportError
    (won't). `connected`: the relay had greeted us (the failure came with EHLO, STARTTLS
    or AUTH), so it is up, whatever happened next."""
    tls = _find_cause(exc, ssl.SSLError)
    if tls is not None and not isinstance(tls, ssl.SSLEOFError):
        return TransportError(
            f"TLS with {where} failed: {tls}",
            hint="Check MAILER_SMTP_SECURITY (starttls for port 587, tls for 465) and that "
            "the relay's certificate is trusted (MAILER_SMTP_CA_FILE for a private CA).",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 100:
        if exc.code < 500:
            return SessionDeferred(Outcome(DeliveryStatus.DEFERRED, exc.code, exc.message))
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return TransportError(
                f"{where} refused the login: {exc.code} {exc.message}",
                code=exc.code,
                hint="Check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD.",
            )
        return TransportError(
            f"{where} refused the session: {exc.code} {exc.message}", code=exc.code
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # not SMTP at all on this port
        return TransportError(
            f"{where} does not answer like an SMTP server: {exc.message}",
            hint="Is MAILER_SMTP_SECURITY right? An implicit-TLS port (465) needs 'tls'.",
        )
    if isinstance(exc, OSError):  # aiosmtplib's disconnect/timeout errors are OSErrors too
        if not connected:
            reason = f"{CANNOT_CONNECT} to {where}: {exc}"
        elif isinstance(exc, TimeoutError):
            reason = f"{where} stopped answering during session setup: {exc}"
        else:
            reason = f"{where} closed the session during setup: {exc}"
        return SessionDeferred(Outcome(DeliveryStatus.DEFERRED, None, reason))
    if isinstance(exc, aiosmtplib.SMTPException):  # STARTTLS or AUTH not offered, ...
        return TransportError(f"{where}: {exc}", hint="Check MAILER_SMTP_SECURITY and credentials.")
    return exc


_E = TypeVar("_E", bound=BaseException)


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name checks always on; `ca_file` replaces the system CAs."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the CA file {ca_file}: {exc}", setting="MAILER_SMTP_CA_FILE"
        ) from exc
