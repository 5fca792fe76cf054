"""Dashboard paths naming a record id: an id beyond any stored (beyond PostgreSQL's
BIGINT, even) is "not found", never a server error."""

from __future__ import annotations

import pytest

from admin_support import add_user, admin_app, admin_client, sign_in
from mailer.store import Store

TOO_BIG = "9" * 20  # > 2**63: PostgreSQL refused it as a BIGINT parameter (a 500)


@pytest.mark.parametrize(
    "path",
    [
        f"/admin/campaigns/{TOO_BIG}",
        f"/admin/campaigns/{TOO_BIG}/report",
        f"/admin/lists/{TOO_BIG}",
        f"/admin/subscribers/{TOO_BIG}",
        "/admin/campaigns/999999999999999999",  # 18 digits: a well-formed id nobody has
        "/admin/lists/999999999999999999",
        "/admin/subscribers/999999999999999999",
    ],
)
async def test_an_id_nobody_has_is_not_found(store: Store, path: str) -> None:
    add_user(store)
    async with admin_client(admin_app(store)) as client:
        await sign_in(client, "ana")
        answer = await client.get(path)
    assert answer.status_code == 404, answer.text[:300]
