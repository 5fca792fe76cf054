"""Settings: the home folder, sources, precedence, validation errors, masking."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from campaign_support import REPO_ROOT
from cli_support import run_mailer_here
from mailer.config import SmtpSecurity, load_settings
from mailer.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test in an empty folder with no MAILER_ variables set."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/var/mailer.db"
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


# -- the home folder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "content"),
    [
        ("mailer.toml", 'from_name = "Home"\n'),
        (".env", "MAILER_FROM_NAME=Home\n"),
        ("var/mailer.db", ""),  # all that `mailer demo` leaves behind
    ],
)
def test_home_is_the_nearest_marked_folder_above(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, marker: str, content: str
) -> None:
    """From a subfolder, relative settings resolve against the folder that holds the marker."""
    (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / marker).write_text(content)
    deeper = tmp_path / "events" / "2026"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    settings = load_settings()
    home = tmp_path.resolve()
    assert settings.home == home
    assert marker in settings.home_reason
    assert settings.database_url == f"sqlite:///{home}/var/mailer.db"
    assert settings.var_dir == home / "var"
    assert settings.templates_dir == home / "templates"


def test_a_dotenv_naming_no_mailer_setting_marks_no_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DJANGO_DEBUG=1\n")  # some other tool's file
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    settings = load_settings()
    assert settings.home == sub.resolve()
    assert settings.home_reason.startswith("the current folder")


def test_nearest_marker_wins_and_mailer_home_wins_over_markers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "mailer.toml").write_text('from_name = "Outer"\n')
    inner = tmp_path / "inner"
    (inner / "deep").mkdir(parents=True)
    (inner / "mailer.toml").write_text('from_name = "Inner"\n')
    monkeypatch.chdir(inner / "deep")
    assert load_settings().from_name == "Inner"
    monkeypatch.setenv("MAILER_HOME", "../..")  # relative to the current folder
    settings = load_settings()
    assert settings.home == tmp_path.resolve()
    assert settings.home_reason == "MAILER_HOME is set"
    assert settings.from_name == "Outer"


def test_relative_settings_in_every_source_resolve_against_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mail.toml").write_text('templates_dir = "my-templates"\n')
    (tmp_path / ".env").write_text("MAILER_DATABASE_URL=sqlite:///data/list.db\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    monkeypatch.setenv("MAILER_CONFIG_FILE", "conf/mail.toml")
    monkeypatch.setenv("MAILER_VAR_DIR", "state")
    monkeypatch.setenv("MAILER_SMTP_CA_FILE", "ca.pem")
    settings = load_settings()
    home = tmp_path.resolve()
    assert settings.config_file == home / "conf" / "mail.toml"
    assert settings.templates_dir == home / "my-templates"
    assert settings.database_url == f"sqlite:///{home}/data/list.db"
    assert settings.var_dir == home / "state"
    assert settings.smtp_ca_file == home / "ca.pem"
    monkeypatch.setenv("MAILER_DATABASE_URL", "postgresql://app@db/mailer")
    assert load_settings().database_url == "postgresql://app@db/mailer"  # not a path


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_HOME", "no-such-folder", "MAILER_HOME: no such folder"),
        ("MAILER_CONFIG_FILE", "missing.toml", "MAILER_CONFIG_FILE: no such file"),
        ("MAILER_RETIRED_KEY_IDS", '["zz"]', "MAILER_RETIRED_KEY_IDS: 'zz' is not a key id"),
    ],
)
def test_a_bad_home_or_config_file_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(message)
    assert info.value.setting == name


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mailer ARGS` in `cwd` with no MAILER_ variable set, through mailer.cli.main in
    this process (tests/cli_support.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"
    return run_mailer_here(env, cwd, *args)


def test_cli_from_a_subfolder_uses_the_home_store(tmp_path: Path) -> None:
    """`mailer` run from a subfolder finds the same store, not a new empty ./var/mailer.db."""
    (tmp_path / "mailer.toml").write_text('from_name = "Branch"\n')
    imported = run_cli(
        tmp_path,
        "subscribers",
        "import",
        str(REPO_ROOT / "subscribers.example.csv"),
        "--list",
        "members",
    )
    assert imported.returncode == 0, imported.stderr
    sub = tmp_path / "events" / "autumn"
    sub.mkdir(parents=True)
    listed = run_cli(sub, "lists")
    assert listed.returncode == 0, listed.stderr
    assert "members" in listed.stdout
    assert "No lists yet" not in listed.stdout
    assert not (sub / "var").exists()
    shown = run_cli(sub, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"Home: {tmp_path.resolve()}\n" in shown.stdout
    assert "why: nearest folder holding mailer.toml" in shown.stdout
    assert f"sqlite:///{tmp_path.resolve()}/var/mailer.db" in shown.stdout


def test_config_show_creates_nothing(tmp_path: Path) -> None:
    """Asking where things are must not create the store it reports on."""
    shown = run_cli(tmp_path, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "why: the current folder" in shown.stdout
    assert "signs with a key the store generates on first use" in shown.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_mailer_toml_is_named_with_its_line(tmp_path: Path) -> None:
    """A TOML mistake names the file and where (a trial's organiser got only "cannot read
    the configuration: Expected ']]' ..."), as the command's one-line error, exit 2."""
    (tmp_path / "mailer.toml").write_text('from_name = "CWO"\n[[relays]\nhost = "a"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"{tmp_path.resolve() / 'mailer.toml'}: not valid TOML: ")
    assert "line 2" in str(info.value)
    result = run_cli(tmp_path, "config", "show")
    assert result.returncode == 2, result
    assert "mailer.toml: not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr
