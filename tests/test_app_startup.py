"""What making an app costs, and that the shortcuts keep what the app did.

An app (`create_app`) no longer hashes the dummy password for sign-ins of unknown users
when it is made: the dummy is made at the first password check of the process, once per
set of Argon2 parameters, and a sign-in for an unknown name still costs one Argon2
verification against a hash of those parameters. Templates compiled by one app are
reused by the next (the same code, each app with its own settings: its time zone); an
edited template is compiled again.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import VerifyMismatchError
from jinja2 import StrictUndefined

from admin_support import (
    FAST_PASSWORDS,
    KEY,
    SITE,
    add_user,
    admin_app,
    admin_client,
    admin_settings,
    login_attempt,
    sign_in,
)
from campaign_support import EVENT, seed_list
from mailer.assets import BUILTIN_WEB
from mailer.clock import utcnow
from mailer.models import CampaignStatus
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.admin import context
from mailer.web.admin.context import Admin
from mailer.web.admin.passwords import Passwords
from mailer.web.rendering import COMPILED as PAGES_COMPILED

# Each test's hasher has a memory cost of its own: the process-wide dummy for it is new.
_MEMORY_COSTS = itertools.count(2048, 8)


class CountingHasher(PasswordHasher):
    """Argon2id at the smallest cost, noting what it hashes and what it checks against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=next(_MEMORY_COSTS), parallelism=1)
        self.hashed = 0
        self.checked_against: list[str] = []
        self.mismatched = 0
        self._lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.hashed += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.checked_against.append(hash if isinstance(hash, str) else hash.decode())
        try:
            return super().verify(hash, password)
        except VerifyMismatchError:
            with self._lock:
                self.mismatched += 1
            raise


def test_making_passwords_or_an_app_hashes_nothing(sqlite_store: Store) -> None:
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    create_app(
        store=sqlite_store,
        signer=TokenSigner(KEY),
        settings=admin_settings(),
        passwords=passwords,
    )
    assert hasher.hashed == 0


async def test_an_unknown_name_costs_one_argon2_check_like_a_known_one(
    sqlite_store: Store,
) -> None:
    """Through the sign-in form: a wrong password for a real user and any password for a
    name nobody has are each checked once, against a hash of the same parameters, and
    both fail the same way (a mismatch, not an unreadable hash)."""
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    user = add_user(sqlite_store, "ana")
    sqlite_store.rehash_admin_password(
        user.id, password_hash=hasher.hash("the right password, long"), now=utcnow()
    )
    app = create_app(
        store=sqlite_store,
        signer=TokenSigner(KEY),
        settings=admin_settings(),
        passwords=passwords,
        post_rate_per_minute=None,
    )
    async with admin_client(app) as client:
        assert (await login_attempt(client, "nobody", "some password here")).status_code == 401
        assert (await login_attempt(client, "ana", "a wrong password here")).status_code == 401
    unknown, known = hasher.checked_against
    assert hasher.mismatched == 2
    assert extract_parameters(unknown) == extract_parameters(known)
    assert unknown != known
    assert hasher.hashed == 2  # ana's password, and the dummy once


def test_the_dummy_is_made_once_for_every_checker_with_those_parameters() -> None:
    """Made at the first check (whoever it is for: a known user's first check pays it
    too, so that extra cost tells nothing), once, even with checks in many threads."""
    hasher = CountingHasher()
    known = hasher.hash("the right password, long")
    many = [Passwords(hasher) for _ in range(8)]
    assert hasher.hashed == 1
    results: list[bool] = []
    lock = threading.Lock()

    def check(passwords: Passwords, n: int) -> None:
        ok = passwords.verify(known if n % 2 else None, "the right password, long")
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=check, args=(p, n)) for n, p in enumerate(many)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 4 + [True] * 4
    assert hasher.hashed == 2  # the known hash, and one dummy
    dummies = {h for h in hasher.checked_against if h != known}
    assert len(dummies) == 1


def test_apps_reuse_compiled_templates_set_up_as_before(sqlite_store: Store) -> None:
    """The second app compiles nothing: its pages' and dashboard's templates come from the
    process's cache, into Environments set up as before (autoescape, strict undefined)."""
    admin_app(sqlite_store)
    compiled = (context.COMPILED.compiled, PAGES_COMPILED.compiled)
    admin_app(sqlite_store)
    assert (context.COMPILED.compiled, PAGES_COMPILED.compiled) == compiled
    admin = Admin(
        store=sqlite_store,
        settings=admin_settings(),
        signer=TokenSigner(KEY),
        site_origin=SITE,
        now=utcnow,
        passwords=FAST_PASSWORDS,
    )
    assert context.COMPILED.compiled == compiled[0]
    environment = admin.environment
    assert environment.bytecode_cache is context.COMPILED
    assert environment.autoescape is True
    assert environment.undefined is StrictUndefined
    assert environment.auto_reload is False
    assert "&lt;b&gt;" in environment.from_string("{{ v }}").render(v="<b>")


async def test_each_app_shows_times_in_its_own_zone(sqlite_store: Store, tmp_path: Path) -> None:
    """Two apps sharing compiled templates, with two time zones: each its own."""
    seed_list(sqlite_store, tmp_path, 1)
    when = datetime(2031, 1, 15, 12, 0, tzinfo=UTC)
    sqlite_store.create_campaign(
        event_path=str(EVENT),
        event_slug="zones",
        list_id=sqlite_store.list_id("members"),
        subject="Times in zones",
        status=CampaignStatus.SCHEDULED,
        scheduled_at=when,
    )
    add_user(sqlite_store, "ana")
    shown = {}
    for zone in ("Europe/London", "America/New_York"):
        app = admin_app(sqlite_store, settings=admin_settings(timezone=zone))
        async with admin_client(app) as client:
            await sign_in(client, "ana")
            shown[zone] = (await client.get("/admin/campaigns")).text
    for zone, page in shown.items():
        assert when.astimezone(ZoneInfo(zone)).strftime("%H:%M %Z") in page


async def test_an_edited_template_is_compiled_again(sqlite_store: Store, tmp_path: Path) -> None:
    """The organiser's pages (MAILER_TEMPLATES_DIR/web): a change shows in the next app."""
    web = tmp_path / "templates" / "web"
    builtin = BUILTIN_WEB
    web.mkdir(parents=True)
    for path in builtin.glob("*.*"):
        (web / path.name).write_bytes(path.read_bytes())
    settings = admin_settings(templates_dir=tmp_path / "templates")
    pages = []
    for heading in ("First words", "Second words"):
        message = (builtin / "message.html.j2").read_text("utf-8")
        (web / "message.html.j2").write_text(message.replace("{{ title }}", heading), "utf-8")
        app = admin_app(sqlite_store, settings=settings)
        async with admin_client(app) as client:
            pages.append((await client.get("/u/not-a-valid-token")).text)
    assert "First words" in pages[0]
    assert "Second words" in pages[1]
    assert "First words" not in pages[1]
