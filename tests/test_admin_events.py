"""The dashboard's Events pages, in process (httpx over ASGI) on SQLite: each event file
with `mailer validate`'s findings (file and line), the preview personalised for a chosen
member (the HTML part framed from its own sandboxed, script-free route), and a test
message to a typed address, as a real aiosmtpd server receives it."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from email.message import EmailMessage
from pathlib import Path

from markupsafe import escape

from admin_support import SAME_ORIGIN, add_user, admin_app, admin_client, admin_settings, sign_in
from mailer.models import Subscriber
from mailer.store import Store
from mailer.store.imports import ImportRow
from smtp_server import SmtpTestServer
from web_support import store_snapshot

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "templates" / "events" / "london-public-meeting.md"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
TITLE = 'title: "CWO London Public Meeting: Russia, Revolution and Counter-Revolution"'


def seed(store: Store) -> int:
    people = [("ana@example.org", "Ana Lima"), ("bob@example.org", "Bob Stone")]
    rows = (
        ImportRow(Subscriber(email=e, name=n, attributes={"first_name": n.split()[0]}))
        for e, n in people
    )
    store.import_subscribers("members", rows, source="test")
    return store.list_id("members")


def templates_with(tmp_path: Path, **files: str) -> Path:
    """A templates folder holding the example event and `files` (name -> text)."""
    folder = tmp_path / "templates" / "events"
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder.parent


async def test_event_page_checks_and_previews_for_a_chosen_member(
    sqlite_store: Store, tmp_path: Path
) -> None:
    store = sqlite_store
    add_user(store)
    list_id = seed(store)
    broken = EXAMPLE.read_text(encoding="utf-8").replace(
        "starts_at: 2021-09-11T14:30", "starts_at: someday"
    )
    hostile = EXAMPLE.read_text(encoding="utf-8").replace(TITLE, f'title: "{XSS} Meeting"')
    templates = templates_with(tmp_path, **{"broken.md": broken, "hostile.md": hostile})
    app = admin_app(store, settings=admin_settings(templates_dir=templates))
    async with admin_client(app) as client:
        await sign_in(client, "ana")
        index = await client.get("/admin/events")
        assert index.status_code == 200
        assert 'href="/admin/events/broken"' in index.text
        assert "1 problem" in index.text
        assert XSS not in index.text
        assert str(escape(XSS)) in index.text

        bad = await client.get("/admin/events/broken")
        # mailer validate's finding, at the file and line under the templates folder.
        assert re.search(r"Error</strong> at <code>events/broken\.md:5</code>: starts_at", bad.text)
        assert "<iframe" not in bad.text

        page = await client.get(
            "/admin/events/hostile", params={"list": list_id, "subscriber": "Bob@Example.org"}
        )
        assert page.status_code == 200
        assert XSS not in page.text
        assert str(escape(XSS)) in page.text
        assert "Warning</strong>" in page.text  # the event started in 2021
        frame = re.search(r'<iframe class="preview" sandbox="" src="([^"]+)"', page.text)
        assert frame, "the HTML part is framed, sandboxed with no allowance at all"
        assert "Dear Bob," in page.text  # the text part, personalised for Bob
        assert "BEGIN:VCALENDAR" in page.text

        framed = await client.get(frame.group(1).replace("&amp;", "&"))
        assert framed.status_code == 200
        csp = framed.headers["content-security-policy"]
        assert "sandbox" in csp
        assert "script-src" not in csp
        assert "default-src 'none'" in csp
        assert framed.headers["x-frame-options"] == "SAMEORIGIN"
        assert "Bob" in framed.text
        assert "<script>alert" not in framed.text

        ics = await client.get(f"/admin/events/london-public-meeting/invite.ics?list={list_id}")
        assert ics.headers["content-type"].startswith("text/calendar")
        assert ics.text.startswith("BEGIN:VCALENDAR")

        not_member = await client.get(
            "/admin/events/london-public-meeting",
            params={"list": list_id, "subscriber": "zed@example.org"},
        )
        assert not_member.status_code == 200
        assert "no subscriber &#39;zed@example.org&#39;" in not_member.text
        assert (await client.get("/admin/events/no-such-event")).status_code == 404
        assert (await client.get("/admin/events/..%2Fevents%2Fbroken")).status_code == 404


async def test_a_test_message_goes_to_the_typed_address_personalised_and_unrecorded(
    sqlite_store: Store, tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    store = sqlite_store
    add_user(store)
    list_id = seed(store)
    settings = admin_settings(smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    app = admin_app(store, settings=settings)
    before = store_snapshot(store)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        fields = {"csrf_token": token, "list": str(list_id), "subscriber": "bob@example.org"}
        wrong = await client.post(
            "/admin/events/london-public-meeting/test",
            data={**fields, "to": "not an address"},
            headers=SAME_ORIGIN,
        )
        assert wrong.status_code == 409
        assert smtp_server.messages == []
        sent = await client.post(
            "/admin/events/london-public-meeting/test",
            data={**fields, "to": "Organiser@Example.org"},
            headers=SAME_ORIGIN,
        )
    assert sent.status_code == 200, sent.text
    assert "Sent: the relay answered 250" in sent.text
    (received,) = smtp_server.messages
    assert received.rcpt_tos == ["Organiser@example.org"]
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"].startswith("[TEST]")
    text_part = message.get_body(("plain",))
    assert text_part is not None
    assert "Dear Bob," in text_part.get_content()
    changed = {
        k for k, v in store_snapshot(store).items() if v != before[k] and not k.startswith("admin_")
    }
    assert changed == set()  # nothing recorded: no campaign, no delivery


async def test_a_test_send_is_refused_before_connecting_when_settings_would_send_broken_mail(
    sqlite_store: Store, smtp_server: SmtpTestServer
) -> None:
    store = sqlite_store
    add_user(store)
    list_id = seed(store)
    # A relay off this machine with the demo's sender: the CLI refuses, so does the page.
    settings = admin_settings(
        smtp_host="smtp.example.org", from_address="invitations@mailer.localhost"
    )
    app = admin_app(store, settings=settings)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        refused = await client.post(
            "/admin/events/london-public-meeting/test",
            data={"csrf_token": token, "list": str(list_id), "to": "me@example.org"},
            headers=SAME_ORIGIN,
        )
    assert refused.status_code == 409
    assert "refusing to send through smtp.example.org" in refused.text
    assert smtp_server.messages == []
