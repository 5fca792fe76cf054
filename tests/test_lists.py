"""Lists for the organiser (issue 10): a public title and description, create, describe,
rename and delete, and the title wherever recipients read the list's name."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from campaign_support import EVENT, cli_environment, make_settings, seed_list
from cli_support import run_mailer_here
from mailer.errors import InputError, NotFoundError, StoreError
from mailer.models import CampaignStatus, UnsubscribeSource
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web import create_app
from test_web import KEY, ONE_CLICK, seed
from test_web import make_settings as web_settings

TITLE = "Friends of the CWO in London"


async def test_the_unsubscribe_pages_show_the_lists_title(store: Store) -> None:
    """The page behind a message's link asks "Unsubscribe from TITLE?" and confirms with
    the title; the organiser's short name for the list appears on neither (both stores)."""
    store.create_list("ldn", title=TITLE)
    (ann,) = seed(store, 1, list_name="ldn")
    settings = web_settings()
    token = TokenSigner(KEY).sign(subscriber_id=ann, list_id=store.list_id("ldn"))
    app = create_app(store=store, signer=TokenSigner(KEY), settings=settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=settings.base_url
    ) as client:
        page = await client.get(f"/u/{token}")
        done = await client.post(f"/u/{token}", content=ONE_CLICK.encode())
    assert page.status_code == 200
    assert f"Unsubscribe from {TITLE}?" in page.text
    assert done.status_code == 200
    assert f"<strong>{TITLE}</strong>" in done.text
    assert "ldn" not in page.text + done.text


def test_create_describe_rename_and_list(tmp_path: Path) -> None:
    env = cli_environment(tmp_path, 2525)
    made = run_mailer_here(
        env, tmp_path, "lists", "create", "members", "--title", "Members", "-d", "Every member"
    )
    assert made.returncode == 0, made.stderr
    again = run_mailer_here(env, tmp_path, "lists", "create", "members", "--title", "Other")
    assert again.returncode == 1
    assert "error: list 'members' already exists" in again.stderr
    assert "Traceback" not in again.stderr

    described = run_mailer_here(
        env, tmp_path, "lists", "describe", "members", "--title", "Members of the CWO"
    )
    assert described.returncode == 0, described.stderr
    assert "title:       Members of the CWO" in described.stdout
    assert "description: Every member" in described.stdout  # untouched

    renamed = run_mailer_here(env, tmp_path, "lists", "rename", "members", "comrades")
    assert renamed.returncode == 0, renamed.stderr
    shown = run_mailer_here(env, tmp_path, "lists")
    assert re.search(r"comrades\s*│\s*Members of the CWO\s*│\s*0\s*│\s*0", shown.stdout)
    assert "members " not in shown.stdout
    gone = run_mailer_here(env, tmp_path, "subscribers", "count", "--list", "members")
    assert gone.returncode == 1
    assert "no list named 'members' (lists: comrades)" in gone.stderr

    # A title that could break a header is refused with one line, and nothing changes.
    bad = run_mailer_here(env, tmp_path, "lists", "describe", "comrades", "--title", "A\nB")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: title: control character U+000A")
    assert "Members of the CWO" in run_mailer_here(env, tmp_path, "lists").stdout


