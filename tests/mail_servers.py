"""A private Postfix (the relay) and Dovecot (the bounce mailbox) on loopback, for tests.

Debian's packages, started from configuration written here under a fresh folder, never
the system services: Postfix with its own config_directory and queue_directory
(`postfix -c DIR start`), Dovecot with its own config file (`dovecot -F -c FILE`), both on
free loopback ports, stopped afterwards.

The domains Postfix knows:

- `dead.example.org`: a virtual mailbox domain without a single mailbox. With
  `smtpd_reject_unlisted_recipient = no` Postfix accepts any recipient there and then
  virtual(8) bounces it ("unknown user"), so Postfix itself mails a real RFC 3464 DSN to
  the envelope sender. (Routing the domain to `error:` would refuse it at RCPT instead.)
- `live.example.org`: `reader0@` to `reader9@` are mailboxes (delivered, nothing comes back).
- `lists.example.org`: `NAME@` and `NAME+ANYTHING@` (`recipient_delimiter = +`, the VERP
  addresses) for each NAME in BOX_NAMES go to NAME's Maildir, which Dovecot serves
  over IMAP and POP3 to the user `NAME@lists.example.org` with PASSWORD. A test takes a
  NAME of its own, so tests sharing the servers never see each other's mail.

Under CI=true a missing postfix or dovecot fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "bounce-box-password"
LISTS_DOMAIN = "lists.example.org"
DEAD_DOMAIN = "dead.example.org"
LIVE_DOMAIN = "live.example.org"
# virtual(8) refuses to deliver as root; Dovecot reads as the same user.
MAIL_UID = 65534
MAIL_GID = 65534
# The bounce mailboxes there are: a test takes one of its own.
BOX_NAMES = ("bounces", *(f"bounces{i}" for i in range(1, 40)))


def require_servers() -> None:
    """Skip without Postfix and Dovecot on a developer's machine; fail under CI."""
    missing = [
        name
        for name in ("postfix", "postqueue", "dovecot")
        if shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") is None
    ]
    missing += [
        f"dovecot-{name}d"
        for name in ("imap", "pop3")
        if not Path(f"/usr/lib/dovecot/{name}").exists()
    ]
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (apt-get install postfix dovecot-imapd "
    message += "dovecot-pop3d; .ci/run does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, *, deadline: float, what: str) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start listening on port {port}")
        time.sleep(0.05)


