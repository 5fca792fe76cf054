"""The confirmation shows a personalised subject as a member gets it.

A new organiser's subject `Invitation: Autumn Public Meeting, {{ subscriber.first_name }}`
was shown with its braces on the screen that says what recipients will see. It is now
rendered for the list's first member, and says whose it is.
"""

from __future__ import annotations

from pathlib import Path

from campaign_support import EVENT, make_settings
from mailer.audience.importer import import_file
from mailer.campaigns.summary import summarise_send
from mailer.message.event import load_event
from mailer.store import Store


def test_a_personalised_subject_is_shown_as_the_first_member_gets_it(
    store: Store, tmp_path: Path
) -> None:
    members = tmp_path / "members.csv"
    members.write_text("email,name\nzoe@example.org,Zoë Martin\nkim@example.org,Kim Lee\n")
    import_file(store, members, list_name="members", rejects_path=tmp_path / "rejects.csv")
    text = EVENT.read_text(encoding="utf-8")
    subject = next(line for line in text.splitlines() if line.startswith("subject:"))
    personal = text.replace(
        subject, 'subject: "Invitation: Public Meeting, {{ subscriber.first_name }}"'
    )
    path = tmp_path / "events" / "meeting.md"
    path.parent.mkdir()
    path.write_text(personal, encoding="utf-8")
    event = load_event(path)
    settings = make_settings(tmp_path, 2525)

    summary = summarise_send(settings, event, list_name="members", audience=2, store=store)
    line = next(line for line in summary.lines() if "Subject:" in line)
    assert line.strip() == (
        "Subject:      Invitation: Public Meeting, Zoë  (as zoe@example.org gets it)"
    )
    # Without a store (or nobody on the list), the subject as written.
    plain = summarise_send(settings, event, list_name="members", audience=2)
    assert "{{ subscriber.first_name }}" in plain.subject
