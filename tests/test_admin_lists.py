"""The dashboard's Lists and Subscribers pages, in process (httpx over ASGI), on SQLite and
PostgreSQL: what each form changes is read back from the store, refusals are the CLI's
and change nothing, an upload is imported by the CLI's importer in the background (its
counts, bad rows with line numbers and reject file shown), exports are spreadsheet-safe,
and text organisers or subscribers wrote is escaped."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from pathlib import Path
from typing import Any

import httpx
from markupsafe import escape
from sqlalchemy import create_engine, select

from admin_support import (
    SAME_ORIGIN,
    add_user,
    admin_app,
    admin_client,
    admin_settings,
    sign_in,
)
from mailer.models import Subscriber, SubscriberStatus, SuppressionReason, UnsubscribeSource
from mailer.store import Store
from mailer.store.admin import AdminRole
from mailer.store.imports import ImportRow
from mailer.store.schema import suppressions
from web_support import store_snapshot

XSS = '<script>alert("x")</script>'
ESCAPED = str(escape(XSS))  # as Jinja writes it: &lt;script&gt;alert(&#34;x&#34;)...

BAD_ROWS_CSV = (
    "email,name,city\n"
    "ana@example.org,Ana,Leeds\n"
    "not-an-address,Bob,York\n"
    "cy@example.org,Cy,Hull\n"
    "@@,Dee,Bath\n"
    "ANA@example.org,,Leeds\n"
)


def data_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the dashboard's own (signing in writes a session)."""
    return {k: v for k, v in store_snapshot(store).items() if not k.startswith("admin_")}


def seed(store: Store, list_name: str, *people: tuple[str, str]) -> None:
    rows = (ImportRow(Subscriber(email=email, name=name)) for email, name in people)
    store.import_subscribers(list_name, rows, source="test")


async def post(client: httpx.AsyncClient, path: str, token: str, **data: str) -> httpx.Response:
    return await client.post(path, data={"csrf_token": token, **data}, headers=SAME_ORIGIN)


async def upload(
    client: httpx.AsyncClient, path: str, token: str, name: str, body: bytes
) -> httpx.Response:
    return await client.post(
        path,
        data={"csrf_token": token, "encoding": "utf-8-sig"},
        files={"file": (name, body, "text/csv")},
        headers=SAME_ORIGIN,
    )


async def finished_import(client: httpx.AsyncClient, job_path: str) -> httpx.Response:
    """The import's page once its job is over (polled as the page's script does)."""
    for _ in range(600):
        progress = (await client.get(f"{job_path}/progress")).json()
        if progress["finished"]:
            return await client.get(job_path)
        await asyncio.sleep(0.05)
    raise AssertionError("the import did not finish")


async def test_lists_are_created_described_renamed_with_the_clis_checks(store: Store) -> None:
    add_user(store)
    app = admin_app(store)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        created = await post(
            client, "/admin/lists", token, name="members", title=XSS, description=XSS
        )
        assert created.status_code == 303
        list_id = store.list_id("members")
        assert created.headers["location"] == f"/admin/lists/{list_id}?done=created"
        (summary,) = store.lists("members")
        assert (summary.title, summary.description) == (XSS, XSS)
        for page in ("/admin/lists", f"/admin/lists/{list_id}"):
            shown = await client.get(page)
            assert shown.status_code == 200
            assert XSS not in shown.text
            assert ESCAPED in shown.text

        # The CLI's refusals, with its words; nothing changed.
        before = data_snapshot(store)
        twice = await post(client, "/admin/lists", token, name="members", title="Again")
        assert twice.status_code == 400
        assert "list &#39;members&#39; already exists" in twice.text
        header_break = await post(client, "/admin/lists", token, name="a\nb", title="T")
        assert header_break.status_code == 400
        empty = await post(client, f"/admin/lists/{list_id}/describe", token, title=" ")
        assert empty.status_code == 400
        assert "title cannot be empty" in empty.text
        assert data_snapshot(store) == before

        described = await post(
            client, f"/admin/lists/{list_id}/describe", token, title="Members", description=""
        )
        assert described.headers["location"] == f"/admin/lists/{list_id}?done=described"
        (summary,) = store.lists("members")
        assert (summary.title, summary.description) == ("Members", None)

        store.create_list("other", title="Other")
        taken = await post(client, f"/admin/lists/{list_id}/rename", token, name="other")
        assert taken.status_code == 409
        assert "that list exists" in taken.text
        renamed = await post(client, f"/admin/lists/{list_id}/rename", token, name="tenants")
        assert renamed.status_code == 303
        assert store.list_id("tenants") == list_id
        assert "List renamed" in (await client.get(renamed.headers["location"])).text


