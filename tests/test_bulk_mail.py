"""Bulk-mail headers and footer (issue 10): Feedback-ID, the preheader, the sender's postal
address and the list's public title, checked on the raw bytes and through the CLI."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from cli_support import run_mailer_here
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.message.lint import validate_event
from mailer.models import OutgoingMessage
from test_compose import EXAMPLE, SENDER, TEMPLATES, ZOE, assert_well_formed, raw_headers

REPO_ROOT = Path(__file__).resolve().parent.parent
URL = f"{SENDER.base_url}/u/t7"
POSTAL = "CWO, BM CWO, London WC1N 3XX"
PREHEADER = "Saturday 11 September, 2:30pm, upstairs at the Calthorpe Arms"


def event_with_preheader(tmp_path: Path, preheader: str = PREHEADER) -> Path:
    path = tmp_path / "london-public-meeting.md"
    source = EXAMPLE.read_text(encoding="utf-8")
    path.write_text(
        source.replace("layout: default\n", f'layout: default\npreheader: "{preheader}"\n')
    )
    return path


def build(
    event: Path = EXAMPLE, *, list_title: str | None = None, **sender: str
) -> OutgoingMessage:
    builder = InvitationBuilder(
        load_event(event),
        sender=dataclasses.replace(SENDER, **sender),
        campaign_id=42,
        list_name="members",
        list_title=list_title,
        templates_dir=TEMPLATES,
    )
    return builder.build(ZOE, unsubscribe_url=URL)


def bodies(message: OutgoingMessage) -> tuple[str, str]:
    """(text, HTML) as decoded from the wire."""
    parsed = assert_well_formed(message)
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    return plain.get_content(), html.get_content()


def test_feedback_id_names_campaign_list_and_sender() -> None:
    """With a sender id, exactly one `Feedback-ID: CAMPAIGN:LIST:SENDER` (Gmail's
    a:b:c:SenderId form, never encoded); without one, no Feedback-ID at all."""
    message = build(feedback_id_sender="cwo-events")
    values = [value for name, value in raw_headers(message.data) if name == "Feedback-ID"]
    assert values == [" 42:members:cwo-events"]
    assert [name for name, _ in raw_headers(build().data) if name == "Feedback-ID"] == []


def test_preheader_is_the_first_text_and_hidden(tmp_path: Path) -> None:
    """The front matter's preheader opens the HTML body (what inboxes show after the
    subject), hidden from the message itself; the text part does not repeat it."""
    text, html = bodies(build(event_with_preheader(tmp_path)))
    body = html[html.index("<body") :]
    element = body[body.index('<div class="preheader"') : body.index(PREHEADER)]
    assert "display: none" in element
    assert "mso-hide: all" in element
    assert body.index(PREHEADER) < body.index("<h1")
    assert PREHEADER not in text
    assert 'class="preheader"' not in bodies(build())[1]  # none given, none sent


def test_postal_address_closes_both_parts_when_set() -> None:
    """MAILER_POSTAL_ADDRESS goes into the footer of the text and the HTML, after the
    unsubscribe link; unset, nothing takes its place."""
    text, html = bodies(build(postal_address=POSTAL))
    assert text.rstrip().endswith(POSTAL)
    footer = html[html.index('class="footer"') :]
    assert footer.index("Unsubscribe") < footer.index(POSTAL)
    assert POSTAL not in "".join(bodies(build()))


def test_the_list_title_is_what_readers_see() -> None:
    """Seen: "You receive this because you subscribed to members" (the list's internal
    name). With a title the footer and List-Id's phrase show it; List-Id's id and the
    Feedback-ID keep the name; without a title the name is shown as before."""
    message = build(list_title="CWO London supporters", feedback_id_sender="cwo")
    text, html = bodies(message)
    for part in (" ".join(text.split()), html):
        assert "you subscribed to CWO London supporters." in part
        assert "Unsubscribe from CWO London supporters" in " ".join(part.split()).replace(
            "</a>", ""
        ).replace(f'<a href="{URL}" style="color: #8b1a1a;text-decoration: underline;">', "")
        assert "members" not in part
    headers = dict(raw_headers(message.data))
    assert headers["List-Id"] == ' "CWO London supporters" <members.leftcom.example>'
    assert headers["Feedback-ID"] == " 42:members:cwo"
    assert "you subscribed to members." in " ".join(bodies(build())[0].split())


def test_a_layout_may_use_the_new_names(tmp_path: Path) -> None:
    """`preheader` and `postal_address` are known to `mailer validate` (a typo check
    rejects unknown names) and render empty when not given."""
    layouts = tmp_path / "templates" / "layouts"
    layouts.mkdir(parents=True)
    (layouts / "plain.html.j2").write_text(
        "<html><body><p>{{ preheader }}</p>{{ content }}<p>{{ postal_address }}</p></body></html>"
    )
    (layouts / "plain.txt.j2").write_text("{{ content }}\n{{ postal_address }}\n")
    event = tmp_path / "meeting.md"
    event.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("layout: default", "layout: plain")
    )
    assert validate_event(event, templates_dir=tmp_path / "templates") == []


def run_preview(tmp_path: Path, event: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'mailer.db'}",
        MAILER_VAR_DIR=str(tmp_path / "var"),
        MAILER_TEMPLATES_DIR=str(REPO_ROOT / "templates"),
        MAILER_FROM_ADDRESS="invitations@leftcom.example",
        COLUMNS="200",
        **settings,
    )
    args = ("preview", str(event), "--out", str(tmp_path / "out"))
    subscribers = ("--subscribers", str(REPO_ROOT / "subscribers.example.csv"))
    return run_mailer_here(env, tmp_path, *args, *subscribers)  # mailer.cli.main, in process


def test_settings_reach_the_message_through_the_cli(tmp_path: Path) -> None:
    """`mailer preview` with MAILER_POSTAL_ADDRESS and MAILER_FEEDBACK_ID_SENDER set: the
    .eml it writes carries both, and the event's preheader."""
    event = event_with_preheader(tmp_path)
    result = run_preview(
        tmp_path, event, MAILER_POSTAL_ADDRESS=POSTAL, MAILER_FEEDBACK_ID_SENDER="cwo-events"
    )
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "out" / "london-public-meeting.eml").read_bytes()
    assert b"\r\nFeedback-ID: 0:preview:cwo-events\r\n" in data
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text, html = (message.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None
    assert html is not None
    assert text.get_content().rstrip().endswith(POSTAL)
    assert PREHEADER in html.get_content()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_FEEDBACK_ID_SENDER", "cwo:events", "MAILER_FEEDBACK_ID_SENDER: use 1-64"),
        ("MAILER_POSTAL_ADDRESS", "BM CWO\nLondon", "MAILER_POSTAL_ADDRESS: control character"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    """A Feedback-ID sender with a colon, or a postal address over two lines: one line
    naming the setting, exit non-zero, no traceback, nothing written."""
    result = run_preview(tmp_path, event_with_preheader(tmp_path), **{name: value})
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
