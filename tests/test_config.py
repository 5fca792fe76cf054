"""Settings: sources, precedence, validation errors, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.config import SmtpSecurity, load_settings
from mailer.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test in an empty folder with no MAILER_ variables set."""
    import os

    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/mailer.db"
    assert settings.smtp_security is SmtpSecurity.NONE
    assert settings.secret_key is None


def test_precedence_env_over_dotenv_over_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Explicit > environment > .env > mailer.toml > defaults."""
    (tmp_path / "mailer.toml").write_text(
        'smtp_host = "toml.example"\nsmtp_port = 2600\nfrom_name = "From TOML"\nconcurrency = 7\n'
    )
    (tmp_path / ".env").write_text(
        "MAILER_SMTP_HOST=dotenv.example\nMAILER_SMTP_PORT=2601\nMAILER_FROM_NAME=From dotenv\n"
    )
    monkeypatch.setenv("MAILER_SMTP_HOST", "env.example")
    monkeypatch.setenv("MAILER_SMTP_PORT", "2602")
    settings = load_settings(smtp_host="explicit.example")
    assert settings.smtp_host == "explicit.example"
    assert settings.smtp_port == 2602
    assert settings.from_name == "From dotenv"
    assert settings.concurrency == 7


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_SMTP_PORT", "abc", "MAILER_SMTP_PORT: Input should be a valid integer"),
        ("MAILER_SMTP_SECURITY", "ssl", "MAILER_SMTP_SECURITY: Input should be 'none', 'starttls'"),
        ("MAILER_RATE_LIMIT", "0", "MAILER_RATE_LIMIT: Input should be greater than 0"),
        ("MAILER_BASE_URL", "example.org", "MAILER_BASE_URL: must start with https://"),
        ("MAILER_FROM_NAME", "A\nBcc: x@y.z", "MAILER_FROM_NAME: control character U+000A"),
        ("MAILER_TIMEZONE", "Mars/Olympus", "MAILER_TIMEZONE: unknown time zone"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(message)
    assert info.value.setting == name


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("MAILER_SECRET_KEY", "s3cret-key-material")
    monkeypatch.setenv("MAILER_DATABASE_URL", "postgresql://app:dbpass@db/mailer")
    shown = load_settings().masked()
    text = repr(shown)
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert "dbpass" not in text
    assert shown["MAILER_SMTP_PASSWORD"] == "**********"
    assert shown["MAILER_DATABASE_URL"] == "postgresql://app:***@db/mailer"


def test_secret_value_in_error_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SECRET_KEY_FALLBACKS", "not-json")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "not-json" not in str(info.value)


def test_a_password_is_never_sent_in_clear_off_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILER_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "hunter2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "MAILER_SMTP_SECURITY"
    assert "in clear to smtp.example.org" in str(info.value)
    monkeypatch.setenv("MAILER_SMTP_SECURITY", "starttls")
    assert load_settings().smtp_security is SmtpSecurity.STARTTLS
    monkeypatch.setenv("MAILER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MAILER_SMTP_SECURITY", "none")
    assert load_settings().smtp_host == "127.0.0.1"  # a local relay is fine
