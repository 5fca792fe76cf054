"""Settings: one class, loaded once at the edge (CLI, server start) and passed down.

Precedence, highest first:
  1. values passed explicitly (CLI options)
  2. environment variables `MAILER_*`
  3. a `.env` file in the home folder
  4. `mailer.toml` in the home folder (or the file named by MAILER_CONFIG_FILE)
  5. the embedded defaults below, which run the demo with zero configuration

The home folder is where mailer keeps its data, whatever folder a command is run from:
MAILER_HOME, else the nearest folder upwards from the current one that holds mailer.toml,
a `.env` naming a MAILER_ setting, or the demo's var/mailer.db, else the current folder.
Relative paths in the settings (the SQLite file, var_dir, templates_dir, the CA file, the
config file) are taken relative to it, so `mailer` run from a subfolder finds the same
store instead of silently starting an empty one there.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailer.errors import ConfigError
from mailer.models import SenderIdentity
from mailer.safety import find_unsafe

ENV_PREFIX = "MAILER_"
CONFIG_FILE = "mailer.toml"
DOTENV_FILE = ".env"
# `make demo` / `mailer demo` with no configuration leaves only this behind.
DEMO_STORE = Path("var") / "mailer.db"
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{12}")
MAILBOX_FOLDER = re.compile(r"[A-Za-z0-9 ._/-]{0,200}")
FEEDBACK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A .env that names no MAILER_ setting belongs to some other tool: it marks no home.
_MAILER_LINE = re.compile(r"^\s*(?:export\s+)?MAILER_\w+\s*=", re.MULTILINE)
_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
# The config file of the load in progress: settings_customise_sources is a classmethod
# called from inside Settings(), so the file found with the home reaches it this way.
_config_file: ContextVar[Path | None] = ContextVar("mailer_config_file", default=None)


@dataclass(frozen=True, slots=True)
class Home:
    """The folder mailer keeps its data in, and why that one (for `mailer config show`)."""

    path: Path
    reason: str
    config_file: Path


def find_home(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Home:
    """MAILER_HOME, else the nearest marked folder upwards from `cwd`, else `cwd`."""
    environ = os.environ if environ is None else environ
    try:
        start = (cwd or Path.cwd()).resolve()
    except OSError as exc:  # the current folder was deleted under us
        raise ConfigError(f"cannot tell the current folder: {exc.strerror}") from exc
    given = environ.get("MAILER_HOME", "").strip()
    if given:
        path = (start / Path(given).expanduser()).resolve()
        if not path.is_dir():
            raise ConfigError(
                f"MAILER_HOME: no such folder {path}",
                setting="MAILER_HOME",
                hint="Point MAILER_HOME at the folder holding mailer.toml, .env or var/.",
            )
        reason = "MAILER_HOME is set"
    else:
        path, reason = _nearest_marked_folder(start)
    named = environ.get("MAILER_CONFIG_FILE", "").strip()
    if not named:
        return Home(path, reason, path / CONFIG_FILE)
    config_file = (path / Path(named).expanduser()).resolve()
    if not config_file.is_file():
        raise ConfigError(
            f"MAILER_CONFIG_FILE: no such file {config_file}",
            setting="MAILER_CONFIG_FILE",
            hint=f"A relative name is taken from the home folder {path}.",
        )
    return Home(path, reason, config_file)


def _nearest_marked_folder(start: Path) -> tuple[Path, str]:
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder, f"nearest folder holding {CONFIG_FILE} (searched up from {start})"
        if _names_a_setting(folder / DOTENV_FILE):
            return folder, f"nearest folder holding {DOTENV_FILE} (searched up from {start})"
        if (folder / DEMO_STORE).is_file():
            return folder, f"nearest folder holding {DEMO_STORE} (searched up from {start})"
    return start, (
        f"the current folder: no {CONFIG_FILE}, {DOTENV_FILE} or {DEMO_STORE} here or above"
    )


def _names_a_setting(dotenv: Path) -> bool:
    try:
        return _MAILER_LINE.search(dotenv.read_text(encoding="utf-8", errors="replace")) is not None
    except OSError:  # absent, a folder, or unreadable: not ours to judge here
        return False


class SmtpSecurity(enum.StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
# A relay's name goes into the ledger and the report: one short printable token.
RELAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")


class RelaySettings(BaseModel):
    """One relay of MAILER_RELAYS (issue 15): where, how, how fast, and its share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.NONE
    name: str = ""
    """Shown in the ledger and the report; default HOST:PORT."""
    username: str | None = None
    password: SecretStr | None = None
    """In the file itself; or name an environment variable in password_env."""
    password_env: str | None = None
    concurrency: int = Field(default=4, ge=1, le=256)
    rate_limit: float | None = Field(default=None, gt=0)
    """Messages per second through this relay (MAILER_RATE_LIMIT still bounds the sum)."""
    daily_limit: int | None = Field(default=None, ge=1)
    """Messages in any 24 hours through this relay; once reached its share goes elsewhere."""
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    """Its share of a campaign's messages, relative to the other relays' weights."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if find_unsafe(self.host) is not None or any(c.isspace() for c in self.host):
            raise ValueError("host: must be a host name or address, without spaces")
        if not self.name:
            object.__setattr__(self, "name", f"{self.host}:{self.port}")
        if not RELAY_NAME.fullmatch(self.name):
            raise ValueError(
                "name: use up to 100 letters, digits and . _ : @ - (it goes in the report)"
            )
        if self.password_env is not None:
            if not ENV_NAME.fullmatch(self.password_env):
                raise ValueError("password_env: must name an environment variable")
            value = os.environ.get(self.password_env)
            if not value:
                raise ValueError(
                    f"password_env: the environment variable {self.password_env} is not set"
                )
            # (Validated again as an instance inside Settings: the password read from the
            # variable the first time is then already here.)
            if self.password is not None and self.password.get_secret_value() != value:
                raise ValueError("password and password_env: give one of them, not both")
            object.__setattr__(self, "password", SecretStr(value))
        if (
            self.security is SmtpSecurity.NONE
            and self.password is not None
            and self.host not in _LOOPBACK_HOSTS
        ):
            raise ValueError(
                f"security: none would send the password in clear to {self.host}; "
                "use starttls or tls"
            )
        return self

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        password = ", password **********" if self.password is not None else ""
        limits = "".join(
            (
                f", concurrency {self.concurrency}",
                f", rate {self.rate_limit:g}/s" if self.rate_limit else "",
                f", daily {self.daily_limit}" if self.daily_limit else "",
                f", weight {self.weight:g}",
            )
        )
        return (
            f"{self.name} = {user}{self.host}:{self.port} ({self.security.value}{password}{limits})"
        )


def _describe_relay(index: int, raw: object) -> str:
    """`relay 2 (smtp-b.example.org)`: how an error names the relay it is about."""
    host = raw.get("host") if isinstance(raw, dict) else None
    return f"relay {index + 1}" + (f" ({host})" if isinstance(host, str) and host else "")


class Settings(BaseSettings):
    """Every setting mailer reads; environment names are `MAILER_` + the field name in capitals."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # Where relative paths below are anchored; load_settings sets it (see find_home).
    home: Path = Field(default_factory=Path.cwd)
    database_url: str = "sqlite:///var/mailer.db"
    var_dir: Path = Path("var")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_ca_file: Path | None = None
    messages_per_connection: int | None = Field(default=None, ge=1)
    # Several relays (issue 15): `[[relays]]` tables in mailer.toml, or a JSON list in
    # MAILER_RELAYS. Empty: the single relay above, exactly as before.
    relays: list[RelaySettings] = Field(default_factory=list)

    from_address: str = "invitations@mailer.localhost"
    from_name: str = "Mailer demo"
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    # Shown in every message's footer: bulk-mail rules (and CAN-SPAM) want the sender's
    # postal address in each message. One line, e.g. "CWO, BM CWO, London WC1N 3XX".
    postal_address: str | None = Field(default=None, max_length=300)
    # Gmail's Feedback-ID SenderId (Postmaster Tools groups complaints by it): each
    # message then says "Feedback-ID: CAMPAIGN:LIST:SENDER". Unset, no Feedback-ID.
    feedback_id_sender: str | None = None

    secret_key: SecretStr | None = None
    secret_key_fallbacks: list[SecretStr] = Field(default_factory=list)
    # Ids (as `mailer config show` prints them) of keys that must stop verifying links,
    # e.g. after a leak; every other key that ever signed a link keeps verifying.
    retired_key_ids: list[str] = Field(default_factory=list)

    concurrency: int = Field(default=4, ge=1, le=256)
    rate_limit: float = Field(default=50.0, gt=0)
    hourly_limit: int | None = Field(default=None, ge=1)
    daily_limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    retry_delay: float = Field(default=60.0, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_horizon: float = Field(default=600.0, ge=0)
    breaker_window: int = Field(default=50, ge=5)
    breaker_threshold: float = Field(default=0.8, gt=0, le=1)
    breaker_cooldown: float = Field(default=60.0, gt=0)
    breaker_cooldown_max: float = Field(default=3600.0, gt=0)

    templates_dir: Path = Path("templates")
    timezone: str = "Europe/London"
    grace_period: float = Field(default=6 * 3600, ge=0)
    poll_interval: float = Field(default=2.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)

    # The dashboard (issue 13): a session ends after this many seconds unused, and this
    # many seconds after signing in whatever happens (30 minutes; 12 hours).
    admin_idle_timeout: float = Field(default=30 * 60, gt=0)
    admin_session_lifetime: float = Field(default=12 * 3600, gt=0)

    # Bounces (issue 12). With a bounce address, each message's envelope sender is
    # `LOCAL+TOKEN@DOMAIN` (VERP), naming its ledger row; unset, it is the From address.
    bounce_address: str | None = None
    # Where bounces, complaints and mailed unsubscribes arrive: imaps://USER@HOST/INBOX,
    # pop3s://USER@HOST, maildir:/PATH (imap:// and pop3:// on this machine only).
    bounce_mailbox: str | None = None
    bounce_password: SecretStr | None = None
    bounce_poll_interval: float = Field(default=300.0, gt=0)
    # A hard bounce suppresses at once; soft bounces once this many within the days.
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_days: float = Field(default=30.0, gt=0)
    # IMAP/Maildir: where handled messages go ("": deleted; POP3 always deletes them), and
    # where messages for a person go (unset: left where they are).
    bounce_processed_folder: str = "Processed"
    bounce_unhandled_folder: str | None = None
    # Relays that report by HTTP (issue 12). POST /webhooks/bounce needs a body signed with
    # this secret (HMAC-SHA256); unset, the route does not exist (404).
    webhook_secret: SecretStr | None = None
    # POST /webhooks/ses acts only on SNS messages from these topics (JSON list of ARNs):
    # SNS signs any topic's messages, an attacker's own too. Empty: the route is 404.
    ses_topic_arns: list[str] = Field(default_factory=list)

    # How load_settings found the home (None for settings built directly, as tests do).
    _found: Home | None = PrivateAttr(default=None)

    @field_validator(
        "from_address", "reply_to", "unsubscribe_mailto", "from_name", "postal_address"
    )
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and (problem := find_unsafe(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("relays", mode="before")
    @classmethod
    def _relays(cls, value: object) -> object:
        """Each relay validated on its own, so an error names the relay and the field."""
        if not isinstance(value, list):
            return value  # pydantic says it must be a list
        relays: list[RelaySettings] = []
        for index, raw in enumerate(value):
            where = _describe_relay(index, raw)
            if isinstance(raw, RelaySettings):
                relays.append(raw)
                continue
            try:
                relays.append(RelaySettings.model_validate(raw))
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(part) for part in error.get("loc", ()))
                message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
                raise ValueError(f"{where}: {field + ': ' if field else ''}{message}") from None
        names = [relay.name for relay in relays]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(
                    f"{_describe_relay(index, value[index])}: name: {name} is used twice "
                    "(give each relay its own name)"
                )
        return relays

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain or find_unsafe(value) is not None:
            raise ValueError("must be a plain address, e.g. bounces@lists.example.org")
        if "+" in local or any(c in value for c in ' <>"(),;:[]'):
            # The token goes after the first '+': a '+' of its own would hide it.
            raise ValueError("must be a plain address without '+' (the token goes after it)")
        return value

    @field_validator("bounce_mailbox")
    @classmethod
    def _bounce_mailbox(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("imaps://", "imap://", "pop3s://", "pop3://", "maildir:")):
            raise ValueError(
                "must start with imaps://, pop3s:// or maildir: "
                "(imap:// and pop3:// only on this machine)"
            )
        if find_unsafe(value) is not None or " " in value:
            raise ValueError("must be one line without spaces")
        return value

    @field_validator("bounce_processed_folder", "bounce_unhandled_folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        # IMAP names outside ASCII need modified UTF-7, and quotes or wildcards would
        # change the command: plain names only.
        if value is not None and not MAILBOX_FOLDER.fullmatch(value):
            raise ValueError("use letters, digits, spaces and . _ / - (at most 200)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            # An HMAC is only as strong as its key: a short one can be guessed offline
            # from any one signed body.
            raise ValueError("must be at least 16 characters (e.g. secrets.token_urlsafe(32))")
        return value

    @field_validator("ses_topic_arns")
    @classmethod
    def _topic_arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _TOPIC_ARN.fullmatch(arn):
                raise ValueError(
                    f"{arn!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                )
        return value

    @field_validator("feedback_id_sender")
    @classmethod
    def _feedback_id(cls, value: str | None) -> str | None:
        # Its fields are separated by colons, and it is one header token.
        if value is not None and not FEEDBACK_ID.fullmatch(value):
            raise ValueError("use 1-64 letters, digits, '.', '_' or '-' (no ':' or spaces)")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for local testing)")
        if find_unsafe(value) is not None or " " in value:
            raise ValueError("must be a plain URL without spaces or control characters")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("smtp_security")
    @classmethod
    def _no_password_in_clear(cls, value: SmtpSecurity, info: ValidationInfo) -> SmtpSecurity:
        # A password sent without TLS can be read by anyone on the path; only the local
        # machine is exempt (a relay or catcher on loopback). Fields are validated in
        # order, so host and password are already in info.data.
        host = info.data.get("smtp_host", "")
        loopback = host in ("127.0.0.1", "::1", "localhost")
        if value is SmtpSecurity.NONE and info.data.get("smtp_password") and not loopback:
            raise ValueError(
                f"none would send the SMTP password in clear to {host}; use starttls or tls"
            )
        return value

    @field_validator("retired_key_ids")
    @classmethod
    def _key_ids(cls, value: list[str]) -> list[str]:
        ids = [item.strip().lower() for item in value]
        for item in ids:
            if not KEY_ID_PATTERN.fullmatch(item):
                raise ValueError(f"{item!r} is not a key id (12 hex digits, see `config show`)")
        return ids

    @model_validator(mode="after")
    def _anchor_relative_paths(self) -> Self:
        self.home = self.home.expanduser().resolve()
        self.var_dir = self._anchored(self.var_dir)
        self.templates_dir = self._anchored(self.templates_dir)
        if self.smtp_ca_file is not None:
            self.smtp_ca_file = self._anchored(self.smtp_ca_file)
        self.database_url = anchor_sqlite_url(self.database_url, self.home)
        return self

    def _anchored(self, path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else self.home / path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_file.get() or Path(os.environ.get("MAILER_CONFIG_FILE", CONFIG_FILE))
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    # -- derived values ---------------------------------------------------------------

    @property
    def home_reason(self) -> str:
        """Why `home` is that folder, in words."""
        return self._found.reason if self._found is not None else "given explicitly"

    @property
    def config_file(self) -> Path:
        """The TOML file read (if it exists): MAILER_CONFIG_FILE or home/mailer.toml."""
        return self._found.config_file if self._found is not None else self.home / CONFIG_FILE

    @property
    def sending_concurrency(self) -> int:
        """Messages in flight at once: MAILER_CONCURRENCY, or with MAILER_RELAYS the sum of
        the relays' own concurrency (each relay bounds its own connections)."""
        if self.relays:
            return sum(relay.concurrency for relay in self.relays)
        return self.concurrency

    @property
    def sender_identity(self) -> SenderIdentity:
        return SenderIdentity(
            from_address=self.from_address,
            from_name=self.from_name,
            base_url=self.base_url,
            reply_to=self.reply_to,
            unsubscribe_mailto=self.unsubscribe_mailto,
            postal_address=self.postal_address or None,
            feedback_id_sender=self.feedback_id_sender,
        )

    def masked(self) -> dict[str, str]:
        """The effective configuration as printable strings, secrets masked."""
        shown: dict[str, str] = {}
        for name, value in self:
            key = ENV_PREFIX + name.upper()
            if isinstance(value, SecretStr):
                shown[key] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, list):
                shown[key] = ", ".join(
                    "**********" if isinstance(item, SecretStr) else str(item) for item in value
                )
            elif name == "database_url":
                shown[key] = _mask_url_password(str(value))
            else:
                shown[key] = "" if value is None else str(value)
        return shown


def anchor_sqlite_url(url: str, base: Path) -> str:
    """A SQLite URL whose file path is relative, made absolute against `base`.

    Other databases, in-memory SQLite, URI filenames and unparsable URLs come back as
    they are (create_store_engine reports the unparsable ones).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or database in ("", ":memory:")
        or database.startswith("file:")
        or Path(database).is_absolute()
    ):
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def load_settings(**overrides: Any) -> Settings:
    """Load settings from every source, turning validation errors into one clear ConfigError.

    The home folder is found first (see find_home): `.env` and `mailer.toml` are read
    from it, and relative paths in every source are anchored to it.
    """
    home = find_home()
    if overrides.get("home") is not None:
        given = Path(overrides["home"]).expanduser().resolve()
        home = Home(given, "given explicitly", given / CONFIG_FILE)
    overrides["home"] = home.path
    token = _config_file.set(home.config_file)
    try:
        settings = Settings(_env_file=home.path / DOTENV_FILE, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc") or ("?",)
        setting = ENV_PREFIX + str(loc[0]).upper()
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        given = first.get("input")
        shown = "" if "secret" in setting.lower() or "password" in setting.lower() else given
        detail = f" (got {str(shown)!r})" if isinstance(shown, str | int | float) else ""
        raise ConfigError(
            f"{setting}: {message}{detail}",
            setting=setting,
            hint="Fix it in the environment, .env or mailer.toml; `mailer config show` lists all.",
        ) from exc
    except tomllib.TOMLDecodeError as exc:  # a ValueError: which file, where, what
        raise ConfigError(
            f"{home.config_file}: not valid TOML: {exc}",
            hint="Fix that line (https://toml.io); `mailer config show` reads it again.",
        ) from exc
    except ValueError as exc:
        if 'field "relays"' in str(exc):  # MAILER_RELAYS in the environment is not JSON
            raise ConfigError(
                "MAILER_RELAYS: must be a JSON list of relays, e.g. "
                '[{"host": "smtp.example.org", "port": 587, "security": "starttls"}]',
                setting="MAILER_RELAYS",
                hint="Or write them as [[relays]] tables in mailer.toml.",
            ) from exc
        raise ConfigError(f"cannot read the configuration: {exc}") from exc
    except OSError as exc:  # an unreadable or malformed mailer.toml / .env
        raise ConfigError(f"cannot read the configuration: {exc}") from exc
    finally:
        _config_file.reset(token)
    settings._found = home
    return settings