def test_delete_asks_first_keeps_unsubscribes_and_a_list_made_again_honours_them(
    tmp_path: Path,
) -> None:
    env = cli_environment(tmp_path, 2525)
    (tmp_path / "people.csv").write_text(
        "email\nann@example.org\nbob@example.org\ncat@example.org\n", encoding="utf-8"
    )
    assert (
        run_mailer_here(env, tmp_path, "subscribers", "import", "people.csv", "-l", "m").returncode
        == 0
    )
    left = run_mailer_here(
        env, tmp_path, "subscribers", "unsubscribe", "bob@example.org", "-l", "m"
    )
    assert left.returncode == 0, left.stderr

    unasked = run_mailer_here(env, tmp_path, "lists", "delete", "m")
    assert unasked.returncode == 1
    assert "not confirmed: Delete list 'm'?" in unasked.stderr
    assert "pass --yes" in unasked.stderr
    assert run_mailer_here(env, tmp_path, "subscribers", "count", "-l", "m").stdout.strip() == "2"

    deleted = run_mailer_here(env, tmp_path, "lists", "delete", "m", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "3 member(s) taken off; 1 unsubscribe record(s) kept" in deleted.stdout
    assert "No lists yet" in run_mailer_here(env, tmp_path, "lists").stdout

    # Made again under the same name (here by an import): Bob, who left it, stays off.
    made = run_mailer_here(env, tmp_path, "lists", "create", "m", "--title", "M again")
    assert made.returncode == 0, made.stderr
    assert "its 1 recorded unsubscribe(s) apply again" in made.stdout
    again = run_mailer_here(env, tmp_path, "subscribers", "import", "people.csv", "-l", "m")
    assert "2 imported" in again.stdout
    assert "1 suppressed" in again.stdout
    listed = run_mailer_here(env, tmp_path, "subscribers", "list", "-l", "m").stdout
    assert "ann@example.org" in listed
    assert "bob@example.org" not in listed


def test_delete_is_refused_while_a_campaign_to_the_list_is_unfinished(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 2525)
    with Store.open(settings.database_url) as store:
        seed_list(store, tmp_path, 3)
        campaign_id = store.create_campaign(
            event_path=str(EVENT),
            event_slug="meeting",
            list_id=store.list_id("members"),
            subject="Meeting",
            status=CampaignStatus.SCHEDULED,
        )
    env = cli_environment(tmp_path, 2525)
    refused = run_mailer_here(env, tmp_path, "lists", "delete", "members", "--yes")
    assert refused.returncode == 1
    assert f"list 'members' is used by campaign {campaign_id}, which is scheduled" in (
        refused.stderr
    )
    assert f"mailer campaign cancel {campaign_id}" in refused.stderr
    assert run_mailer_here(env, tmp_path, "subscribers", "count", "-l", "members").stdout == "3\n"

    cancelled = run_mailer_here(env, tmp_path, "campaign", "cancel", str(campaign_id), "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    deleted = run_mailer_here(env, tmp_path, "lists", "delete", "members", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    # The campaign and its record stay, under the list's name.
    history = run_mailer_here(env, tmp_path, "campaign", "list")
    assert re.search(rf"{campaign_id}\s*│\s*cancelled\s*│\s*Meeting\s*│\s*members", history.stdout)


def test_list_store_rules(store: Store) -> None:
    """On SQLite and PostgreSQL: names and titles are checked, a deleted list's name is
    not reused by a rename, an old link to a deleted list still unsubscribes."""
    with pytest.raises(InputError, match="title cannot be empty"):
        store.create_list("a", title="  ")
    with pytest.raises(InputError, match="name cannot be empty"):
        store.create_list(" ", title="A")
    with pytest.raises(InputError, match="title: 201 characters is longer than the 200"):
        store.create_list("a", title="x" * 201)
    store.create_list("a", title="List A", description="About A")
    store.create_list("b", title="List B")
    (summary,) = store.lists("a")
    assert (summary.title, summary.description) == ("List A", "About A")
    with pytest.raises(StoreError, match="cannot rename 'a' to 'b': that list exists"):
        store.rename_list("a", "b")

    (subscriber_id,) = seed(store, 1, list_name="b")
    list_id = store.list_id("b")
    store.delete_list("b")
    with pytest.raises(StoreError, match="a deleted list keeps that name"):
        store.rename_list("a", "b")
    with pytest.raises(NotFoundError, match="no list named 'b' \\(lists: a\\)"):
        store.count_subscribers("b")
    assert [summary.name for summary in store.lists()] == ["a"]
    # Someone holding an old message of the deleted list can still leave it...
    recipient = store.page_recipient(subscriber_id, list_id)
    assert recipient is not None
    assert recipient.list_title == "List B"
    assert store.unsubscribe(subscriber_id, list_id, source=UnsubscribeSource.ONE_CLICK)
    # ... and the list made again keeps them off.
    change = store.create_list("b", title="List B again")
    assert (change.revived, change.suppressions) == (True, 1)
    seed(store, 1, list_name="b")
    assert store.count_subscribers("b") == 0
