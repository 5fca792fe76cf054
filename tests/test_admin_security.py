"""The dashboard's security, walked from `app.routes` so a route added later is covered
too (or the walk fails, naming the path parameter it cannot fill):

- every /admin route without a session: GET/HEAD -> 303 to /admin/login, anything
  else -> 401, and nothing changes (only the sign-in page answers, signin.PUBLIC_PATHS);
- every admin response: Cache-Control no-store, a CSP without 'unsafe-inline';
- every POST with the CSRF token missing or wrong, or from another origin -> 403, nothing
  changed; a viewer's POSTs -> 403, nothing changed; organiser pages -> 403 for a viewer;
- a removed user's session (and a reset password's) ends at once; idle timeout and the
  absolute lifetime on the injected clock;
- 10 failed sign-ins lock the account (and the address) for 15 minutes, logged without
  the password; the sign-in's `next` never leaves the site;
- a list name, subscriber name and event title written as HTML show as text.

"Changes nothing" is every row of every table, before and after (web_support).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from admin_support import (
    PASSWORD,
    SAME_ORIGIN,
    add_user,
    admin_app,
    admin_client,
    admin_settings,
    csrf_token_in,
    login_attempt,
    sign_in,
)
from campaign_support import EVENT, seed_list
from mailer.campaigns import lifecycle
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.admin import AdminRole
from mailer.web.admin.headers import is_admin_path
from mailer.web.admin.signin import PUBLIC_PATHS
from mailer.web.admin.static import STATIC_FILES
from web_support import store_snapshot

# How the walk fills each path parameter an admin route may have: a callable of the
# seeded ids. A new parameter fails the walk until it is added here.
FILLERS: dict[str, Callable[[dict[str, int]], str]] = {
    "campaign_id": lambda ids: str(ids["campaign"]),
    "list_id": lambda ids: str(ids["list"]),
    "subscriber_id": lambda ids: str(ids["subscriber"]),
    "import_id": lambda ids: str(ids.get("import", 1)),
    "job_id": lambda ids: str(ids.get("import", 1)),
    "name": lambda _ids: "london-public-meeting.md",
    "event": lambda _ids: "london-public-meeting.md",
    "slug": lambda _ids: "london-public-meeting",
}
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def seed(store: Store, tmp_path: Path) -> dict[str, int]:
    seed_list(store, tmp_path, 3)
    event = load_event(EVENT)
    plan = lifecycle.plan_schedule(store, event=event, list_name="members", new=True)
    campaign = lifecycle.schedule(
        store, plan, event=event, event_path=EVENT, when=datetime(2031, 5, 1, tzinfo=UTC)
    )
    return {
        "campaign": campaign.id,
        "list": store.list_id("members"),
        "subscriber": store.get_subscriber_id("person00000@example.org"),
    }


def admin_routes_of(app: object) -> list[Route]:
    routes = [r for r in app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]
    assert len(routes) == len(app.routes), "the walk knows only plain routes"  # type: ignore[attr-defined]
    found = [r for r in routes if is_admin_path(r.path) and r.path.startswith("/admin")]
    assert {"/admin", "/admin/login", "/admin/campaigns/new"} <= {r.path for r in found}
    return found


def test_the_route_walks_leave_out_only_the_dashboards_static_files(sqlite_store: Store) -> None:
    """test_web_routes.py leaves every path with the dashboard's headers (is_admin_path)
    to this file, and this file walks those under /admin: anything else with those
    headers (/static/admin*) must be one of the public static files, GET only, or a route
    added there would be walked by neither."""
    app = admin_app(sqlite_store)
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert len(routes) == len(app.routes), "the walks know only plain routes"
    between = [r for r in routes if is_admin_path(r.path) and not r.path.startswith("/admin")]
    assert between, "the walk expects the dashboard's static files"
    for route in between:
        assert route.path in STATIC_FILES, f"{route.path}: walked by neither route walk"
        assert route.methods == {"GET", "HEAD"}, route.path


def fill(route: Route, ids: dict[str, int]) -> str:
    path = route.path
    for name in route.param_convertors:
        assert name in FILLERS, f"{route.path}: the walk does not know how to fill {name!r}"
        path = re.sub(r"\{" + name + r"(:[^}]*)?\}", FILLERS[name](ids), path)
    assert "{" not in path, path
    return path


async def test_no_admin_route_answers_without_a_session(store: Store, tmp_path: Path) -> None:
    """Every admin route and method, without a session cookie: GET/HEAD redirect to the
    sign-in page, others get 401; any other method 405; nothing changes; every answer
    carries no-store and the dashboard's CSP."""
    ids = seed(store, tmp_path)
    app = admin_app(store)
    walked = 0
    async with admin_client(app) as client:
        for route in admin_routes_of(app):
            path = fill(route, ids)
            for method in sorted(route.methods or ()):
                before = store_snapshot(store)
                answer = await client.request(method, path, headers=SAME_ORIGIN)
                assert store_snapshot(store) == before, f"{method} {path} changed the store"
                walked += 1
                assert answer.headers["cache-control"] == "no-store", path
                csp = answer.headers["content-security-policy"]
                assert "unsafe-inline" not in csp
                assert "script-src 'self'" in csp
                if route.path in PUBLIC_PATHS:
                    continue
                if method in ("GET", "HEAD"):
                    assert answer.status_code == 303, (method, path)
                    assert answer.headers["location"].startswith("/admin/login?next=")
                else:
                    assert answer.status_code == 401, (method, path, answer.status_code)
            for other in ("PUT", "DELETE", "PATCH"):
                if other not in (route.methods or ()):
                    answer = await client.request(other, path)
                    assert answer.status_code in (401, 405), (other, path)
    assert walked >= 12


