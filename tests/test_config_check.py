"""`mailer config check`: the settings, a real relay, the real pages, and DNS.

The relay checks run against aiosmtpd on port 0 (plain, STARTTLS with a trustme CA,
implicit TLS, AUTH) and a port where nothing listens; the health check against the real
app under uvicorn and small http.server stand-ins; DNS against a stub resolver handing
back real dnspython records and errors. The command itself runs as a subprocess, once
failing and once all green (a small DNS server on UDP port 0 answers it there).
"""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
import uvicorn
from pydantic import SecretStr

from mailer.campaigns.doctor import (
    Finding,
    Status,
    check_dns,
    check_healthz,
    check_relay,
    run_checks,
    settings_findings,
)
from mailer.config import Settings, SmtpSecurity
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web.app import create_app
from smtp_server import SmtpTestServer, TlsFiles

REPO_ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "leftcom.org.uk"
GOOD: dict[str, Any] = {
    "base_url": f"https://lists.{DOMAIN}",
    "from_address": f"events@{DOMAIN}",
    "from_name": "Communist Workers' Organisation",
    "secret_key": SecretStr("config-check-secret-key-0123456789"),
}
PUBLISHED = {
    DOMAIN: [["v=spf1 include:_spf.relay.example.net -all"], ["google-site-verification=x"]],
    f"_dmarc.{DOMAIN}": [["v=DMARC1; p=quarantine; rua=mailto:dmarc@leftcom.org.uk"]],
    # A 2048-bit key does not fit one 255-byte string: records arrive split.
    f"s1._domainkey.{DOMAIN}": [
        ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC", "AQEAx"]
    ],
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MAILER_ variables, no .env or mailer.toml: only what each test passes."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


# -- the settings -----------------------------------------------------------------------


def test_demo_defaults_fail_every_settings_check_with_what_to_set() -> None:
    found = by_check(settings_findings(Settings()))
    assert [found[name].status for name in ("base URL", "sender", "signing key")] == [
        Status.FAIL
    ] * 3
    assert found["base URL"].line.startswith("FAIL  base URL: MAILER_BASE_URL is not set")
    assert "Set MAILER_BASE_URL to the https:// address" in found["base URL"].line
    assert "Set MAILER_FROM_ADDRESS" in found["sender"].line
    assert "Set MAILER_SECRET_KEY" in found["signing key"].line
    assert found["TLS"].line == "ok    TLS: none, and no login"
    assert all("\n" not in finding.line for finding in found.values())


def test_real_settings_pass_the_settings_checks(tls_files: TlsFiles) -> None:
    settings = Settings(
        **GOOD,
        smtp_host=f"smtp.{DOMAIN}",
        smtp_security=SmtpSecurity.STARTTLS,
        smtp_username="cwo",
        smtp_password=SecretStr("hunter2-hunter2"),
        smtp_ca_file=tls_files.ca_file,
    )
    lines = [finding.line for finding in settings_findings(settings)]
    assert lines == [
        f"ok    base URL: https://lists.{DOMAIN}",
        f'ok    sender: "Communist Workers\' Organisation" <events@{DOMAIN}>',
        "ok    signing key: MAILER_SECRET_KEY is set",
        f"ok    TLS: starttls, certificates checked against the CA file {tls_files.ca_file}"
        ", login as cwo",
    ]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"from_name": "Mailer demo"}, "MAILER_FROM_NAME is 'Mailer demo', the demo's"),
        ({"secret_key": SecretStr("short")}, "MAILER_SECRET_KEY is shorter than 16"),
        ({"secret_key": None}, "MAILER_SECRET_KEY is not set"),
        ({"smtp_username": "cwo"}, "MAILER_SMTP_USERNAME is set but MAILER_SMTP_PASSWORD"),
        (
            {"smtp_password": SecretStr("hunter2-hunter2")},
            "MAILER_SMTP_PASSWORD is set but MAILER_SMTP_USERNAME",
        ),
        (
            {"smtp_security": SmtpSecurity.TLS, "smtp_ca_file": Path("missing-ca.pem")},
            "cannot load the CA file",
        ),
    ],
)
def test_each_settings_problem_is_one_failed_line(values: dict[str, Any], says: str) -> None:
    settings = Settings(**{**GOOD, **values})
    failed = [finding for finding in settings_findings(settings) if finding.failed]
    assert len(failed) == 1
    assert says in failed[0].line
    assert "hunter2" not in failed[0].line


