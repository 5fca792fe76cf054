"""Helpers for the dashboard's tests: users, an app with cheap password hashing, and an
httpx client signed in through the real sign-in form (cookie and CSRF token included).

    app = admin_app(store)
    async with admin_client(app) as client:
        page = await sign_in(client, add_user(store, "ana"))
        await client.post("/admin/...", data={"csrf_token": page.csrf_token, ...})
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from pydantic import SecretStr
from starlette.applications import Starlette

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.store import Store
from mailer.store.admin import AdminRole, AdminUser
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.admin.passwords import Passwords

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE = "https://lists.example.org"
KEY = b"test-key-for-the-web-app-0123456789"
PASSWORD = "correct horse battery staple"
# Argon2id still, with the smallest cost: the tests check behaviour, not hashing strength.
FAST_PASSWORDS = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
SAME_ORIGIN = {"Origin": SITE}

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def admin_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "from_name": "Leeds Tenants Union",
        "from_address": "invitations@example.org",
        "secret_key": SecretStr(KEY.decode()),
        "templates_dir": REPO_ROOT / "templates",
        "base_url": SITE,
        "timezone": "Europe/London",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def admin_app(
    store: Store,
    *,
    settings: Settings | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Starlette:
    return create_app(
        store=store,
        signer=TokenSigner(KEY),
        settings=settings or admin_settings(),
        now=now,
        passwords=FAST_PASSWORDS,
        post_rate_per_minute=None,
    )


def add_user(
    store: Store, name: str = "ana", *, role: AdminRole = AdminRole.ORGANISER
) -> AdminUser:
    return store.add_admin_user(
        name, role=role, password_hash=FAST_PASSWORDS.hash(PASSWORD), now=utcnow()
    )


@asynccontextmanager
async def admin_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
        yield client


def csrf_token_in(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


@dataclass(frozen=True, slots=True)
class SignedInPage:
    response: httpx.Response
    csrf_token: str


async def login_attempt(
    client: httpx.AsyncClient, name: str, password: str, *, next_path: str = "/admin"
) -> httpx.Response:
    """One sign-in through the form: its page (for the double-submit token), then POST."""
    form = await client.get("/admin/login")
    return await client.post(
        "/admin/login",
        data={
            "csrf_token": csrf_token_in(form.text),
            "name": name,
            "password": password,
            "next": next_path,
        },
        headers=SAME_ORIGIN,
    )


async def sign_in(
    client: httpx.AsyncClient, user: AdminUser | str, password: str = PASSWORD
) -> SignedInPage:
    """Sign in as `user`; the overview page and the session's CSRF token."""
    name = user if isinstance(user, str) else user.name
    answer = await login_attempt(client, name, password)
    assert answer.status_code == 303, answer.text
    page = await client.get("/admin")
    assert page.status_code == 200, page.text
    return SignedInPage(page, csrf_token_in(page.text))
