"""A guest moved up from the waiting list is told only while still mailable: whoever
unsubscribed since answering, or whose address hard-bounced or complained, keeps the place
but is never written to again (issue 14's notice against the one-click promise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_support import make_settings, seed_list
from mailer.message.event import load_event
from mailer.models import RsvpStatus, SuppressionReason, UnsubscribeSource
from mailer.store import Store
from smtp_server import SmtpTestServer
from test_rsvp import ORIGIN, client, copy_event, invite, rsvp_path


@pytest.mark.parametrize("gone", ["unsubscribed", "complained"])
async def test_a_guest_who_left_keeps_the_place_but_gets_no_notice(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path, gone: str
) -> None:
    settings = make_settings(tmp_path, smtp_server.port)
    first, second = seed_list(store, tmp_path, 2)
    event_file = copy_event(
        tmp_path,
        replace={
            "starts_at: 2021-09-11T14:30": "starts_at: 2031-09-11T14:30",
            "ends_at: 2021-09-11T16:30": "ends_at: 2031-09-11T16:30",
            "capacity: 40": "capacity: 1",
        },
    )
    campaign_id = await invite(store, settings, event_file)
    paths = {m.rcpt_tos[0]: rsvp_path(m) for m in smtp_server.messages}
    slug = load_event(event_file).slug
    invitations = len(smtp_server.messages)
    waiting_id = store.get_subscriber_id(second)
    assert waiting_id is not None
    async with client(store, settings) as web:
        for guest in (first, second):
            answered = await web.post(paths[guest], data={"answer": "yes"}, headers=ORIGIN)
            assert answered.status_code == 200
        assert store.rsvp_counts(slug).waiting == 1
        # The one waiting leaves the list (or complains) before a place frees up.
        list_id = store.get_campaign(campaign_id).list_id
        if gone == "unsubscribed":
            assert store.unsubscribe(
                waiting_id, list_id, source=UnsubscribeSource.ONE_CLICK, campaign_id=campaign_id
            )
        else:
            with store.engine.begin() as connection:
                store.suppress(
                    connection,
                    subscriber_id=waiting_id,
                    reason=SuppressionReason.COMPLAINED,
                    source=UnsubscribeSource.FEEDBACK_LOOP,
                    campaign_id=campaign_id,
                )
        freed = await web.post(paths[first], data={"answer": "no"}, headers=ORIGIN)
        assert freed.status_code == 200
    moved_up = store.get_rsvp(slug, waiting_id)
    assert moved_up is not None
    assert moved_up.status is RsvpStatus.YES  # the place is theirs
    assert len(smtp_server.messages) == invitations  # and nothing was sent to them
    assert store.rsvp_counts(slug).untold == 1
