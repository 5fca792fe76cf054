"""preflight: a send through a relay off this machine needs a real sender and base URL.

Issue 9: a send through a remote relay with the demo defaults went out with
`List-Unsubscribe: <http://127.0.0.1:8000/u/...>` plus `List-Unsubscribe-Post` (which RFC
8058 forbids on a non-https URI), from `invitations@mailer.localhost`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.preflight import check_real_send, is_local_host, real_send_problems, reserved_domain

GOOD = {
    "base_url": "https://lists.leftcom.org.uk",
    "from_address": "events@leftcom.org.uk",
    "from_name": "Communist Workers' Organisation",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MAILER_ variables, no .env or mailer.toml: only what each test passes."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    return Settings(**values)


def refusal(**values: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check_real_send(settings(**values))
    error = caught.value
    assert "\n" not in str(error)
    assert error.hint
    return error


def test_the_issue_defaults_through_a_remote_relay_are_refused() -> None:
    """The send of issue 9: demo base URL and sender, relay on another machine."""
    error = refusal(smtp_host="smtp.leftcom.org.uk")
    assert error.setting == "MAILER_BASE_URL"
    assert str(error) == (
        "refusing to send through smtp.leftcom.org.uk: MAILER_BASE_URL is not set (the "
        "default http://127.0.0.1:8000 is on this machine): recipients' unsubscribe links "
        "would lead nowhere (and 1 more: run `mailer config check`)"
    )
    assert "MAILER_BASE_URL" in (error.hint or "")
    assert "https://" in (error.hint or "")


@pytest.mark.parametrize(
    "relay",
    ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LocalHost.", "::ffff:127.0.0.1"],
)
def test_a_relay_on_this_machine_may_use_the_demo_defaults(relay: str) -> None:
    check_real_send(settings(smtp_host=relay))  # the demo and the catcher: nothing refused
    assert is_local_host(relay)


@pytest.mark.parametrize(
    "relay", ["10.0.0.5", "192.0.2.2", "0.0.0.0", "relay.lan", "localhost.leftcom.org", "::2"]
)
def test_any_other_relay_counts_as_another_machine(relay: str) -> None:
    assert not is_local_host(relay)
    assert refusal(smtp_host=relay).setting == "MAILER_BASE_URL"


def test_real_settings_through_a_remote_relay_pass() -> None:
    check_real_send(settings(smtp_host="smtp.leftcom.org.uk", **GOOD))
    assert real_send_problems(settings(smtp_host="smtp.leftcom.org.uk", **GOOD)) == []


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ("http://127.0.0.1:8000", "is not set"),  # given, but the very default
        ("http://lists.leftcom.org.uk", "is not https://: RFC 8058"),
        ("https://127.0.0.1:8443", "is on this machine"),
        ("https://127.1.2.3", "is on this machine"),
        ("https://localhost", "is on this machine"),
        ("https://[::1]:8443/mailer", "is on this machine"),
        ("https://mailer.localhost", "is on this machine"),
        ("https://0.0.0.0:8000", "is on this machine"),
        ("https://", "names no host"),
    ],
)
def test_a_base_url_recipients_cannot_use_is_refused(base_url: str, says: str) -> None:
    values = {**GOOD, "base_url": base_url}
    error = refusal(smtp_host="smtp.leftcom.org.uk", **values)
    assert error.setting == "MAILER_BASE_URL"
    assert says in str(error)
    assert "more" not in str(error)  # the only problem


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("invitations@mailer.localhost", "is not set"),
        ("events@leftcom.localhost", "reserved domain"),
        ("events@lists.test", "reserved domain"),
        ("events@nowhere.invalid", "reserved domain"),
        ("events@site.example", "reserved domain"),
        ("events@example.org", "reserved domain"),
        ("events@news.EXAMPLE.com", "reserved domain"),
        ("events@example.net.", "reserved domain"),
        ("", "is not set"),
        ("events-at-leftcom.org.uk", "is not an email address"),
    ],
)
def test_a_sender_no_one_can_answer_is_refused(address: str, says: str) -> None:
    values = {**GOOD, "from_address": address}
    error = refusal(smtp_host="smtp.leftcom.org.uk", **values)
    assert error.setting == "MAILER_FROM_ADDRESS"
    assert says in str(error)
    assert "MAILER_FROM_ADDRESS" in (error.hint or "")


@pytest.mark.parametrize(
    "domain", ["examples.org", "mytest.org", "example.org.uk", "localhost-events.org"]
)
def test_ordinary_domains_that_merely_look_reserved_are_accepted(domain: str) -> None:
    assert not reserved_domain(domain)
    values = {**GOOD, "from_address": f"events@{domain}"}
    check_real_send(settings(smtp_host="smtp.leftcom.org.uk", **values))


def test_every_problem_is_listed_whatever_the_relay() -> None:
    """`config check` lists the rules even for a local relay (a local MTA relays to real people)."""
    problems = real_send_problems(settings(smtp_host="127.0.0.1"))
    assert [problem.setting for problem in problems] == ["MAILER_BASE_URL", "MAILER_FROM_ADDRESS"]
    assert all(problem.hint for problem in problems)


def test_the_environment_counts_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values from MAILER_* variables are judged like values passed in."""
    monkeypatch.setenv("MAILER_BASE_URL", "https://lists.leftcom.org.uk/")
    monkeypatch.setenv("MAILER_FROM_ADDRESS", "events@leftcom.org.uk")
    monkeypatch.setenv("MAILER_SMTP_HOST", "smtp.leftcom.org.uk")
    check_real_send(Settings())
    monkeypatch.setenv("MAILER_FROM_ADDRESS", "events@leftcom.test")
    assert refusal().setting == "MAILER_FROM_ADDRESS"
