"""Every route of the web app, walked from `app.routes` (so a route added later is walked
too, or the walk fails saying what it cannot fill in):

- GET (and HEAD) never changes anything, whatever the token: valid, a test message's,
  forged, tampered, naming nobody; with or without a trailing slash.
- every POST route carries a token, and without a valid one (made up, another key's,
  tampered, or naming nobody) it is refused and changes nothing, whatever the body;
- a test message's token on any POST route changes nothing;
- RSVP routes (/r/) take RSVP tokens: an unsubscribe token there is as invalid as a forged
  one, and an RSVP token is invalid on the unsubscribe routes;
- any other method is refused and changes nothing;
- the webhook routes (SIGNED_ROUTES) carry no token but a signed body: unsigned, badly
  signed or forged bodies get 401 (413 when too large) and change nothing, and a validly
  signed one is recorded (details in test_webhooks.py).

"Changes nothing" is every row of every table, before and after (web_support).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr
from starlette.routing import Route

from campaign_support import EVENT
from mailer.feedback.webhook import SIGNATURE_HEADER, sign
from mailer.models import CampaignStatus, OutgoingMessage, UnsubscribeSource
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.admin.headers import is_admin_path
from test_web import ONE_CLICK, make_settings, seed
from test_webhooks import (
    CERT_URL,
    SECRET,
    TOPIC,
    FakeSns,
    notification,
    self_signed,
    ses_complaint,
    signed,
)
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


def signed_routes() -> dict[str, tuple[list[tuple[bytes, dict[str, str]]], Callable[[], bytes]]]:
    """path -> (forged requests: body and headers, a validly signed body), for the routes
    authenticated by a signature over the body instead of a token in the path."""
    key, certificate = self_signed("sns.amazonaws.com")
    other_key, _ = self_signed("not SNS")
    complaint = ses_complaint(
        OutgoingMessage(
            sender="events@lists.example.org",
            recipient="person0@example.org",
            message_id="<walk-1@lists.example.org>",
            data=b"",
        )
    )
    CERTIFICATES[CERT_URL] = certificate
    generic = json.dumps({"type": "complaint", "email": "person0@example.org"}).encode()
    return {
        "/webhooks/ses": (
            [
                (json.dumps(signed(notification(complaint), other_key)).encode(), {}),
                (
                    json.dumps(
                        signed(
                            {**notification(complaint), "SigningCertURL": "https://x.example/c"},
                            other_key,
                        )
                    ).encode(),
                    {},
                ),
            ],
            lambda: json.dumps(signed(notification(complaint), key)).encode(),
        ),
        "/webhooks/bounce": (
            [
                (generic, {}),
                (generic, {SIGNATURE_HEADER: sign(generic, b"not the secret at all")}),
                (generic, {SIGNATURE_HEADER: sign(generic + b" ", SECRET.encode())}),
            ],
            lambda: generic,
        ),
    }


CERTIFICATES: dict[str, bytes] = {}


# What a valid POST carries on routes whose form has fields (the others act on any body).
VALID_POSTS: dict[str, tuple[bytes, dict[str, str]]] = {
    "/r/{token}": (b"answer=yes&guests=1", {"Content-Type": "application/x-www-form-urlencoded"}),
}
# Before the example event starts, so its RSVP answers are open.
BEFORE_THE_EVENT = datetime(2021, 9, 1, tzinfo=UTC)


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
    campaign = store.create_campaign(
        event_path=str(EVENT),
        event_slug=EVENT.stem,
        list_id=list_id,
        subject="Invitation",
        status=CampaignStatus.FINISHED,
    )
    other_key = TokenSigner(b"someone-elses-key-0123456789")

    def tokens_of(route: Route) -> tuple[list[str], list[str]]:
        """(valid, invalid) tokens for the route: RSVP tokens on /r/, else unsubscribe."""
        if route.path.startswith("/r/"):
            valid = [signer.sign_rsvp(subscriber_id=i, campaign_id=campaign) for i in (ana, bob)]
            wrong = [
                signer.sign(subscriber_id=ana, list_id=list_id),  # another kind of link
                other_key.sign_rsvp(subscriber_id=ana, campaign_id=campaign),
                signer.sign_rsvp(subscriber_id=ana + 1000, campaign_id=campaign),  # nobody
                signer.sign_rsvp(subscriber_id=ana, campaign_id=campaign + 1000),  # no campaign
            ]
        else:
            valid = [signer.sign(subscriber_id=i, list_id=list_id) for i in (ana, bob)]
            wrong = [
                signer.sign_rsvp(subscriber_id=ana, campaign_id=campaign),  # another kind
                other_key.sign(subscriber_id=ana, list_id=list_id),
                signer.sign(subscriber_id=ana + 1000, list_id=list_id),  # signed, names nobody
            ]
        flipped = valid[0][:5] + ("A" if valid[0][5] != "A" else "B") + valid[0][6:]
        invalid = [
            "garbage",
            flipped,
            valid[0][:-2],
            *wrong,
            other_key.sign_test_message(list_id=list_id),
        ]
        return valid, invalid

    test_message = signer.sign_test_message(list_id=list_id)

    signed_ones = signed_routes()
    sns = FakeSns(CERTIFICATES)
    settings = make_settings().model_copy(
        update={"webhook_secret": SecretStr(SECRET), "ses_topic_arns": [TOPIC]}
    )
    app = create_app(
        store=store,
        signer=signer,
        settings=settings,
        sns_fetch=sns,
        now=lambda: BEFORE_THE_EVENT,  # the example event's answers are open
    )
    routes = list(app.routes)
    assert all(isinstance(r, Route) for r in routes), "the walk knows only plain routes"
    paths = {r.path for r in routes if isinstance(r, Route)}
    assert {"/u/{token}", "/u/{token}/resubscribe", "/r/{token}", "/healthz", *signed_ones} <= paths
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
            if is_admin_path(route.path):
                # The dashboard's routes need a session, not a token: walked, each with
                # every method, by test_admin_security.py.
                continue
            methods = route.methods or set()
            valid, invalid = tokens_of(route)
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
            if route.path in signed_ones:
                forged, valid_body = signed_ones[route.path]
                for path in fill(route, valid[0]):
                    for body, headers in [*BODIES, *forged]:
                        response = await unchanged("POST", path, content=body, headers=headers)
                        assert response.status_code == 401, (path, response.status_code)
                    big = b"{" + b" " * (400 * 1024) + b"}"
                    assert (await unchanged("POST", path, content=big)).status_code == 413
                before = store_snapshot(store)
                body = valid_body()
                headers = {SIGNATURE_HEADER: sign(body, SECRET.encode())}
                response = await client.post(route.path, content=body, headers=headers)
                assert response.status_code == 200, response.text
                assert store_snapshot(store) != before, f"POST {route.path}: nothing recorded"
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
            body, headers = VALID_POSTS.get(route.path, (b"", {}))
            for token in valid:
                response = await client.post(
                    route.path.replace("{token}", token),
                    content=body,
                    headers={**headers, "Origin": SITE},
                )
                assert response.status_code == 200
            assert store_snapshot(store) != before, f"POST {route.path}: no valid token acted"
    assert len(walked) > 100
