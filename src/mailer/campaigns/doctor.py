"""`mailer config check`: is this configuration ready to send to real people?

Each check gives one finding, one line: `ok`, `FAIL` with what to fix, or `skip`.

    settings   base URL, sender (the preflight rules), signing key, TLS and credentials
    relay      connect, EHLO, STARTTLS when configured, AUTH when credentials are set, QUIT;
               nothing is sent (no MAIL FROM)
    healthz    GET BASE_URL/healthz answers 200 "ok" (`mailer serve` and its database)
    DNS        SPF (TXT v=spf1 on the From domain), DMARC (TXT on _dmarc.DOMAIN or a
               parent), DKIM (TXT on SELECTOR._domainkey.DOMAIN) when a selector is named

The network checks run concurrently, each waiting at most `wait` seconds for an answer.
The DNS resolver is a parameter, so tests (and `--dns-server`) can choose whom to ask.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import aiosmtplib

from mailer.config import Settings, SmtpSecurity
from mailer.delivery.replies import tls_context
from mailer.delivery.smtp import log_in
from mailer.errors import ConfigError
from mailer.preflight import is_local_host, real_send_problems, reserved_domain

__all__ = [
    "Finding",
    "Status",
    "TxtResolver",
    "check_dns",
    "check_healthz",
    "check_relay",
    "check_relays",
    "run_checks",
    "settings_findings",
    "system_resolver",
]

DEMO_FROM_NAME = "Mailer demo"
MIN_KEY_CHARS = 16  # what the signer requires (shorter keys are refused when signing)


class Status(enum.StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check; `fix` says what to do when it failed."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    @property
    def line(self) -> str:
        detail = self.detail
        if self.fix:
            detail = f"{detail.rstrip('.')}. {self.fix}"
        return f"{self.status.value:<4}  {self.check}: {detail}"


def _ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def _fail(check: str, detail: str, fix: str | None = None) -> Finding:
    return Finding(check, Status.FAIL, detail, fix)


class TxtResolver(Protocol):
    """What the DNS checks need of a resolver; `dns.resolver.Resolver` is one.

    `resolve` returns TXT rdata (objects with `.strings`) or raises dnspython's
    NXDOMAIN / NoAnswer / Timeout / NoNameservers (any `dns.exception.DNSException`).
    """

    def resolve(self, qname: str, rdtype: str) -> Iterable[Any]: ...


def system_resolver(
    *, timeout: float, nameserver: str | None = None, port: int = 53
) -> TxtResolver:
    """dnspython's resolver: the system's (/etc/resolv.conf) or the one `nameserver` names."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.port = port  # first: the nameservers setter takes the port in force
        resolver.nameservers = [nameserver]
    resolver.lifetime = timeout
    return resolver


# -- settings ---------------------------------------------------------------------------


def settings_findings(settings: Settings) -> list[Finding]:
    """The checks that read only the settings: base URL, sender, signing key, TLS."""
    problems = {problem.setting: problem for problem in real_send_problems(settings)}
    findings = []
    base_url = problems.get("MAILER_BASE_URL")
    if base_url is None:
        findings.append(_ok("base URL", settings.base_url))
    else:
        findings.append(_fail("base URL", base_url.message, base_url.hint))
    sender = problems.get("MAILER_FROM_ADDRESS")
    if sender is not None:
        findings.append(_fail("sender", sender.message, sender.hint))
    elif settings.from_name.strip() in ("", DEMO_FROM_NAME):
        findings.append(
            _fail(
                "sender",
                f"MAILER_FROM_NAME is {settings.from_name!r}, the demo's.",
                "Set MAILER_FROM_NAME to your organisation's name.",
            )
        )
    else:
        findings.append(_ok("sender", f'"{settings.from_name}" <{settings.from_address}>'))
    findings.append(_signing_key(settings))
    findings.append(_tls_settings(settings))
    return findings


