"""The list's public title is what recipients read in the message (issue 10): the footer
of a real send and of a test send, and List-Id's phrase; its short name only in the id."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from campaign_support import EVENT, cli_environment
from cli_support import run_mailer_here
from smtp_server import SmtpTestServer

TITLE = "Friends of the CWO in London"


def _parts(data: bytes) -> tuple[str, str]:
    """The text and HTML bodies, whitespace collapsed (the footer may be wrapped)."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return " ".join(text.get_content().split()), " ".join(html.get_content().split())


def test_the_footer_and_list_id_carry_the_title(
    tmp_path: Path, smtp_server_thread: SmtpTestServer
) -> None:
    env = cli_environment(tmp_path, smtp_server_thread.port)
    created = run_mailer_here(env, tmp_path, "lists", "create", "ldn", "--title", TITLE)
    assert created.returncode == 0, created.stderr
    (tmp_path / "people.csv").write_text(
        "email,name\nann@example.org,Ann\nbob@example.org,Bob\n", encoding="utf-8"
    )
    imported = run_mailer_here(
        env, tmp_path, "subscribers", "import", "people.csv", "--list", "ldn"
    )
    assert imported.returncode == 0, imported.stderr

    trial = run_mailer_here(
        env, tmp_path, "send", str(EVENT), "--list", "ldn", "--test-to", "me@example.org"
    )
    assert trial.returncode == 0, trial.stderr
    sent = run_mailer_here(env, tmp_path, "send", str(EVENT), "--list", "ldn", "--yes")
    assert sent.returncode == 0, sent.stderr

    assert len(smtp_server_thread.messages) == 3  # the test message, then both members
    for received in smtp_server_thread.messages:
        text, html = _parts(received.data)
        assert f"You receive this because you subscribed to {TITLE}." in text
        assert f"You receive this because you subscribed to {TITLE}." in html
        assert "subscribed to ldn" not in text + html
        message = message_from_bytes(received.data, policy=policy.default)
        assert str(message["List-Id"]).startswith(f'"{TITLE}" <ldn.')
