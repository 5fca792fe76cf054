"""Settings: one class, loaded once at the edge (CLI, server start) and passed down.

Precedence, highest first:
  1. values passed explicitly (CLI options)
  2. environment variables `MAILER_*`
  3. a `.env` file in the working directory
  4. `mailer.toml` in the working directory (or the file named by MAILER_CONFIG_FILE)
  5. the embedded defaults below, which run the demo with zero configuration
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
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


class SmtpSecurity(enum.StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class Settings(BaseSettings):
    """Every setting mailer reads; environment names are `MAILER_` + the field name in capitals."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

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

    from_address: str = "invitations@mailer.localhost"
    from_name: str = "Mailer demo"
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    base_url: str = "http://127.0.0.1:8000"

    secret_key: SecretStr | None = None
    secret_key_fallbacks: list[SecretStr] = Field(default_factory=list)

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

    templates_dir: Path = Path("templates")
    timezone: str = "Europe/London"
    grace_period: float = Field(default=6 * 3600, ge=0)
    poll_interval: float = Field(default=2.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)

    @field_validator("from_address", "reply_to", "unsubscribe_mailto", "from_name")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and (problem := find_unsafe(value)) is not None:
            raise ValueError(problem)
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("MAILER_CONFIG_FILE", "mailer.toml"))
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    # -- derived values ---------------------------------------------------------------

    @property
    def sender_identity(self) -> SenderIdentity:
        return SenderIdentity(
            from_address=self.from_address,
            from_name=self.from_name,
            base_url=self.base_url,
            reply_to=self.reply_to,
            unsubscribe_mailto=self.unsubscribe_mailto,
        )

    def masked(self) -> dict[str, str]:
        """The effective configuration as printable strings, secrets masked."""
        shown: dict[str, str] = {}
        for name, value in self:
            key = ENV_PREFIX + name.upper()
            if isinstance(value, SecretStr):
                shown[key] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, list):
                shown[key] = ", ".join("**********" for _ in value) if value else ""
            elif name == "database_url":
                shown[key] = _mask_url_password(str(value))
            else:
                shown[key] = "" if value is None else str(value)
        return shown


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def load_settings(**overrides: Any) -> Settings:
    """Load settings from every source, turning validation errors into one clear ConfigError."""
    try:
        return Settings(**overrides)
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
    except (OSError, ValueError) as exc:  # an unreadable or malformed mailer.toml / .env
        raise ConfigError(f"cannot read the configuration: {exc}") from exc