def _signing_key(settings: Settings) -> Finding:
    secret = settings.secret_key.get_secret_value().strip() if settings.secret_key else ""
    if not secret:
        return _fail(
            "signing key",
            "MAILER_SECRET_KEY is not set: unsubscribe links need a key that every mailer "
            "process (send, worker, serve) shares and that never changes.",
            "Set MAILER_SECRET_KEY to the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` and keep it.",
        )
    if len(secret.encode("utf-8")) < MIN_KEY_CHARS:
        return _fail(
            "signing key",
            f"MAILER_SECRET_KEY is shorter than {MIN_KEY_CHARS} characters.",
            "Use a long random value: "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
        )
    fallbacks = len(settings.secret_key_fallbacks)
    also = f", {fallbacks} old key(s) still accepted" if fallbacks else ""
    return _ok("signing key", f"MAILER_SECRET_KEY is set{also}")


def _tls_settings(settings: Settings) -> Finding:
    username, password = settings.smtp_username, settings.smtp_password
    has_password = password is not None and bool(password.get_secret_value())
    if bool(username) != has_password:
        given, missing = (
            ("MAILER_SMTP_USERNAME", "MAILER_SMTP_PASSWORD")
            if username
            else ("MAILER_SMTP_PASSWORD", "MAILER_SMTP_USERNAME")
        )
        return _fail(
            "TLS",
            f"{given} is set but {missing} is not: mailer logs in only with both.",
            f"Set {missing} (or unset {given} if the relay needs no login).",
        )
    security = settings.smtp_security
    local = is_local_host(settings.smtp_host)
    if security is SmtpSecurity.NONE:
        if has_password and not local:  # config.py refuses this already; never say ok
            return _fail(
                "TLS",
                f"MAILER_SMTP_SECURITY is none: the password would cross to "
                f"{settings.smtp_host} in clear.",
                "Set MAILER_SMTP_SECURITY=starttls (port 587) or tls (port 465).",
            )
        if has_password:
            return _ok("TLS", "none; the password crosses only this machine")
        return _ok("TLS", "none, and no login")
    try:
        tls_context(settings.smtp_ca_file)
    except ConfigError as exc:
        return _fail("TLS", exc.message, "Fix or unset MAILER_SMTP_CA_FILE.")
    trust = f"CA file {settings.smtp_ca_file}" if settings.smtp_ca_file else "system CAs"
    login = f", login as {username}" if username else ""
    return _ok("TLS", f"{security.value}, certificates checked against the {trust}{login}")


# -- the relay ----------------------------------------------------------------------------


async def check_relay(
    settings: Settings, *, wait: float, local_hostname: str | None = None
) -> Finding:
    """Open a session as a send would (same TLS settings and CA file), log in, QUIT.

    `wait` bounds the connect and each reply, in seconds."""
    host, port, security = settings.smtp_host, settings.smtp_port, settings.smtp_security
    where = f"{host}:{port}"
    try:
        context = tls_context(settings.smtp_ca_file) if security is not SmtpSecurity.NONE else None
    except ConfigError as exc:
        return _fail("relay", exc.message, "Fix or unset MAILER_SMTP_CA_FILE.")
    if local_hostname is None:
        local_hostname = await asyncio.to_thread(socket.getfqdn)  # may consult DNS: off loop
    smtp = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=local_hostname,
        timeout=wait,
        use_tls=security is SmtpSecurity.TLS,
        start_tls=False,  # done by hand below, so a failure names its step
        tls_context=context,
    )
    username = settings.smtp_username
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    steps: list[str] = []
    step = "connect"
    offers_starttls = False
    try:
        await smtp.connect()
        steps.append("TLS" if security is SmtpSecurity.TLS else "connect")
        step = "EHLO"
        await smtp.ehlo()
        steps.append("EHLO")
        offers_starttls = smtp.supports_extension("starttls")
        if security is SmtpSecurity.STARTTLS:
            step = "STARTTLS"
            await smtp.starttls()
            await smtp.ehlo()  # the extensions offered over TLS may differ
            steps.append("STARTTLS")
        if username and password:
            step = "AUTH"
            await log_in(smtp, username, password)  # as the sender will: one try
            steps.append(f"AUTH as {username}")
        step = "QUIT"
        await smtp.quit()
        steps.append("QUIT")
    except (aiosmtplib.SMTPException, OSError) as exc:
        return _relay_failure(exc, where=where, step=step, settings=settings, wait=wait)
    finally:
        smtp.close()
    if security is SmtpSecurity.NONE and offers_starttls and not is_local_host(host):
        return _fail(
            "relay",
            f"{where} offers STARTTLS, but MAILER_SMTP_SECURITY is none: messages would "
            "cross the network in clear.",
            "Set MAILER_SMTP_SECURITY=starttls.",
        )
    return _ok("relay", f"{where}: {', '.join(steps)}; nothing sent")


