"""Every route of the web app, walked from `app.routes` (so a route added later is walked
too, or the walk fails saying what it cannot fill in):

- GET (and HEAD) never changes anything, whatever the token: valid, a test message's,
  forged, tampered, naming nobody; with or without a trailing slash.
- every POST route carries a token, and without a valid one (made up, another key's,
  tampered, or naming nobody) it is refused and changes nothing, whatever the body;
- a test message's token on any POST route changes nothing;
- any other method is refused and changes nothing.

"Changes nothing" is every row of every table, before and after (web_support).
"""

from __future__ import annotations

import httpx
from starlette.routing import Route

from mailer.models import UnsubscribeSource
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web import create_app
from test_web import ONE_CLICK, make_settings, seed
from web_support import store_snapshot

SITE = "https://lists.example.org"  # make_settings' MAILER_BASE_URL
KEY = b"test-key-for-the-web-app-0123456789"
BODIES: list[tuple[bytes, dict[str, str]]] = [
    (ONE_CLICK.encode(), {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"", {"Content-Type": "application/x-www-form-urlencoded"}),
    (
        b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n'
        b"--b--\r\n",
        {"Content-Type": "multipart/form-data; boundary=b"},
    ),
]


def fill(route: Route, token: str) -> list[str]:
    """The route's path with `token` in place, and the same with a trailing slash."""
    unknown = set(route.param_convertors) - {"token"}
    assert not unknown, f"{route.path}: the walk does not know how to fill {unknown}"
    path = route.path.replace("{token}", token)
    return [path, path + "/"]


async def test_every_route_is_walked_gets_change_nothing_and_posts_need_a_valid_token(
    store: Store,
) -> None:
    signer = TokenSigner(KEY)
    ana, bob = seed(store, 2)
    list_id = store.list_id("members")
    store.unsubscribe(bob, list_id, source=UnsubscribeSource.PAGE)  # resubscribe can act
    valid = [signer.sign(subscriber_id=i, list_id=list_id) for i in (ana, bob)]
    flipped = valid[0][:5] + ("A" if valid[0][5] != "A" else "B") + valid[0][6:]
    invalid = [
        "garbage",
        flipped,
        valid[0][:-2],
        TokenSigner(b"someone-elses-key-0123456789").sign(subscriber_id=ana, list_id=list_id),
        signer.sign(subscriber_id=ana + 1000, list_id=list_id),  # signed, names nobody
        TokenSigner(b"someone-elses-key-0123456789").sign_test_message(list_id=list_id),
    ]
    test_message = signer.sign_test_message(list_id=list_id)

    app = create_app(store=store, signer=signer, settings=make_settings())
    routes = list(app.routes)
    assert all(isinstance(r, Route) for r in routes), "the walk knows only plain routes"
    paths = {r.path for r in routes if isinstance(r, Route)}
    assert {"/u/{token}", "/u/{token}/resubscribe", "/healthz"} <= paths
    transport = httpx.ASGITransport(app=app)
    walked: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:

        async def unchanged(
            method: str,
            path: str,
            *,
            content: bytes | None = None,
            headers: dict[str, str] | None = None,
        ) -> httpx.Response:
            before = store_snapshot(store)
            response = await client.request(method, path, content=content, headers=headers)
            assert store_snapshot(store) == before, f"{method} {path} changed the store"
            walked.append(f"{method} {path}")
            return response

        for route in routes:
            assert isinstance(route, Route)
            methods = route.methods or set()
            unknown = methods - {"GET", "HEAD", "POST"}
            assert not unknown, f"{route.path}: the walk does not know {unknown}"
            for path in fill(route, valid[0]):
                for other in ("PUT", "DELETE", "PATCH"):
                    if other not in methods:
                        assert (await unchanged(other, path)).status_code == 405
            if methods & {"GET", "HEAD"}:
                tokens = [*valid, test_message, *invalid]
                for path in dict.fromkeys(p for t in tokens for p in fill(route, t)):
                    for method in ("GET", "HEAD"):
                        response = await unchanged(method, path)
                        assert response.status_code in (200, 404), (method, path)
            if "POST" not in methods:
                continue
            assert "token" in route.param_convertors, f"POST {route.path} takes no token"
            for token in invalid:
                for path in fill(route, token):
                    for body, headers in BODIES:
                        headers = {**headers, "Origin": SITE}
                        response = await unchanged("POST", path, content=body, headers=headers)
                        assert response.status_code in (404, 429), (path, response.status_code)
            for path in fill(route, test_message):
                for body, headers in BODIES:
                    headers = {**headers, "Origin": SITE}
                    response = await unchanged("POST", path, content=body, headers=headers)
                    assert response.status_code == 200
                    assert "This link came from a test message" in response.text
            # The snapshots do see a change: a valid token acts on this route.
            before = store_snapshot(store)
            for token in valid:
                response = await client.post(
                    route.path.replace("{token}", token), headers={"Origin": SITE}
                )
                assert response.status_code == 200
            assert store_snapshot(store) != before, f"POST {route.path}: no valid token acted"
    assert len(walked) > 100