async def test_an_upload_is_imported_in_the_background_with_its_bad_rows_and_rejects(
    store: Store, tmp_path: Path
) -> None:
    add_user(store)
    settings = admin_settings(var_dir=tmp_path / "var")
    store.create_list("members", title="Members")
    list_id = store.list_id("members")
    app = admin_app(store, settings=settings)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        answer = await upload(
            client, f"/admin/lists/{list_id}/import", token, "../members.csv", BAD_ROWS_CSV.encode()
        )
        assert answer.status_code == 303
        job_path = answer.headers["location"]
        assert re.fullmatch(r"/admin/imports/[\w-]+", job_path)
        page = await finished_import(client, job_path)
    assert page.status_code == 200
    text_shown = html.unescape(re.sub(r"<[^>]+>", "", page.text))
    assert re.search(r"Imported\s*2", text_shown)
    assert re.search(r"Invalid\s*2", text_shown)
    assert re.search(r"Duplicates merged\s*1", text_shown)
    # The first bad rows with their line numbers, as the CLI prints them.
    assert "../members.csv:3: " in text_shown
    assert "../members.csv:5: " in text_shown
    assert "../members.csv:6: duplicate of line 2" in text_shown
    assert [s.email for s in store.iter_subscribers("members")] == [
        "ana@example.org",
        "cy@example.org",
    ]
    # The upload was kept only while it was imported, never under anything served.
    assert not any((tmp_path / "var" / "uploads").iterdir())
    async with admin_client(app) as client:
        await sign_in(client, "ana")
        rejects = await client.get(f"{job_path}/rejects.csv")
    assert rejects.status_code == 200
    assert 'filename="members-rejects.csv"' in rejects.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(rejects.text)))
    assert [row["line"] for row in rows] == ["3", "5", "6"]
    assert rows[0]["email"] == "not-an-address"


async def test_an_upload_of_addresses_alone_and_short_rows_imports(
    store: Store, tmp_path: Path
) -> None:
    """The dashboard reads what the CLI reads: a file of addresses alone (no header), rows
    shorter than their header; and a merged row's report names the value it replaced."""
    add_user(store)
    store.create_list("members", title="Members")
    list_id = store.list_id("members")
    app = admin_app(store, settings=admin_settings(var_dir=tmp_path / "var"))
    plain = b"ana@example.org\ncy@example.org\n"
    short = b"email,name,city\nana@example.org,Ana,Leeds\ndee@example.org\nana@example.org,,York\n"
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        pages = []
        for name, body in (("plain.csv", plain), ("short.csv", short)):
            answer = await upload(client, f"/admin/lists/{list_id}/import", token, name, body)
            assert answer.status_code == 303, answer.text
            pages.append(await finished_import(client, answer.headers["location"]))
    shown = [html.unescape(re.sub(r"<[^>]+>", "", page.text)) for page in pages]
    assert re.search(r"Imported\s*2", shown[0])
    assert re.search(r"Invalid\s*0", shown[0])
    assert re.search(r"Imported\s*1", shown[1])
    assert re.search(r"Invalid\s*0", shown[1])
    assert "1 replaced an earlier value" in shown[1]
    assert "1 row(s) had fewer fields than the header" in shown[1]
    assert "(lines 3)" in shown[1]
    assert "fewer fields" not in shown[0]
    assert (
        "short.csv:4: duplicate of line 2 (ana@example.org): merged into it; "
        "city 'Leeds' replaced by 'York'"
    ) in shown[1]
    members = {s.email: s for s in store.iter_subscribers("members")}
    assert sorted(members) == ["ana@example.org", "cy@example.org", "dee@example.org"]
    assert (members["ana@example.org"].name, members["ana@example.org"].attributes) == (
        "Ana",
        {"city": "York"},
    )