# -- the relay ----------------------------------------------------------------------------


def relay_settings(port: int, **values: Any) -> Settings:
    return Settings(**GOOD, smtp_host="127.0.0.1", smtp_port=port, **values)


async def test_relay_plain_session_sends_nothing(smtp_server: SmtpTestServer) -> None:
    found = await check_relay(relay_settings(smtp_server.port), wait=10, local_hostname="me")
    assert (
        found.line
        == f"ok    relay: 127.0.0.1:{smtp_server.port}: connect, EHLO, QUIT; nothing sent"
    )
    assert smtp_server.commands["QUIT"] == 1
    assert smtp_server.commands["MAIL"] == 0
    assert smtp_server.messages == []


async def test_relay_starttls_and_login(tls_files: TlsFiles) -> None:
    server = SmtpTestServer(tls=tls_files, require_starttls=True, auth=("cwo", "hunter2-hunter2"))
    async with server:
        settings = relay_settings(
            server.port,
            smtp_security=SmtpSecurity.STARTTLS,
            smtp_ca_file=tls_files.ca_file,
            smtp_username="cwo",
            smtp_password=SecretStr("hunter2-hunter2"),
        )
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.status is Status.OK, found.line
    assert found.detail.endswith("connect, EHLO, STARTTLS, AUTH as cwo, QUIT; nothing sent")
    assert server.logins == ["cwo"]
    assert server.commands["MAIL"] == 0
    assert server.messages == []


async def test_relay_implicit_tls_and_login(tls_files: TlsFiles) -> None:
    server = SmtpTestServer(tls=tls_files, implicit_tls=True, auth=("cwo", "hunter2-hunter2"))
    async with server:
        settings = relay_settings(
            server.port,
            smtp_security=SmtpSecurity.TLS,
            smtp_ca_file=tls_files.ca_file,
            smtp_username="cwo",
            smtp_password=SecretStr("hunter2-hunter2"),
        )
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.detail.endswith("TLS, EHLO, AUTH as cwo, QUIT; nothing sent"), found.line
    assert server.logins == ["cwo"]


async def test_relay_wrong_password_is_one_line_without_the_password(
    tls_files: TlsFiles,
) -> None:
    server = SmtpTestServer(tls=tls_files, auth=("cwo", "the-right-password"))
    async with server:
        settings = relay_settings(
            server.port,
            smtp_security=SmtpSecurity.STARTTLS,
            smtp_ca_file=tls_files.ca_file,
            smtp_username="cwo",
            smtp_password=SecretStr("a-wrong-password"),
        )
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(
        f"FAIL  relay: 127.0.0.1:{server.port} refused the login as cwo: 535"
    )
    assert "Check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD." in found.line
    assert "a-wrong-password" not in found.line
    assert server.logins == []


async def test_relay_certificate_not_trusted(tls_files: TlsFiles) -> None:
    """Same TLS rules as a send: without the private CA the certificate is refused."""
    async with SmtpTestServer(tls=tls_files) as server:
        settings = relay_settings(server.port, smtp_security=SmtpSecurity.STARTTLS)
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(f"FAIL  relay: TLS with 127.0.0.1:{server.port} failed: ")
    assert "certificate" in found.detail
    assert "MAILER_SMTP_CA_FILE" in found.line


