"""The bounce mailbox: IMAP (imaplib), POP3 (poplib) or a local Maildir (mailbox), one interface.

`MAILER_BOUNCE_MAILBOX` names it: `imaps://USER@HOST[:PORT]/FOLDER`, `pop3s://USER@HOST[:PORT]`
or `maildir:/PATH`; plain `imap://` and `pop3://` are accepted only on this machine, where
the password cannot be read on the way. A user name holding `@` is written as is (the last
`@` ends it) or as `%40`.

A reader hands out messages one at a time and is told afterwards what became of each
(`done`): the caller commits the outcome first, so a crash in between leaves the message in
place, to be read again and recognised (see campaigns.feedback). Messages are read without
marking them seen (IMAP `BODY.PEEK`): mail left for a person still shows as unread. POP3
has no folders: handled messages are deleted (at QUIT, so a crash deletes nothing), the
rest stay. Only the first MAX_MESSAGE_BYTES of a message are read: reports put what we
need first (RFC 3464 / 5965), and a 50 MB message must not fill memory.
"""

from __future__ import annotations

import contextlib
import enum
import imaplib
import mailbox
import poplib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from mailer.errors import ConfigError, MailerError
from mailer.models import Disposition

SETTING = "MAILER_BOUNCE_MAILBOX"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# POP3 reads a long message with TOP: headers plus this many body lines.
_TOP_LINES = 20_000
# POP3 keeps this much of one line (see _Pop3).
_POP3_LINE_KEPT = 64 * 1024
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_FOLDER = re.compile(r"[A-Za-z0-9 ._/-]{1,200}")


class MailboxError(MailerError):
    """The bounce mailbox could not be reached, logged into or read."""


class MailboxProtocol(enum.StrEnum):
    """How the mailbox is reached."""

    IMAP = "imap"
    POP3 = "pop3"
    MAILDIR = "maildir"


@dataclass(frozen=True, slots=True)
class MailboxLocation:
    protocol: MailboxProtocol
    tls: bool = False
    host: str = ""
    port: int = 0
    user: str = ""
    folder: str = "INBOX"
    path: Path | None = None

    def describe(self) -> str:
        """The mailbox for messages and logs (no password is ever part of it)."""
        if self.protocol is MailboxProtocol.MAILDIR:
            return f"maildir:{self.path}"
        scheme = f"{self.protocol.value}{'s' if self.tls else ''}"
        folder = f"/{self.folder}" if self.protocol is MailboxProtocol.IMAP else ""
        return f"{scheme}://{self.user}@{self.host}:{self.port}{folder}"


_DEFAULT_PORTS = {
    (MailboxProtocol.IMAP, True): 993,
    (MailboxProtocol.IMAP, False): 143,
    (MailboxProtocol.POP3, True): 995,
    (MailboxProtocol.POP3, False): 110,
}


