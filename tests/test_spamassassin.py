"""SpamAssassin (offline, network tests off) rates the example invitation as clean mail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mailer.models import Recipient
from test_compose import make_builder

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


def test_example_invitation_scores_below_one(tmp_path: Path) -> None:
    """Score < 1.0 and none of the MISSING_* or HTML-only rules fire."""
    recipient = Recipient(7, "zoe.martin@example.org", "Zoë Martin", {"city": "London"})
    message = make_builder().build(recipient, unsubscribe_url="https://lists.leftcom.example/u/t7")
    assert SPAMASSASSIN is not None
    result = subprocess.run(
        [SPAMASSASSIN, "--local", "--test-mode"],
        input=message.data,
        capture_output=True,
        timeout=120,
        check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    output = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (.*?)\n(?=\S)", output, re.M | re.S)
    assert status is not None, output[:2000]
    fields = " ".join(status.group(1).split())
    score = float(field(r"score=(-?[\d.]+)", fields))
    tests = field(r"tests=(\S*)", fields).split(",")
    assert score < 1.0, fields
    assert not [t for t in tests if FORBIDDEN.match(t)], fields