async def test_relay_without_starttls(smtp_server: SmtpTestServer, tls_files: TlsFiles) -> None:
    settings = relay_settings(
        smtp_server.port, smtp_security=SmtpSecurity.STARTTLS, smtp_ca_file=tls_files.ca_file
    )
    found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(
        f"FAIL  relay: 127.0.0.1:{smtp_server.port} does not offer STARTTLS."
    )
    assert "MAILER_SMTP_SECURITY=tls" in found.line


async def test_relay_offering_no_login_before_tls(tls_files: TlsFiles) -> None:
    """Relays offer AUTH only after STARTTLS; a login over `none` cannot happen."""
    async with SmtpTestServer(tls=tls_files, auth=("cwo", "hunter2-hunter2")) as server:
        settings = relay_settings(
            server.port, smtp_username="cwo", smtp_password=SecretStr("hunter2-hunter2")
        )
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(
        f"FAIL  relay: 127.0.0.1:{server.port} does not offer a login (AUTH)"
    )
    assert "set MAILER_SMTP_SECURITY=starttls" in found.line
    assert server.logins == []


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nobody else can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_relay_where_nothing_listens_is_one_clear_line(closed_port: int) -> None:
    # An hour to wait for answers: a refused connection must not wait for any of it.
    found = await check_relay(relay_settings(closed_port), wait=3600, local_hostname="me")
    assert found.line == (
        f"FAIL  relay: cannot connect to 127.0.0.1:{closed_port}: connection refused (nothing "
        "listens there). Check MAILER_SMTP_HOST and MAILER_SMTP_PORT (is the relay running?)."
    )