def parse_mailbox(url: str, *, home: Path) -> MailboxLocation:
    """MAILER_BOUNCE_MAILBOX as a location; ConfigError naming the setting if it is not one."""
    if url.startswith("maildir:"):
        raw = url.removeprefix("maildir:").removeprefix("//")
        if not raw:
            raise _bad("maildir: needs a folder, e.g. maildir:/var/mail/bounces")
        path = Path(raw).expanduser()
        return MailboxLocation(
            MailboxProtocol.MAILDIR, path=path if path.is_absolute() else home / path
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(f"not a mailbox URL: {exc}") from exc
    scheme = parts.scheme.lower()
    protocols = {"imaps": MailboxProtocol.IMAP, "imap": MailboxProtocol.IMAP}
    protocols |= {"pop3s": MailboxProtocol.POP3, "pop3": MailboxProtocol.POP3}
    if scheme not in protocols:
        raise _bad(f"unknown scheme {scheme!r}: use imaps://, pop3s:// or maildir:")
    protocol, tls = protocols[scheme], scheme.endswith("s")
    # urlsplit splits user from host at the last '@', so 'bounces@example.org@imap.host'
    # keeps the whole address as the user.
    netloc = parts.netloc
    user_part, at, _ = netloc.rpartition("@")
    host = parts.hostname or ""
    if not at or not user_part or not host:
        raise _bad("needs USER@HOST, e.g. imaps://bounces@mail.example.org/INBOX")
    if ":" in user_part:
        raise ConfigError(
            f"{SETTING}: a password in the URL would be shown and logged",
            setting=SETTING,
            hint="Put it in MAILER_BOUNCE_PASSWORD instead.",
        )
    if not tls and host not in _LOOPBACK:
        raise _bad(
            f"{scheme}:// would send the password in clear to {host}; use {scheme}s://",
        )
    folder = "INBOX"
    if protocol is MailboxProtocol.IMAP and parts.path.strip("/"):
        folder = unquote(parts.path.strip("/"))
        if not _FOLDER.fullmatch(folder):
            raise _bad(f"folder {folder!r}: use letters, digits, spaces and . _ / -")
    return MailboxLocation(
        protocol,
        tls=tls,
        host=host,
        port=port or _DEFAULT_PORTS[protocol, tls],
        user=unquote(user_part),
        folder=folder,
    )


def _bad(message: str) -> ConfigError:
    return ConfigError(
        f"{SETTING}: {message}",
        setting=SETTING,
        hint="e.g. imaps://bounces@mail.example.org/INBOX, pop3s://bounces@mail.example.org "
        "or maildir:/var/mail/bounces",
    )


@dataclass(frozen=True, slots=True)
class MailboxMessage:
    ref: str
    """The reader's handle: an IMAP UID, a POP3 message number, a Maildir key."""
    data: bytes
    """The message, or its first MAX_MESSAGE_BYTES."""
    size: int
    """Its whole size as the mailbox reports it."""


class Mailbox(Protocol):
    def messages(self) -> Iterator[MailboxMessage]:
        """Every message now in the mailbox, read one at a time."""
        ...

    def done(self, message: MailboxMessage, disposition: Disposition) -> None:
        """Call only once the message's outcome is committed."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Folders:
    processed: str = "Processed"
    """Where handled messages go; "" deletes them (POP3 always does)."""
    unhandled: str | None = None
    """Where messages for a person go; None leaves them where they are."""


def open_mailbox(
    location: MailboxLocation,
    *,
    password: str | None,
    folders: Folders,
    timeout: float = 30.0,
) -> Mailbox:
    """A connected, logged-in reader; MailboxError saying what failed, never the password."""
    for setting, name in (
        ("MAILER_BOUNCE_PROCESSED_FOLDER", folders.processed),
        ("MAILER_BOUNCE_UNHANDLED_FOLDER", folders.unhandled),
    ):
        if name and not _FOLDER.fullmatch(name):
            raise ConfigError(
                f"{setting}: {name!r}: use letters, digits, spaces and . _ / -", setting=setting
            )
    if location.protocol is MailboxProtocol.MAILDIR:
        return MaildirReader(location, folders)
    if password is None:
        raise ConfigError(
            f"{SETTING} is {location.describe()} but MAILER_BOUNCE_PASSWORD is not set",
            setting="MAILER_BOUNCE_PASSWORD",
        )
    if location.protocol is MailboxProtocol.IMAP:
        return ImapReader(location, password=password, folders=folders, timeout=timeout)
    return Pop3Reader(location, password=password, timeout=timeout)


def _network_error(location: MailboxLocation, exc: BaseException) -> MailboxError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return MailboxError(
        f"bounce mailbox {location.describe()}: {reason}",
        hint=f"Check {SETTING}, MAILER_BOUNCE_PASSWORD and that the server is reachable.",
    )


# -- IMAP -----------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapReader:
    def __init__(
        self, location: MailboxLocation, *, password: str, folders: Folders, timeout: float
    ) -> None:
        self.location = location
        self.folders = folders
        self._made: set[str] = set()
        try:
            if location.tls:
                context = ssl.create_default_context()
                self._imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    location.host, location.port, ssl_context=context, timeout=timeout
                )
            else:
                self._imap = imaplib.IMAP4(location.host, location.port, timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _network_error(location, exc) from exc
        try:
            self._imap.login(location.user, password)
            status, detail = self._imap.select(_quoted(location.folder))
            if status != "OK":
                raise imaplib.IMAP4.error(f"cannot open folder {location.folder!r}: {detail}")
        except (OSError, imaplib.IMAP4.error) as exc:
            self._shutdown()
            raise _network_error(location, exc) from exc
        capabilities = self._capabilities()
        self._can_move = "MOVE" in capabilities
        self._uidplus = "UIDPLUS" in capabilities

    def _capabilities(self) -> set[str]:
        # Servers announce more once logged in (Dovecot: MOVE, UIDPLUS); imaplib keeps
        # the list it got before the login, so ask again.
        try:
            status, data = self._imap.capability()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _network_error(self.location, exc) from exc
        words = b" ".join(item for item in data if isinstance(item, bytes)).upper().split()
        return {word.decode("ascii", "replace") for word in words} if status == "OK" else set()

    def _command(self, *args: str) -> list[object]:
        try:
            status, data = self._imap.uid(*args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _network_error(self.location, exc) from exc
        if status != "OK":
            raise MailboxError(f"bounce mailbox {self.location.describe()}: {args[0]} {data!r}")
        return list(data)

    def messages(self) -> Iterator[MailboxMessage]:
        found = self._command("SEARCH", "UNDELETED")
        uids = b" ".join(item for item in found if isinstance(item, bytes)).split()
        for uid in (u.decode("ascii") for u in uids):
            size = self._size(uid)
            if size is None:
                continue  # gone meanwhile (another reader)
            part = (
                "BODY.PEEK[]"
                if size <= MAX_MESSAGE_BYTES
                else f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>"
            )
            data = b"".join(
                item[1]
                for item in self._command("FETCH", uid, f"({part})")
                if isinstance(item, tuple) and isinstance(item[1], bytes)
            )
            yield MailboxMessage(ref=uid, data=data, size=size)

    def _size(self, uid: str) -> int | None:
        for item in self._command("FETCH", uid, "(RFC822.SIZE)"):
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and (match := re.search(rb"RFC822\.SIZE (\d+)", line)):
                return int(match.group(1))
        return None

    def done(self, message: MailboxMessage, disposition: Disposition) -> None:
        target = (
            self.folders.processed
            if disposition is Disposition.PROCESSED
            else self.folders.unhandled
        )
        if target is None or target == self.location.folder:
            return
        if not target:
            self._delete(message.ref)
            return
        self._ensure_folder(target)
        if self._can_move:
            self._command("MOVE", message.ref, _quoted(target))
        else:
            self._command("COPY", message.ref, _quoted(target))
            self._delete(message.ref)

    def _delete(self, uid: str) -> None:
        self._command("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        try:
            if self._uidplus:
                self._command("EXPUNGE", uid)
            else:
                self._imap.expunge()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _network_error(self.location, exc) from exc

    def _ensure_folder(self, name: str) -> None:
        if name in self._made:
            return
        try:
            status, listed = self._imap.list('""', _quoted(name))
            if status == "OK" and not any(item for item in listed if item):
                self._imap.create(_quoted(name))
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _network_error(self.location, exc) from exc
        self._made.add(name)

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._imap.close()
        self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._imap.logout()


# -- POP3 -----------------------------------------------------------------------------------


class _Pop3(poplib.POP3):
    """poplib refuses any line over 2,048 octets ('line too long'), and the session is then
    out of step. One message with a longer line (HTML mail often has them: RFC 5322's 998
    is widely ignored, and Postfix and Dovecot pass them on) would end every fetch at that
    message for good, and POP3 deletes nothing from a session that did not QUIT. So a line
    is read to its end, its first 64 KiB kept: classify reads only a message's start."""

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(_POP3_LINE_KEPT)
        octets = len(line)
        rest = line
        while not rest.endswith(b"\n"):  # EOF, or a line longer than we keep
            if not rest:
                raise poplib.error_proto("-ERR EOF")
            rest = self.file.readline(_POP3_LINE_KEPT)
            octets += len(rest)
        if line.endswith(b"\r\n"):
            return line[:-2], octets
        return (line[:-1] if line.endswith(b"\n") else line), octets


class _Pop3Ssl(_Pop3, poplib.POP3_SSL):
    pass


class Pop3Reader:
    def __init__(self, location: MailboxLocation, *, password: str, timeout: float) -> None:
        self.location = location
        try:
            if location.tls:
                context = ssl.create_default_context()
                self._pop: poplib.POP3 = _Pop3Ssl(
                    location.host, location.port, timeout=timeout, context=context
                )
            else:
                self._pop = _Pop3(location.host, location.port, timeout=timeout)
        except (OSError, poplib.error_proto) as exc:
            raise _network_error(location, exc) from exc
        try:
            self._pop.user(location.user)
            self._pop.pass_(password)
        except (OSError, poplib.error_proto) as exc:
            self._abandon()
            raise _network_error(location, exc) from exc

    def messages(self) -> Iterator[MailboxMessage]:
        try:
            _, listing, _ = self._pop.list()
        except (OSError, poplib.error_proto) as exc:
            raise _network_error(self.location, exc) from exc
        for line in listing:
            number, size_text = line.decode("ascii").split()[:2]
            size = int(size_text)
            try:
                if size <= MAX_MESSAGE_BYTES:
                    _, lines, _ = self._pop.retr(int(number))
                else:
                    _, lines, _ = self._pop.top(int(number), _TOP_LINES)
            except (OSError, poplib.error_proto) as exc:
                raise _network_error(self.location, exc) from exc
            data = b"\r\n".join(lines) + b"\r\n"
            yield MailboxMessage(ref=number, data=data[:MAX_MESSAGE_BYTES], size=size)

    def done(self, message: MailboxMessage, disposition: Disposition) -> None:
        # POP3 has no folders: what a person should read stays; the rest is deleted when
        # the session ends normally (QUIT), never before.
        if disposition is Disposition.PROCESSED:
            try:
                self._pop.dele(int(message.ref))
            except (OSError, poplib.error_proto) as exc:
                raise _network_error(self.location, exc) from exc

    def close(self) -> None:
        try:
            self._pop.quit()
        except (OSError, poplib.error_proto):
            self._abandon()

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self._pop.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._pop.close()


# -- Maildir --------------------------------------------------------------------------------


class MaildirReader:
    def __init__(self, location: MailboxLocation, folders: Folders) -> None:
        assert location.path is not None
        self.location = location
        self.folders = folders
        if not (location.path / "cur").is_dir() or not (location.path / "new").is_dir():
            raise ConfigError(
                f"{SETTING}: {location.path} is not a Maildir (no cur/ and new/ in it)",
                setting=SETTING,
            )
        self._box = mailbox.Maildir(location.path, factory=None, create=False)

    def messages(self) -> Iterator[MailboxMessage]:
        for key in sorted(self._box.keys()):
            try:
                with self._box.get_file(key) as handle:
                    # The size first: read(MAX_MESSAGE_BYTES) allocates 4 MB for every
                    # message, 3x the cost of reading a bounce of a few KiB.
                    handle.seek(0, 2)
                    size = handle.tell()
                    handle.seek(0)
                    data = handle.read(min(size, MAX_MESSAGE_BYTES))
            except (KeyError, FileNotFoundError):
                continue  # taken by another reader meanwhile
            yield MailboxMessage(ref=key, data=data, size=size)

    def done(self, message: MailboxMessage, disposition: Disposition) -> None:
        target = (
            self.folders.processed
            if disposition is Disposition.PROCESSED
            else self.folders.unhandled
        )
        if target is None:
            return
        if target:
            folder = self._folder(target)
            with self._box.get_file(message.ref) as handle:
                # The whole file, not the bytes read (which may have been cut short).
                folder.add(handle.read())
        # Copied first, removed after: a crash in between leaves a copy, never nothing.
        with contextlib.suppress(KeyError, FileNotFoundError):
            self._box.remove(message.ref)

    def _folder(self, name: str) -> mailbox.Maildir:
        try:
            return self._box.get_folder(name)
        except mailbox.NoSuchMailboxError:
            return self._box.add_folder(name)

    def close(self) -> None:
        self._box.close()
