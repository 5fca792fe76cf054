"""SpamAssassin (offline, network tests off) rates the example invitation as clean mail."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mailer.models import Recipient
from test_compose import EXAMPLE, SENDER, make_builder

SPAMASSASSIN = shutil.which("spamassassin")
# Rules that mean a header is missing or the mail looks HTML-only / mismatched.
FORBIDDEN = re.compile(
    r"^(MISSING_\w+|MIME_HTML_ONLY\w*|MIME_HTML_MOSTLY|HTML_MIME_NO_HTML_TAG|"
    r"MPART_ALT_DIFF\w*|HTML_IMAGE_ONLY_\w+|MIME_QP_LONG_LINE)$"
)

pytestmark = [
    pytest.mark.spamassassin,
    pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin is not on PATH"),
]


def field(pattern: str, fields: str) -> str:
    """The first group of `pattern` in SpamAssassin's status fields; fails if absent."""
    found = re.search(pattern, fields)
    assert found is not None, f"{pattern!r} not in {fields!r}"
    return found.group(1)


def spamassassin(data: bytes, home: Path) -> tuple[float, list[str], str]:
    """(score, rules that fired, the status line) for one message, offline."""
    assert SPAMASSASSIN is not None
    result = subprocess.run(
        [SPAMASSASSIN, "--local", "--test-mode"],
        input=data,
        capture_output=True,
        timeout=120,
        check=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    output = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (.*?)\n(?=\S)", output, re.M | re.S)
    assert status is not None, output[:2000]
    fields = " ".join(status.group(1).split())
    score = float(field(r"score=(-?[\d.]+)", fields))
    return score, field(r"tests=(\S*)", fields).split(","), fields


def test_example_invitation_scores_below_one(tmp_path: Path) -> None:
    """Score < 1.0 and none of the MISSING_* or HTML-only rules fire."""
    recipient = Recipient(7, "zoe.martin@example.org", "Zoë Martin", {"city": "London"})
    message = make_builder().build(recipient, unsubscribe_url="https://lists.leftcom.example/u/t7")
    score, tests, fields = spamassassin(message.data, tmp_path)
    assert score < 1.0, fields
    assert not [t for t in tests if FORBIDDEN.match(t)], fields


def test_bulk_mail_features_stay_clean(tmp_path: Path) -> None:
    """Issue 10 on: a hidden preheader, the postal address, Feedback-ID, the Outlook ghost
    table and dark-mode styles, a 200-character ASCII sender name (it was base64-encoded,
    FROM_EXCESS_BASE64) and a long non-ASCII recipient name: still < 1.0, nothing from
    FORBIDDEN, no FROM_EXCESS_BASE64 and no hidden-text rule."""
    event = tmp_path / "meeting.md"
    event.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            "layout: default\n", 'layout: default\npreheader: "Saturday 2:30pm, upstairs"\n'
        ),
        encoding="utf-8",
    )
    from_name = " ".join(["Communist Workers' Organisation, London branch"] * 5)[:200]
    sender = dataclasses.replace(
        SENDER,
        from_name=from_name,
        postal_address="CWO, BM CWO, London WC1N 3XX",
        feedback_id_sender="cwo",
    )
    name = "Alexandra Ó Súilleabháin-Nic Giolla Phádraig de la Montagne-Ferrières"
    recipient = Recipient(7, "alexandra@example.org", name, {})
    builder = make_builder(sender, event_path=event)
    message = builder.build(recipient, unsubscribe_url="https://lists.leftcom.example/u/t7")
    score, tests, fields = spamassassin(message.data, tmp_path)
    assert score < 1.0, fields
    assert not [t for t in tests if FORBIDDEN.match(t)], fields
    assert not [t for t in tests if t == "FROM_EXCESS_BASE64" or "INVISIBLE" in t], fields


def test_links_with_a_dot_after_a_soft_break_stay_clean(tmp_path: Path) -> None:
    """Issue 15: a "." that a quoted-printable soft break puts at the start of a line is
    written `=2E` (no dot-stuffing on the way). With links of that shape (the RSVP
    buttons, the unsubscribe link) the invitation still scores < 1.0, nothing from
    FORBIDDEN, and the HTML still holds the links whole."""
    recipient = Recipient(7, "zoe.martin@example.org", "Zoë Martin", {"city": "London"})
    base = "https://mailer.example.org"
    message = make_builder().build(
        recipient, unsubscribe_url=f"{base}/u/{'U' * 43}", rsvp_url=f"{base}/r/{'R' * 43}"
    )
    assert b"=\r\n=2E" in message.data  # the case is really there
    html = email.message_from_bytes(message.data, policy=email.policy.default)
    body = html.get_body(("html",))
    assert body is not None
    assert f'href="{base}/r/{"R" * 43}?answer=yes"' in body.get_content()
    score, tests, fields = spamassassin(message.data, tmp_path)
    assert score < 1.0, fields
    assert not [t for t in tests if FORBIDDEN.match(t)], fields