async def test_csrf_origin_and_viewer_refusals_change_nothing(store: Store, tmp_path: Path) -> None:
    """For every admin POST (sign-in aside): an organiser without the token, with another
    session's token, or from another origin gets 403; a viewer gets 403 even with a good
    token; nothing changes. A viewer reads the overview and reports, but not the pages
    only organisers use."""
    ids = seed(store, tmp_path)
    app = admin_app(store)
    add_user(store, "ana")
    add_user(store, "vic", role=AdminRole.VIEWER)
    async with admin_client(app) as organiser, admin_client(app) as viewer:
        ana = await sign_in(organiser, "ana")
        vic = await sign_in(viewer, "vic")
        posts = [r for r in admin_routes_of(app) if "POST" in (r.methods or ())]
        posts = [r for r in posts if r.path not in PUBLIC_PATHS]
        assert len(posts) >= 6
        for route in posts:
            path = fill(route, ids)
            attempts: list[tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]] = [
                (organiser, {}, SAME_ORIGIN),
                (organiser, {"csrf_token": ""}, SAME_ORIGIN),
                (organiser, {"csrf_token": vic.csrf_token}, SAME_ORIGIN),
                (organiser, {"csrf_token": ana.csrf_token + "x"}, SAME_ORIGIN),
                (organiser, {"csrf_token": ana.csrf_token}, {"Origin": "https://evil.example"}),
                (
                    organiser,
                    {"csrf_token": ana.csrf_token},
                    {**SAME_ORIGIN, "Sec-Fetch-Site": "cross-site"},
                ),
            ]
            if route.path != "/admin/logout":
                attempts.append((viewer, {"csrf_token": vic.csrf_token}, SAME_ORIGIN))
            for client, data, headers in attempts:
                before = store_snapshot(store)
                answer = await client.post(path, data=data, headers=headers)
                assert answer.status_code == 403, (path, data, headers, answer.status_code)
                assert store_snapshot(store) == before, f"POST {path} changed the store"
        for route in admin_routes_of(app):
            if "GET" not in (route.methods or ()) or route.path in PUBLIC_PATHS:
                continue
            needed = getattr(route.endpoint, "required_role", None)
            assert needed is not None, f"{route.path}: not behind guard()"
            answer = await viewer.get(fill(route, ids))
            expected = 403 if needed is AdminRole.ORGANISER else 200
            assert answer.status_code == expected, (route.path, answer.status_code)
        # Both sessions still work: nothing above signed anyone out.
        assert (await viewer.get("/admin")).status_code == 200
        assert (await organiser.get("/admin")).status_code == 200


async def test_removed_users_and_reset_passwords_end_sessions_at_once(
    sqlite_store: Store,
) -> None:
    store = sqlite_store
    app = admin_app(store)
    add_user(store, "ana")
    add_user(store, "bob")
    async with admin_client(app) as ana, admin_client(app) as bob:
        await sign_in(ana, "ana")
        await sign_in(bob, "bob")
        assert store.remove_admin_user("ana") == 1
        gone = await ana.get("/admin/campaigns")
        assert gone.status_code == 303
        assert (await ana.post("/admin/logout", headers=SAME_ORIGIN)).status_code == 401
        assert (await bob.get("/admin")).status_code == 200
        store.set_admin_password("bob", password_hash="$argon2id$v=19$x", now=datetime.now(UTC))
        assert (await bob.get("/admin")).status_code == 303