_HINT_SECURITY = (
    "Check MAILER_SMTP_SECURITY (starttls for port 587, tls for 465) and, for a private "
    "CA, MAILER_SMTP_CA_FILE."
)
_HINT_ADDRESS = "Check MAILER_SMTP_HOST and MAILER_SMTP_PORT (is the relay running?)."
_HINT_LOGIN = "Check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD."
_HINT_CONNECT_TIMEOUT = (
    "Check MAILER_SMTP_HOST and MAILER_SMTP_PORT (a firewall?), and MAILER_SMTP_SECURITY: "
    "an implicit-TLS port (465) needs tls."
)


def _relay_failure(
    exc: BaseException, *, where: str, step: str, settings: Settings, wait: float
) -> Finding:
    tls = _find_cause(exc, ssl.SSLError)
    if tls is not None and not isinstance(tls, ssl.SSLEOFError):
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return _fail("relay", f"TLS with {where} failed: {reason}.", _HINT_SECURITY)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _fail(
            "relay",
            f"{where} refused the login as {settings.smtp_username}: {exc.code} {exc.message}.",
            _HINT_LOGIN,
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        # Silence from the start: a firewall dropping packets, or a TLS port (465) waiting
        # for a handshake while we wait for its greeting.
        hint = _HINT_CONNECT_TIMEOUT if step == "connect" else None
        return _fail("relay", f"no answer from {where} within {wait:g}s ({step}).", hint)
    if isinstance(exc, aiosmtplib.SMTPConnectError) or (
        isinstance(exc, OSError) and step == "connect"
    ):
        return _fail("relay", f"cannot connect to {where}: {_socket_reason(exc)}.", _HINT_ADDRESS)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return _fail("relay", f"{where} closed the connection during {step}.", _HINT_SECURITY)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 100:  # not an SMTP reply at all
            return _fail("relay", f"{where} does not answer like an SMTP server.", _HINT_SECURITY)
        return _fail("relay", f"{where} answered {step} with {exc.code} {exc.message}.")
    if step == "STARTTLS":
        return _fail(
            "relay",
            f"{where} does not offer STARTTLS.",
            "Set MAILER_SMTP_SECURITY=tls if it is an implicit-TLS port (465).",
        )
    if step == "AUTH":
        return _fail(
            "relay",
            f"{where} does not offer a login (AUTH) mailer can use: {exc}.",
            "Relays offer AUTH only over TLS: set MAILER_SMTP_SECURITY=starttls or tls; "
            "or unset MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD.",
        )
    return _fail("relay", f"{where} failed at {step}: {exc}.", _HINT_SECURITY)


def _socket_reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while isinstance(cause, aiosmtplib.SMTPException):  # it wraps the socket's own error
        cause = cause.__cause__ or cause.__context__
    cause = cause or exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(cause, socket.gaierror):
        return "host not found"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(cause)


_E = TypeVar("_E", bound=BaseException)


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# -- the unsubscribe pages ----------------------------------------------------------------


def check_healthz(base_url: str, *, timeout: float) -> Finding:
    """GET BASE_URL/healthz: `mailer serve` answers 200 "ok" when its database does."""
    url = f"{base_url}/healthz"
    # The scheme is http(s): Settings refuses any other base URL.
    request = urllib.request.Request(url, headers={"User-Agent": "mailer-config-check"})  # noqa: S310
    hint = "Is `mailer serve` running and reachable at MAILER_BASE_URL?"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, body = int(response.status), bytes(response.read(64))
    except urllib.error.HTTPError as exc:
        why = " (its database does not answer)" if exc.code == 503 else ""
        return _fail("healthz", f"{url} answered {exc.code} {exc.reason}{why}.", hint)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return _fail(
                "healthz",
                f"{url}: the certificate is not trusted ({reason.verify_message}).",
                "Serve MAILER_BASE_URL with a certificate from a public CA: mail clients "
                "will not open the link otherwise.",
            )
        if isinstance(reason, TimeoutError):
            return _fail("healthz", f"no answer from {url} within {timeout:g}s.", hint)
        if isinstance(reason, BaseException):
            return _fail("healthz", f"cannot reach {url}: {_socket_reason(reason)}.", hint)
        return _fail("healthz", f"cannot reach {url}: {reason}.", hint)
    except TimeoutError:
        return _fail("healthz", f"no answer from {url} within {timeout:g}s.", hint)
    except OSError as exc:
        return _fail("healthz", f"cannot reach {url}: {_socket_reason(exc)}.", hint)
    if status != 200 or body.strip() != b"ok":
        return _fail(
            "healthz",
            f"{url} answered {status}, but not as mailer's health check does.",
            "Does MAILER_BASE_URL lead to `mailer serve`?",
        )
    return _ok("healthz", f"{url} answered 200 ok")


# -- DNS ----------------------------------------------------------------------------------


class _LookupFailed(Exception):
    """The resolver could not answer (timeout, no name servers), as opposed to 'no record'."""


def _txt_records(resolver: TxtResolver, name: str) -> list[str] | None:
    """The TXT strings at `name` (each record's strings joined); None if the name does not exist."""
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoAnswer:
        return []
    except dns.exception.DNSException as exc:
        raise _LookupFailed(f"the DNS lookup of {name} failed: {exc}") from exc
    records = []
    for rdata in answer:
        strings: Iterable[bytes] = getattr(rdata, "strings", ())
        records.append(b"".join(strings).decode("utf-8", "replace"))
    return records


def _tags(record: str) -> dict[str, str]:
    """`k=v; k=v` tag lists (DKIM, DMARC), keys in lower case."""
    tags = {}
    for part in record.split(";"):
        key, equals, value = part.partition("=")
        if equals:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _check_spf(resolver: TxtResolver, domain: str) -> Finding:
    records = _txt_records(resolver, domain)
    if records is None:
        return _fail(
            "SPF",
            f"{domain} does not exist in DNS.",
            "Check MAILER_FROM_ADDRESS: its domain must be one you control.",
        )
    spf = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    publish = (
        f'Publish one TXT record on {domain} such as "v=spf1 include:<your relay> -all" '
        "(your relay's documentation names the include)."
    )
    if not spf:
        return _fail("SPF", f"no SPF record (TXT v=spf1) on {domain}.", publish)
    if len(spf) > 1:
        return _fail(
            "SPF",
            f"{domain} has {len(spf)} SPF records; receivers treat that as an error (RFC 7208).",
            "Merge them into one.",
        )
    terms = spf[0].lower().split()
    if "+all" in terms or "all" in terms:
        return _fail(
            "SPF",
            f"the SPF record on {domain} ends in +all: it lets anyone send as {domain}.",
            "End it with -all (or ~all).",
        )
    return _ok("SPF", f"{domain}: {_shorten(spf[0])}")


def _check_dmarc(resolver: TxtResolver, domain: str) -> Finding:
    # Receivers fall back to the organisational domain (RFC 7489 6.6.3); without the
    # public suffix list, walking up to two labels finds it for every ordinary domain.
    labels = domain.split(".")
    candidates = [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]
    for candidate in candidates:
        name = f"_dmarc.{candidate}"
        records = _txt_records(resolver, name) or []
        dmarc = [r for r in records if r.replace(" ", "").upper().startswith("V=DMARC1")]
        if len(dmarc) > 1:
            return _fail(
                "DMARC",
                f"{name} has {len(dmarc)} DMARC records; receivers then apply none.",
                "Keep one.",
            )
        if dmarc:
            policy = _tags(dmarc[0]).get("p")
            if not policy:
                return _fail(
                    "DMARC", f"the DMARC record at {name} has no p= policy.", 'Add "p=none".'
                )
            return _ok("DMARC", f"{name}: p={policy}")
    return _fail(
        "DMARC",
        f"no DMARC record (TXT v=DMARC1) at _dmarc.{domain}.",
        f'Publish TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}" there: Gmail and Yahoo '
        "require DMARC of bulk senders.",
    )


def _check_dkim(resolver: TxtResolver, domain: str, selector: str | None) -> Finding:
    if selector is None:
        return Finding(
            "DKIM",
            Status.SKIP,
            "no selector named; pass --dkim-selector NAME (the s= of the DKIM-Signature "
            "your relay adds) to check its key.",
        )
    name = f"{selector}._domainkey.{domain}"
    records = _txt_records(resolver, name) or []
    keys = [_tags(record) for record in records]
    keys = [tags for tags in keys if "p" in tags]
    if not keys:
        return _fail(
            "DKIM",
            f"no DKIM key (TXT with p=) at {name}.",
            "Check the selector, and publish the public key your relay signs with there.",
        )
    if not keys[0]["p"]:
        return _fail(
            "DKIM",
            f"the DKIM key at {name} is revoked (empty p=).",
            "Publish the current key, or name the selector in use.",
        )
    return _ok("DKIM", f"{name}: {keys[0].get('k', 'rsa')} key published")


def check_dns(
    domain: str, *, resolver: TxtResolver, dkim_selector: str | None = None
) -> list[Finding]:
    """SPF, DMARC and (with a selector) DKIM for the From domain; one finding each."""
    checks: list[tuple[str, Callable[[], Finding]]] = [
        ("SPF", lambda: _check_spf(resolver, domain)),
        ("DMARC", lambda: _check_dmarc(resolver, domain)),
        ("DKIM", lambda: _check_dkim(resolver, domain, dkim_selector)),
    ]

    def run_one(check: str, run: Callable[[], Finding]) -> Finding:
        try:
            return run()
        except _LookupFailed as exc:
            return _fail(check, f"{exc}.", "Check this machine's DNS, or --dns-server.")

    # At the same time: with an unreachable name server each lookup waits its whole lifetime.
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        futures = [pool.submit(run_one, check, run) for check, run in checks]
        return [future.result() for future in futures]


def _shorten(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the bounce mailbox -------------------------------------------------------------------


def check_bounce_mailbox(settings: Settings) -> Finding | None:
    """Log in to MAILER_BOUNCE_MAILBOX (and leave at once); None when no bounce handling
    is configured at all. A VERP address with nothing reading it is a failure: the
    bounces would pile up unread while the list never gets cleaned."""
    from mailer.campaigns.feedback import open_bounce_mailbox
    from mailer.errors import MailerError

    if settings.bounce_mailbox is None:
        if settings.bounce_address is None:
            return None
        return _fail(
            "bounce mailbox",
            f"bounces go to {settings.bounce_address} but MAILER_BOUNCE_MAILBOX is not set, "
            "so nothing reads them",
            "Set MAILER_BOUNCE_MAILBOX to the mailbox that address delivers to.",
        )
    try:
        open_bounce_mailbox(settings).close()
    except MailerError as exc:
        return _fail("bounce mailbox", str(exc), exc.hint)
    return _ok("bounce mailbox", f"{_mailbox_name(settings)} opened")


def _mailbox_name(settings: Settings) -> str:
    from mailer.feedback.mailbox import parse_mailbox

    return parse_mailbox(settings.bounce_mailbox or "", home=settings.home).describe()


# -- all of it ----------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    resolver: TxtResolver | None = None,
    dkim_selector: str | None = None,
    wait: float = 10.0,
    local_hostname: str | None = None,
) -> list[Finding]:
    """Every check, in a fixed order; the network ones run at the same time, each waiting
    at most `wait` seconds for an answer."""
    findings = settings_findings(settings)
    domain = settings.from_address.rpartition("@")[2].rstrip(".").lower()
    dns_usable = bool(domain) and "@" in settings.from_address and not reserved_domain(domain)

    async def dns_findings() -> list[Finding]:
        if not dns_usable:
            why = "MAILER_FROM_ADDRESS has no real domain to look up"
            return [Finding(name, Status.SKIP, why) for name in ("SPF", "DMARC", "DKIM")]
        chosen = resolver
        if chosen is None:
            import dns.exception

            try:
                chosen = system_resolver(timeout=wait)
            except dns.exception.DNSException as exc:
                return [_fail("DNS", f"no DNS resolver configured: {exc}.")]
        return await asyncio.to_thread(
            check_dns, domain, resolver=chosen, dkim_selector=dkim_selector
        )

    relays, healthz, dns_results, bounces = await asyncio.gather(
        check_relays(settings, wait=wait, local_hostname=local_hostname),
        asyncio.to_thread(check_healthz, settings.base_url, timeout=wait),
        dns_findings(),
        asyncio.to_thread(check_bounce_mailbox, settings),
    )
    return [*findings, *relays, healthz, *dns_results, *([bounces] if bounces else [])]


async def check_relays(
    settings: Settings, *, wait: float, local_hostname: str | None = None
) -> list[Finding]:
    """The single relay, or with MAILER_RELAYS each relay (issue 15) as a send would use
    it, named in its finding (`relay main`)."""
    if not settings.relays:
        return [await check_relay(settings, wait=wait, local_hostname=local_hostname)]
    each = [
        settings.model_copy(
            update={
                "smtp_host": relay.host,
                "smtp_port": relay.port,
                "smtp_security": relay.security,
                "smtp_username": relay.username,
                "smtp_password": relay.password,
            }
        )
        for relay in settings.relays
    ]
    found = await asyncio.gather(
        *(check_relay(one, wait=wait, local_hostname=local_hostname) for one in each)
    )
    return [
        replace(finding, check=f"relay {relay.name}", fix=_relay_fix(finding.fix, relay.name))
        for relay, finding in zip(settings.relays, found, strict=True)
    ]


# The single relay's settings named in a fix, and what the same thing is called for one
# relay of MAILER_RELAYS (its fields there); longest first, as some contain others.
_RELAY_FIELDS = (
    (
        "MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
        "its username and password (or password_env)",
    ),
    ("MAILER_SMTP_HOST and MAILER_SMTP_PORT", "its host and port"),
    ("MAILER_SMTP_SECURITY=", "its security = "),
    ("MAILER_SMTP_SECURITY", "its security"),
    ("MAILER_SMTP_USERNAME", "its username"),
    ("MAILER_SMTP_PASSWORD", "its password"),
)


def _relay_fix(fix: str | None, name: str) -> str | None:
    """A fix written for the single relay, said of relay `name` in MAILER_RELAYS (whose
    MAILER_SMTP_* settings a send does not use)."""
    if fix is None or "MAILER_SMTP_" not in fix:
        return fix
    for single, relay in _RELAY_FIELDS:
        fix = fix.replace(single, relay)
    return f"In MAILER_RELAYS, relay {name}: {fix[0].lower()}{fix[1:]}"
