"""The exceptions mailer raises, all under one root.

    MailerError                     what the user can act on; printed by the CLI, no traceback
    ├── ConfigError                 a setting is missing or invalid (.setting)
    ├── InputError                  a file the organiser gave us is wrong (.path, .line)
    │   ├── SubscriberFileError     the subscriber CSV cannot be read at all
    │   ├── EventFileError          an event file's front matter is wrong
    │   └── TemplateError           a template does not compile or render
    ├── UnsafeValueError            text that must never reach a mail header (CR, LF, NUL, ...)
    ├── StoreError                  the database refused or is not what we expect
    │   └── NotFoundError           a list, subscriber or campaign that does not exist
    ├── CampaignError               the campaign state forbids it (or the breaker paused it)
    ├── TransportError              the relay cannot be reached or refuses us as a whole (.code)
    ├── TokenError                  an unsubscribe token is malformed, forged or of an unknown key
    └── WebhookError                a webhook request not acted on (.authenticated)
        └── CertificateUnavailable  the SNS signing certificate could not be fetched (retry)

Every class carries structured attributes rather than just a string, so that callers
(the CLI, the web app, tests) can decide what to show without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class MailerError(Exception):
    """Root of every error mailer raises on purpose; `hint` tells the user what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(MailerError, ValueError):
    """A setting is missing or invalid; `setting` is its environment name (MAILER_...)."""

    def __init__(self, message: str, *, setting: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.setting = setting


class InputError(MailerError, ValueError):
    """A user-supplied file is wrong at `path`, `line` (1-based, when known)."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = Path(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.message}"


class SubscriberFileError(InputError):
    """The subscriber CSV cannot be read at all (no header, no email column, bad encoding)."""


class EventFileError(InputError):
    """An event file's front matter is missing, malformed, or has invalid fields."""


class TemplateError(InputError):
    """A template has a syntax error, uses an undefined variable, or breaks the sandbox."""


class UnsafeValueError(MailerError, ValueError):
    """A value holds characters that could inject a header or break a line (CVE-2024-6923)."""

    def __init__(self, message: str, *, field: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


class StoreError(MailerError):
    """The database failed or holds something we did not expect."""


class NotFoundError(StoreError, LookupError):
    """A list, subscriber or campaign that does not exist."""


class CampaignError(MailerError):
    """A campaign cannot do what was asked in its current state."""

    def __init__(self, message: str, *, campaign_id: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.campaign_id = campaign_id


class TransportError(MailerError, ConnectionError):
    """The relay cannot be reached or refuses the session as a whole (`code` is the SMTP code).

    `judged_message`: the refusal came after the relay saw this message's envelope (its
    size, its recipient), so it may hold for this message only and counts as an attempt
    at it; otherwise the message was never tried and goes back untouched."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        hint: str | None = None,
        judged_message: bool = False,
    ):
        super().__init__(message, hint=hint)
        self.code = code
        self.judged_message = judged_message


class TokenError(MailerError, ValueError):
    """An unsubscribe token is malformed, tampered with, or signed by a key we do not hold."""


class WebhookError(MailerError, ValueError):
    """A relay's webhook request that is not acted on. `authenticated` False: unsigned,
    badly signed, signed by a certificate off the SNS hosts, or from a topic that is not
    ours (the web answers 401); True: genuine but not something we can read (400)."""

    def __init__(self, message: str, *, authenticated: bool = False) -> None:
        super().__init__(message)
        self.authenticated = authenticated


class CertificateUnavailable(WebhookError, ConnectionError):
    """The signing certificate (on an SNS host) could not be fetched: SNS retries later."""


def one_line_reason(exc: BaseException) -> str:
    """An exception's own one-line reason: for a failed database statement the driver's
    message (`.orig`), without the SQL and parameters SQLAlchemy appends (kilobytes of
    them, never what an organiser needs to read in a pause note or a log line)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [""])[0][:500]