async def test_sessions_end_when_idle_and_at_their_lifetime(sqlite_store: Store) -> None:
    store = sqlite_store
    clock = Clock(datetime(2031, 1, 1, 9, 0, tzinfo=UTC))
    settings = admin_settings(admin_idle_timeout=600, admin_session_lifetime=3600)
    app = admin_app(store, settings=settings, now=clock)
    add_user(store)
    async with admin_client(app) as client:
        await sign_in(client, "ana")
        for _ in range(6):  # in use every 9 minutes: never idle, until the hour is up
            clock.now += timedelta(minutes=9)
            assert (await client.get("/admin")).status_code == 200
        clock.now += timedelta(minutes=7)  # 61 minutes after signing in
        assert (await client.get("/admin")).status_code == 303
        await sign_in(client, "ana")
        clock.now += timedelta(minutes=10, seconds=1)
        assert (await client.get("/admin")).status_code == 303


async def test_ten_failures_lock_the_account_and_the_address_for_15_minutes(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = sqlite_store
    clock = Clock(datetime(2031, 1, 1, 9, 0, tzinfo=UTC))
    app = admin_app(store, now=clock)
    add_user(store, "ana")
    add_user(store, "bob")
    wrong = "not the password at all"
    caplog.set_level(logging.INFO, logger="mailer.web.admin")
    async with admin_client(app) as client:
        for attempt in range(10):
            answer = await login_attempt(client, "ana", wrong + str(attempt))
            assert answer.status_code == 401
        locked = await login_attempt(client, "ana", PASSWORD)
        assert locked.status_code == 429
        assert "Too many failed sign-ins" in locked.text
        assert (await client.get("/admin")).status_code == 303  # no session was made
        # The same address is locked out too, whichever account it tries.
        assert (await login_attempt(client, "bob", PASSWORD)).status_code == 429
        clock.now += timedelta(minutes=15, seconds=1)
        assert (await login_attempt(client, "ana", PASSWORD)).status_code == 303
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "event=admin-sign-in-locked" in messages
    assert "user=ana" in messages
    assert wrong not in messages
    assert PASSWORD not in messages


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/u/x", "\\\\x"])
async def test_sign_in_never_sends_the_browser_elsewhere(sqlite_store: Store, target: str) -> None:
    add_user(sqlite_store)
    async with admin_client(admin_app(sqlite_store)) as client:
        answer = await login_attempt(client, "ana", PASSWORD, next_path=target)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/admin/"


async def test_sign_in_needs_its_form_token_and_our_origin(sqlite_store: Store) -> None:
    add_user(sqlite_store)
    async with admin_client(admin_app(sqlite_store)) as client:
        form = await client.get("/admin/login")
        token = csrf_token_in(form.text)
        data = {"csrf_token": token, "name": "ana", "password": PASSWORD}
        foreign = await client.post(
            "/admin/login", data=data, headers={"Origin": "https://x.example"}
        )
        assert foreign.status_code == 403
        forged = await client.post(
            "/admin/login", data={**data, "csrf_token": "made-up"}, headers=SAME_ORIGIN
        )
        assert forged.status_code == 403
        assert (await client.get("/admin")).status_code == 303


async def test_names_and_titles_written_as_html_show_as_text(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Stored-XSS attempts in a list name, a subscriber's name and an event title appear
    escaped on the overview, campaigns, a campaign, its report and a new campaign."""
    store = sqlite_store
    templates = tmp_path / "templates"
    (templates / "events").mkdir(parents=True)
    text = EVENT.read_text(encoding="utf-8")
    text = text.replace('subject: "Invitation:', f'subject: "{XSS.replace(chr(34), chr(39))}')
    text = text.replace('title: "CWO', f'title: "{XSS.replace(chr(34), chr(39))} CWO')
    event_path = templates / "events" / "hostile.md"
    event_path.write_text(text, encoding="utf-8")
    csv_path = tmp_path / "hostile.csv"
    csv_path.write_text(f'email,name\nzoe@example.org,"{XSS.replace(chr(34), chr(39))}"\n')
    from mailer.audience.importer import import_file

    list_name = f"{XSS}"
    import_file(store, csv_path, list_name=list_name, rejects_path=tmp_path / "rejects.csv")
    event = load_event(event_path)
    plan = lifecycle.plan_schedule(store, event=event, list_name=list_name, new=True)
    campaign = lifecycle.schedule(
        store, plan, event=event, event_path=event_path, when=datetime(2031, 5, 1, tzinfo=UTC)
    )
    settings = admin_settings(templates_dir=templates)
    app = admin_app(store, settings=settings)
    add_user(store)
    async with admin_client(app) as client:
        await sign_in(client, "ana")
        pages = [
            "/admin",
            "/admin/campaigns",
            f"/admin/campaigns/{campaign.id}",
            f"/admin/campaigns/{campaign.id}/report",
            "/admin/campaigns/new",
        ]
        for path in pages:
            answer = await client.get(path)
            assert answer.status_code == 200, path
            assert "<script>alert" not in answer.text, path
            assert "<img src=x" not in answer.text, path
        overview = (await client.get("/admin")).text
        assert "&lt;script&gt;alert(" in overview