@dataclass
class MailServers:
    root: Path
    smtp_port: int
    imap_port: int
    pop3_port: int

    @property
    def postfix_config(self) -> Path:
        return self.root / "postfix"

    def maildir(self, name: str) -> Path:
        """The Maildir of `name@lists.example.org` (created on its first delivery)."""
        return self.root / "vmail" / LISTS_DOMAIN / name / "Maildir"

    def inbox_count(self, name: str) -> int:
        box = self.maildir(name)
        return sum(
            1 for sub in ("new", "cur") if (box / sub).is_dir() for _ in (box / sub).iterdir()
        )

    def folder_count(self, name: str, folder: str) -> int:
        box = self.maildir(name) / f".{folder}"
        return sum(
            1 for sub in ("new", "cur") if (box / sub).is_dir() for _ in (box / sub).iterdir()
        )

    def wait_for_mail(self, name: str, count: int, *, timeout: float = 30.0) -> None:
        """Until `name`'s inbox holds `count` messages: flush Postfix's queue meanwhile
        (a bounced message waits in the deferred queue only if something went wrong)."""
        deadline = time.monotonic() + timeout
        while self.inbox_count(name) < count:
            if time.monotonic() > deadline:
                queue = subprocess.run(
                    ["postqueue", "-c", str(self.postfix_config), "-p"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                log = (self.root / "maillog").read_text(errors="replace")[-4000:]
                raise AssertionError(
                    f"{self.inbox_count(name)} of {count} messages reached {name}'s mailbox;"
                    f"\nqueue:\n{queue.stdout}\nlog:\n{log}"
                )
            subprocess.run(
                ["postqueue", "-c", str(self.postfix_config), "-f"],
                capture_output=True,
                check=False,
            )
            time.sleep(0.1)

    def imap_url(self, name: str, folder: str = "INBOX") -> str:
        return f"imap://{name}@{LISTS_DOMAIN}@127.0.0.1:{self.imap_port}/{folder}"

    def pop3_url(self, name: str) -> str:
        return f"pop3://{name}@{LISTS_DOMAIN}@127.0.0.1:{self.pop3_port}"


def _postfix_main_cf(root: Path, smtp_port: int) -> str:
    return f"""\
compatibility_level = 3.6
config_directory = {root}/postfix
queue_directory = {root}/spool
data_directory = {root}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = mx.{LISTS_DOMAIN}
mydomain = {LISTS_DOMAIN}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# Accept any recipient of a known domain; virtual(8) then bounces the unknown ones.
smtpd_reject_unlisted_recipient = no
recipient_delimiter = +
virtual_mailbox_domains = {LISTS_DOMAIN}, {DEAD_DOMAIN}, {LIVE_DOMAIN}
virtual_mailbox_base = {root}/vmail
virtual_mailbox_maps = texthash:{root}/postfix/mailboxes
alias_maps =
alias_database =
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_GID}
virtual_minimum_uid = 1
# Nothing here leaves the machine, and no DNS is needed.
smtp_host_lookup = native
disable_vrfy_command = yes
biff = no
append_dot_mydomain = no
smtputf8_enable = no
delay_warning_time = 0
bounce_queue_lifetime = 0
maximal_queue_lifetime = 0
# Deliver at once, and flush quickly: the tests wait for the DSNs.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def _postfix_master_cf(smtp_port: int) -> str:
    services = [
        f"127.0.0.1:{smtp_port} inet n - n - - smtpd",
        "pickup    unix  n       -       n       60      1       pickup",
        "cleanup   unix  n       -       n       -       0       cleanup",
        "qmgr      unix  n       -       n       300     1       qmgr",
        "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
        "rewrite   unix  -       -       n       -       -       trivial-rewrite",
        "bounce    unix  -       -       n       -       0       bounce",
        "defer     unix  -       -       n       -       0       bounce",
        "trace     unix  -       -       n       -       0       bounce",
        "verify    unix  -       -       n       -       1       verify",
        "flush     unix  n       -       n       1000?   0       flush",
        "proxymap  unix  -       -       n       -       -       proxymap",
        "smtp      unix  -       -       n       -       -       smtp",
        "relay     unix  -       -       n       -       -       smtp",
        "showq     unix  n       -       n       -       -       showq",
        "error     unix  -       -       n       -       -       error",
        "retry     unix  -       -       n       -       -       error",
        "discard   unix  -       -       n       -       -       discard",
        "local     unix  -       n       n       -       -       local",
        "virtual   unix  -       n       n       -       -       virtual",
        "lmtp      unix  -       -       n       -       -       lmtp",
        "anvil     unix  -       -       n       -       1       anvil",
        "scache    unix  -       -       n       -       1       scache",
        "postlog   unix-dgram n  -       n       -       1       postlogd",
    ]
    return "\n".join(services) + "\n"


def _mailboxes() -> str:
    # virtual(8) allows no regexp substitution in its maps, so the names are listed; the
    # lookup strips `+ANYTHING` (recipient_delimiter) before it looks up the address.
    lines = [f"{name}@{LISTS_DOMAIN} {LISTS_DOMAIN}/{name}/Maildir/" for name in BOX_NAMES]
    lines += [f"reader{i}@{LIVE_DOMAIN} {LIVE_DOMAIN}/reader{i}/Maildir/" for i in range(10)]
    return "\n".join(lines) + "\n"


def _dovecot_conf(root: Path, imap_port: int, pop3_port: int) -> str:
    return f"""\
base_dir = {root}/dovecot-run
state_dir = {root}/dovecot-state
instance_name = mailer-test-{imap_port}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/dovecot.log
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
namespace inbox {{
  inbox = yes
  separator = .
}}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={root}/vmail/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


@contextlib.contextmanager
def mail_servers() -> Iterator[MailServers]:
    require_servers()
    # Not under pytest's tmp folder: virtual(8) and Dovecot deliver and read as MAIL_UID,
    # which must be able to reach the mail folder (pytest's are private to root).
    root = Path(tempfile.mkdtemp(prefix="mailer-mta-"))
    root.chmod(0o755)
    servers = MailServers(root, free_port(), free_port(), free_port())
    for folder in ("postfix", "spool", "data", "dovecot-state"):
        (root / folder).mkdir()
    (root / "vmail").mkdir(mode=0o755)
    os.chown(root / "vmail", MAIL_UID, MAIL_GID)
    os.chown(root / "data", *_ids("postfix"))
    config = servers.postfix_config
    (config / "main.cf").write_text(_postfix_main_cf(root, servers.smtp_port))
    (config / "master.cf").write_text(_postfix_master_cf(servers.smtp_port))
    (config / "mailboxes").write_text(_mailboxes())
    (root / "dovecot.conf").write_text(_dovecot_conf(root, servers.imap_port, servers.pop3_port))
    dovecot: subprocess.Popen[bytes] | None = None
    try:
        started = subprocess.run(
            ["postfix", "-c", str(config), "start"], check=False, capture_output=True, timeout=60
        )
        if started.returncode != 0:
            log = root / "maillog"
            raise RuntimeError(
                "postfix did not start: "
                + (log.read_text(errors="replace")[-2000:] if log.exists() else "no log")
            )
        dovecot = subprocess.Popen(
            ["dovecot", "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        wait_for_port(servers.smtp_port, deadline=deadline, what="Postfix")
        wait_for_port(servers.imap_port, deadline=deadline, what="Dovecot (IMAP)")
        wait_for_port(servers.pop3_port, deadline=deadline, what="Dovecot (POP3)")
        yield servers
    finally:
        subprocess.run(
            ["postfix", "-c", str(config), "stop"], capture_output=True, check=False, timeout=60
        )
        if dovecot is not None:
            dovecot.terminate()
            try:
                dovecot.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dovecot.kill()
                dovecot.wait()
        shutil.rmtree(root, ignore_errors=True)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


class StallingProxy:
    """A TCP proxy in front of a server that holds back the client's `nth` command
    matching `pattern` (and everything after it): the test can then kill the client at
    that exact point, e.g. after a message's outcome is committed and before it is moved.
    """

    def __init__(self, upstream_port: int, *, pattern: bytes, nth: int) -> None:
        import re
        import threading

        self.upstream_port = upstream_port
        self._pattern = re.compile(pattern)
        self._nth = nth
        self._seen = 0
        self.stalled = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        buffered = b""
        try:
            while not self.stalled.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if from_client:
                    buffered += data
                    lines, _, buffered = buffered.rpartition(b"\r\n")
                    for line in lines.split(b"\r\n") if lines else []:
                        if self._pattern.search(line):
                            self._seen += 1
                            if self._seen >= self._nth:
                                self.stalled.set()  # this command never reaches the server
                                return
                        target.sendall(line + b"\r\n")
                else:
                    target.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