async def test_relay_that_never_greets() -> None:
    """A port that accepts but stays silent (an implicit-TLS port, a firewall) waits `wait`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # the kernel completes the handshake; nobody ever speaks
        port = int(sock.getsockname()[1])
        found = await check_relay(relay_settings(port), wait=0.5, local_hostname="me")
    assert found.line.startswith(f"FAIL  relay: no answer from 127.0.0.1:{port} within 0.5s")
    assert "an implicit-TLS port (465) needs tls" in found.line


async def test_relay_tls_against_a_plain_port(
    smtp_server: SmtpTestServer, tls_files: TlsFiles
) -> None:
    settings = relay_settings(
        smtp_server.port, smtp_security=SmtpSecurity.TLS, smtp_ca_file=tls_files.ca_file
    )
    found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(f"FAIL  relay: TLS with 127.0.0.1:{smtp_server.port} failed:")
    assert "MAILER_SMTP_SECURITY (starttls for port 587, tls for 465)" in found.line


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_a_relay_off_this_machine_offering_starttls_must_be_asked_for_it() -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    async with SmtpTestServer(host=address, tls=TlsFiles.create(Path.cwd())) as server:
        settings = Settings(**GOOD, smtp_host=address, smtp_port=server.port)
        found = await check_relay(settings, wait=10, local_hostname="me")
    assert found.line.startswith(
        f"FAIL  relay: {address}:{server.port} offers STARTTLS, but MAILER_SMTP_SECURITY is none"
    )


# -- the unsubscribe pages ----------------------------------------------------------------


class UvicornThread:
    """uvicorn on a port of its own in a thread, optionally with TLS; stopped on exit."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.listener.bind((host, 0))
        self.port = int(self.listener.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.listener.close()


def mailer_app(store: Store, settings: Settings) -> Any:
    signer = TokenSigner(b"config-check-secret-key-0123456789")
    return create_app(store=store, signer=signer, settings=settings)


def test_healthz_of_the_real_app(sqlite_store: Store) -> None:
    settings = Settings(**GOOD, templates_dir=REPO_ROOT / "templates")
    with UvicornThread(mailer_app(sqlite_store, settings)) as served:
        base_url = f"http://127.0.0.1:{served.port}"
        found = check_healthz(base_url, timeout=10)
    assert found.line == f"ok    healthz: {base_url}/healthz answered 200 ok"


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `status` and `body` (set on a subclass)."""

    status = 200
    body = b""

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def stand_in() -> Iterator[Any]:
    servers = []

    def start(status: int, body: bytes) -> str:
        handler = type("Handler", (StandIn,), {"status": status, "body": body})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_healthz_when_the_database_is_down(stand_in: Any) -> None:
    base_url = stand_in(503, b"database unavailable")
    found = check_healthz(base_url, timeout=10)
    assert found.line.startswith(
        f"FAIL  healthz: {base_url}/healthz answered 503 Service Unavailable "
        "(its database does not answer)."
    )


def test_healthz_of_something_else(stand_in: Any) -> None:
    base_url = stand_in(200, b"<html>Welcome to nginx!</html>")
    found = check_healthz(base_url, timeout=10)
    assert found.status is Status.FAIL
    assert "answered 200, but not as mailer's health check does" in found.line


def test_healthz_where_nothing_listens(closed_port: int) -> None:
    found = check_healthz(f"http://127.0.0.1:{closed_port}", timeout=10)
    assert found.line.startswith(
        f"FAIL  healthz: cannot reach http://127.0.0.1:{closed_port}/healthz: connection refused"
    )


# -- DNS ----------------------------------------------------------------------------------


class StubResolver:
    """Answers from a table with real dnspython records; a name missing is NXDOMAIN."""

    def __init__(
        self, records: dict[str, list[list[str]]], *, failing: frozenset[str] = frozenset()
    ) -> None:
        self.records = records
        self.failing = failing
        self.asked: list[tuple[str, str]] = []

    def resolve(self, qname: str, rdtype: str) -> list[dns.rdata.Rdata]:
        self.asked.append((qname, rdtype))
        if qname in self.failing:
            raise dns.exception.Timeout
        if qname not in self.records:
            raise dns.resolver.NXDOMAIN
        if not self.records[qname]:
            raise dns.resolver.NoAnswer
        return [
            dns.rdata.from_text("IN", "TXT", " ".join(f'"{part}"' for part in strings))
            for strings in self.records[qname]
        ]


def test_dns_all_published() -> None:
    resolver = StubResolver(PUBLISHED)
    lines = [f.line for f in check_dns(DOMAIN, resolver=resolver, dkim_selector="s1")]
    assert lines == [
        f"ok    SPF: {DOMAIN}: v=spf1 include:_spf.relay.example.net -all",
        f"ok    DMARC: _dmarc.{DOMAIN}: p=quarantine",
        f"ok    DKIM: s1._domainkey.{DOMAIN}: rsa key published",
    ]
    assert set(resolver.asked) == {  # asked at the same time: in any order
        (DOMAIN, "TXT"),
        (f"_dmarc.{DOMAIN}", "TXT"),
        (f"s1._domainkey.{DOMAIN}", "TXT"),
    }
    assert len(resolver.asked) == 3


def test_dns_nothing_published() -> None:
    resolver = StubResolver({DOMAIN: [["google-site-verification=x"]]})
    found = by_check(check_dns(DOMAIN, resolver=resolver, dkim_selector="s1"))
    assert found["SPF"].line.startswith(f"FAIL  SPF: no SPF record (TXT v=spf1) on {DOMAIN}.")
    assert "Publish one TXT record" in found["SPF"].line
    assert found["DMARC"].line.startswith(
        f"FAIL  DMARC: no DMARC record (TXT v=DMARC1) at _dmarc.{DOMAIN}."
    )
    assert found["DKIM"].line.startswith(
        f"FAIL  DKIM: no DKIM key (TXT with p=) at s1._domainkey.{DOMAIN}."
    )


@pytest.mark.parametrize(
    ("records", "says"),
    [
        ({}, f"{DOMAIN} does not exist in DNS"),
        ({DOMAIN: []}, "no SPF record"),
        ({DOMAIN: [["v=spf1 -all"], ["v=spf1 mx -all"]]}, "has 2 SPF records"),
        ({DOMAIN: [["v=spf1 a mx +all"]]}, "ends in +all"),
        ({DOMAIN: [["v=spf1 ", "a mx all"]]}, "ends in +all"),
    ],
)
def test_dns_spf_mistakes(records: dict[str, list[list[str]]], says: str) -> None:
    found = by_check(check_dns(DOMAIN, resolver=StubResolver(records)))
    assert found["SPF"].status is Status.FAIL
    assert says in found["SPF"].line


def test_dns_dmarc_of_the_organisational_domain_covers_a_subdomain() -> None:
    resolver = StubResolver({f"_dmarc.{DOMAIN}": [["v=DMARC1; p=reject"]]})
    found = by_check(check_dns(f"news.{DOMAIN}", resolver=resolver))
    assert found["DMARC"].line == f"ok    DMARC: _dmarc.{DOMAIN}: p=reject"


def test_dns_dmarc_without_policy() -> None:
    resolver = StubResolver({f"_dmarc.{DOMAIN}": [["v=DMARC1; rua=mailto:x@leftcom.org.uk"]]})
    found = by_check(check_dns(DOMAIN, resolver=resolver))
    assert found["DMARC"].line.startswith(
        f"FAIL  DMARC: the DMARC record at _dmarc.{DOMAIN} has no p= policy."
    )


def test_dns_dkim_revoked_and_not_asked() -> None:
    resolver = StubResolver({f"old._domainkey.{DOMAIN}": [["v=DKIM1; p="]]})
    revoked = by_check(check_dns(DOMAIN, resolver=resolver, dkim_selector="old"))["DKIM"]
    assert revoked.line.startswith(
        f"FAIL  DKIM: the DKIM key at old._domainkey.{DOMAIN} is revoked"
    )
    not_asked = by_check(check_dns(DOMAIN, resolver=resolver))["DKIM"]
    assert not_asked.status is Status.SKIP
    assert not not_asked.failed
    assert "--dkim-selector NAME" in not_asked.line


def test_dns_failure_is_not_reported_as_a_missing_record() -> None:
    resolver = StubResolver(PUBLISHED, failing=frozenset({DOMAIN}))
    found = by_check(check_dns(DOMAIN, resolver=resolver, dkim_selector="s1"))
    assert found["SPF"].line.startswith(f"FAIL  SPF: the DNS lookup of {DOMAIN} failed:")
    assert found["DMARC"].status is Status.OK  # one failed lookup does not hide the others
    assert found["DKIM"].status is Status.OK


async def test_reserved_from_domain_is_not_looked_up(closed_port: int) -> None:
    resolver = StubResolver(PUBLISHED)
    settings = Settings(**{**GOOD, "from_address": "events@lists.example.org"})
    settings = settings.model_copy(
        update={"smtp_port": closed_port, "base_url": f"http://127.0.0.1:{closed_port}"}
    )
    found = by_check(await run_checks(settings, resolver=resolver, wait=10, local_hostname="me"))
    assert [found[name].status for name in ("SPF", "DMARC", "DKIM")] == [Status.SKIP] * 3
    assert resolver.asked == []


async def test_run_checks_in_order(smtp_server: SmtpTestServer, stand_in: Any) -> None:
    settings = Settings(**GOOD, smtp_port=smtp_server.port)
    settings = settings.model_copy(update={"base_url": stand_in(200, b"ok")})
    findings = await run_checks(
        settings, resolver=StubResolver(PUBLISHED), dkim_selector="s1", wait=10, local_hostname="me"
    )
    assert [(f.check, f.status) for f in findings] == [
        ("base URL", Status.FAIL),  # the stand-in is on this machine
        ("sender", Status.OK),
        ("signing key", Status.OK),
        ("TLS", Status.OK),
        ("relay", Status.OK),
        ("healthz", Status.OK),
        ("SPF", Status.OK),
        ("DMARC", Status.OK),
        ("DKIM", Status.OK),
    ]


# -- the command ----------------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mailer", "config", "check", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_demo_defaults_fail_with_one_line_each(tmp_path: Path, closed_port: int) -> None:
    result = run_cli(
        ["--timeout", "10"],
        tmp_path,
        MAILER_SMTP_PORT=str(closed_port),
        MAILER_BASE_URL=f"http://127.0.0.1:{closed_port}",
    )
    assert result.returncode == 1
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:9]] == [
        "FAIL  base URL",
        "FAIL  sender",
        "FAIL  signing key",
        "ok    TLS",
        "FAIL  relay",
        "FAIL  healthz",
        "skip  SPF",
        "skip  DMARC",
        "skip  DKIM",
    ]
    assert f"cannot connect to 127.0.0.1:{closed_port}: connection refused" in lines[4]
    assert lines[9:] == ["5 check(s) failed: fix them before sending to real people."]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--dkim-selector", "s1; rm"], "--dkim-selector"),
        (["--dns-server", "dns.google"], "--dns-server"),
        (["--dns-server", "127.0.0.1:99999"], "--dns-server"),
    ],
)
def test_cli_bad_options(tmp_path: Path, args: list[str], says: str) -> None:
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


class TinyDns(socketserver.BaseRequestHandler):
    """Answers TXT questions from PUBLISHED over UDP; other names are NXDOMAIN."""

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if name not in PUBLISHED:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            texts = [" ".join(f'"{part}"' for part in strings) for strings in PUBLISHED[name]]
            response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", "TXT", texts))
        sock.sendto(response.to_wire(), self.client_address)


@pytest.fixture
def dns_port() -> Iterator[int]:
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), TinyDns)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_cli_all_green(tmp_path: Path, sqlite_store: Store, dns_port: int) -> None:
    """A real configuration passes: HTTPS pages on an address off loopback, a relay with
    STARTTLS and a login, DNS answered by a server the command is pointed at."""
    import trustme

    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback for the pages")
    ca = trustme.CA()
    cert = ca.issue_cert(address, "127.0.0.1", "localhost")
    ca_file, pem = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    smtp_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(smtp_context)
    tls = TlsFiles(ca_file=ca_file, server_context=smtp_context)

    settings = Settings(**GOOD, templates_dir=REPO_ROOT / "templates")
    app = mailer_app(sqlite_store, settings)
    relay = SmtpTestServer(tls=tls, require_starttls=True, auth=("cwo", "hunter2-hunter2"))
    with (
        UvicornThread(app, host=address, ssl_certfile=str(pem), ssl_keyfile=str(pem)) as pages,
        relay,
    ):
        base_url = f"https://{address}:{pages.port}"
        result = run_cli(
            ["--dkim-selector", "s1", "--dns-server", f"127.0.0.1:{dns_port}", "--timeout", "10"],
            tmp_path,
            MAILER_BASE_URL=base_url,
            MAILER_FROM_ADDRESS=f"events@{DOMAIN}",
            MAILER_FROM_NAME="Communist Workers' Organisation",
            MAILER_SECRET_KEY="config-check-secret-key-0123456789",
            MAILER_SMTP_HOST="127.0.0.1",
            MAILER_SMTP_PORT=str(relay.port),
            MAILER_SMTP_SECURITY="starttls",
            MAILER_SMTP_USERNAME="cwo",
            MAILER_SMTP_PASSWORD="hunter2-hunter2",
            MAILER_SMTP_CA_FILE=str(ca_file),
            SSL_CERT_FILE=str(ca_file),  # the pages' certificate, as a public CA would vouch
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Ready for a real send."
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "ok    base URL",
        "ok    sender",
        "ok    signing key",
        "ok    TLS",
        "ok    relay",
        "ok    healthz",
        "ok    SPF",
        "ok    DMARC",
        "ok    DKIM",
    ]
    assert f"ok    healthz: {base_url}/healthz answered 200 ok" in lines
    assert "hunter2" not in result.stdout + result.stderr
    assert relay.logins == ["cwo"]
    assert relay.messages == []