async def test_a_100000_row_upload_does_not_hold_up_the_server(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    """The POST answers, and other pages are served, while the import cannot even start:
    the test holds SQLite's write lock, so nothing depends on how fast the machine is."""
    store = sqlite_store
    add_user(store)
    store.create_list("members", title="Members")
    list_id = store.list_id("members")
    body = "email,name\n" + "".join(f"p{i:06d}@example.org,Person {i}\n" for i in range(100_000))
    app = admin_app(store, settings=admin_settings(var_dir=tmp_path / "var"))
    blocker = create_engine(sqlite_url).connect()
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        blocker.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            answer = await upload(
                client, f"/admin/lists/{list_id}/import", token, "big.csv", body.encode()
            )
            assert answer.status_code == 303
            job_path = answer.headers["location"]
            progress = (await client.get(f"{job_path}/progress")).json()
            assert progress["finished"] is False
            assert progress["rows"] == 100_000
            running = await client.get(job_path)
            assert running.status_code == 200
            assert 'data-import-progress="' in running.text
            assert "<progress" in running.text
            assert (await client.get("/admin/lists")).status_code == 200
            # Meanwhile the upload waits in VAR_DIR/uploads, which nothing serves.
            assert len(list((tmp_path / "var" / "uploads").iterdir())) == 1
        finally:
            blocker.rollback()
            blocker.close()
        page = await finished_import(client, job_path)
    assert re.search(r"Imported</dt><dd>100,000<", page.text)
    assert store.count_subscribers("members") == 100_000


async def test_an_upload_over_the_limit_is_refused_with_a_clear_page(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from mailer.web.admin.imports_pages import UPLOAD_LIMIT

    store = sqlite_store
    add_user(store)
    add_user(store, "vic", role=AdminRole.VIEWER)
    store.create_list("members", title="Members")
    list_id = store.list_id("members")
    app = admin_app(store, settings=admin_settings(var_dir=tmp_path / "var"))
    before = data_snapshot(store)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        big = b"email\n" + b"x" * (UPLOAD_LIMIT + 10)
        answer = await upload(client, f"/admin/lists/{list_id}/import", token, "huge.csv", big)
        assert answer.status_code == 413
        assert "an upload may be 50 MB at most" in answer.text
        assert "Split it into several files" in answer.text
        nothing = await upload(client, f"/admin/lists/{list_id}/import", token, "", b"")
        assert nothing.status_code == 400
        assert "no file was chosen" in nothing.text
    async with admin_client(app) as client:
        token = (await sign_in(client, "vic")).csrf_token
        refused = await upload(client, f"/admin/lists/{list_id}/import", token, "a.csv", big)
        assert refused.status_code == 403
    assert data_snapshot(store) == before
    assert not (tmp_path / "var" / "uploads").exists() or not any(
        (tmp_path / "var" / "uploads").iterdir()
    )


async def test_search_by_address_or_name_a_page_at_a_time(store: Store) -> None:
    seed(
        store,
        "members",
        *((f"person{i:02d}@example.org", f"Person {i}") for i in range(7)),
        ("zoe@bücher.example", "Zoë 50%_off"),
    )
    seed(store, "other", ("ann@example.net", "Ann Person"))
    first = store.search_subscribers("PERSON", limit=3)
    assert [s.email for s in first.subscribers] == [f"person{i:02d}@example.org" for i in range(3)]
    assert first.next_after is not None
    rest = store.search_subscribers("person", after=first.next_after, limit=10)
    assert [s.email for s in rest.subscribers][-1] == "ann@example.net"  # by name
    assert rest.next_after is None
    assert [s.email for s in store.search_subscribers("person", list_name="other").subscribers] == [
        "ann@example.net"
    ]
    # The organiser's % and _ are plain characters, not wildcards.
    assert [s.name for s in store.search_subscribers("50%_").subscribers] == ["Zoë 50%_off"]
    assert store.search_subscribers("5_%").subscribers == []
    # Whoever left a list shows as unsubscribed on it.
    store.unsubscribe_email("person01@example.org", "members", source=UnsubscribeSource.ADMIN)
    found = store.search_subscribers("person01", list_name="members").subscribers
    assert [s.status for s in found] == [SubscriberStatus.UNSUBSCRIBED]


async def test_list_page_searches_its_members_and_adds_one(store: Store) -> None:
    add_user(store)
    seed(store, "members", *((f"p{i:03d}@example.org", f"Person {i}") for i in range(60)))
    seed(store, "members", ("xss@example.org", XSS))
    list_id = store.list_id("members")
    app = admin_app(store)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        first = await client.get(f"/admin/lists/{list_id}")
        assert first.text.count('href="/admin/subscribers/') == 50
        assert "Next page" in first.text
        found = await client.get(f"/admin/lists/{list_id}", params={"q": "script"})
        assert ESCAPED in found.text
        assert XSS not in found.text
        assert found.text.count('href="/admin/subscribers/') == 1
        added = await post(
            client, f"/admin/lists/{list_id}/subscribers", token, email="New@Example.org", name="N"
        )
        assert added.headers["location"] == f"/admin/lists/{list_id}?done=added"
        assert store.get_subscriber("new@example.org").name == "N"
        bad = await post(client, f"/admin/lists/{list_id}/subscribers", token, email="nope")
        assert bad.status_code == 400
        assert "is not a valid address" in bad.text
        # Someone who left is not added back by "add" (the CLI's rule): resubscribe is.
        store.unsubscribe_email("p001@example.org", None, source=UnsubscribeSource.PAGE)
        left = await post(
            client, f"/admin/lists/{list_id}/subscribers", token, email="p001@example.org"
        )
        assert left.status_code == 409
        assert "not added" in left.text


async def test_subscriber_page_unsubscribe_resubscribe_and_erase(store: Store) -> None:
    add_user(store)
    seed(store, "members", ("ana@example.org", XSS))
    seed(store, "other", ("ana@example.org", ""))
    ana = store.get_subscriber_id("ana@example.org")
    app = admin_app(store)
    async with admin_client(app) as client:
        token = (await sign_in(client, "ana")).csrf_token
        page = await client.get(f"/admin/subscribers/{ana}")
        assert page.status_code == 200
        assert ESCAPED in page.text
        assert XSS not in page.text
        assert "never unsubscribed, bounced or complained" in page.text
        search = await client.get("/admin/subscribers", params={"q": "ana@"})
        assert f'href="/admin/subscribers/{ana}"' in search.text

        gone = await post(client, f"/admin/subscribers/{ana}/unsubscribe", token, list="members")
        assert gone.headers["location"] == f"/admin/subscribers/{ana}?done=unsubscribed"
        assert not store.is_mailable(ana, store.list_id("members"))
        assert store.is_mailable(ana, store.list_id("other"))
        history = (await client.get(gone.headers["location"])).text
        assert "unsubscribed from list members (by the organiser)" in history

        before = data_snapshot(store)
        no_reason = await post(
            client, f"/admin/subscribers/{ana}/resubscribe", token, list="members", reason=""
        )
        assert no_reason.status_code == 400
        assert "a reason is needed" in no_reason.text
        assert data_snapshot(store) == before
        back = await post(
            client,
            f"/admin/subscribers/{ana}/resubscribe",
            token,
            list="members",
            reason="asked by phone",
        )
        assert back.headers["location"] == f"/admin/subscribers/{ana}?done=resubscribed"
        assert store.is_mailable(ana, store.list_id("members"))
        history = (await client.get(back.headers["location"])).text
        assert "resubscribed to list members by the organiser: asked by phone" in history

        # A complaint is lifted only when the organiser ticks the box (the CLI's --force).
        with store.engine.begin() as connection:
            store.suppress(
                connection,
                subscriber_id=ana,
                reason=SuppressionReason.COMPLAINED,
                source=UnsubscribeSource.FEEDBACK_LOOP,
            )
        refused = await post(
            client, f"/admin/subscribers/{ana}/resubscribe", token, list="members", reason="r"
        )
        assert refused.status_code == 409
        assert "complained" in refused.text
        forced = await post(
            client,
            f"/admin/subscribers/{ana}/resubscribe",
            token,
            list="members",
            reason="wrote to us",
            force="yes",
        )
        assert forced.status_code == 303
        assert store.is_mailable(ana, store.list_id("members"))

        # Erase asks first: the GET is a question and changes nothing.
        before = data_snapshot(store)
        question = await client.get(f"/admin/subscribers/{ana}/erase")
        assert "Erase ana@example.org and everything known about them?" in question.text
        assert data_snapshot(store) == before
        unconfirmed = await post(client, f"/admin/subscribers/{ana}/erase", token)
        assert unconfirmed.status_code == 303
        assert data_snapshot(store) == before
        erased = await post(client, f"/admin/subscribers/{ana}/erase", token, confirm="erase")
        assert erased.headers["location"] == "/admin/subscribers?done=erased"
        assert (await client.get(f"/admin/subscribers/{ana}")).status_code == 404
    record = store.subscriber_record("ana@example.org")
    assert record.subscriber is None
    assert record.history
    with store.engine.connect() as connection:
        kept = connection.execute(select(suppressions.c.reason)).scalars().all()
    assert SuppressionReason.COMPLAINED in kept


async def test_export_is_the_clis_csv_spreadsheet_safe_and_for_organisers(store: Store) -> None:
    add_user(store)
    add_user(store, "vic", role=AdminRole.VIEWER)
    rows = [
        ImportRow(
            Subscriber(
                email="ana@example.org", name='=HYPERLINK("x")', attributes={"city": "Leeds"}
            )
        ),
        ImportRow(Subscriber(email="bob@example.org", name="-Bob", attributes={"zone": "+1"})),
    ]
    store.import_subscribers("members", rows, source="test")
    list_id = store.list_id("members")
    app = admin_app(store)
    async with admin_client(app) as client:
        await sign_in(client, "ana")
        exported = await client.get(f"/admin/lists/{list_id}/export.csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert 'filename="members.csv"' in exported.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(exported.text))) == [
        ["email", "name", "status", "city", "zone"],
        ["ana@example.org", '\'=HYPERLINK("x")', "subscribed", "Leeds", ""],
        ["bob@example.org", "'-Bob", "subscribed", "", "'+1"],
    ]
    async with admin_client(app) as client:
        await sign_in(client, "vic")
        assert (await client.get(f"/admin/lists/{list_id}/export.csv")).status_code == 403
        # People's addresses are for organisers: a viewer reads the overview and reports,
        # and the menu does not offer what they may not open.
        for path in (
            f"/admin/lists/{list_id}",
            "/admin/lists",
            "/admin/subscribers",
            "/admin/events",
        ):
            assert (await client.get(path)).status_code == 403, path
        overview = await client.get("/admin")
        assert overview.status_code == 200
        assert 'href="/admin/lists"' not in overview.text
        assert 'href="/admin/events"' not in overview.text
        assert 'href="/admin/campaigns"' in overview.text
