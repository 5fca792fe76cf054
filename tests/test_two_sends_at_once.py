"""Two `mailer send` of one event to one list started at the same moment: one campaign.

Both commands plan first (nothing written: the organiser is asked), then create. Both
found no campaign of the event to the list, so both created one, and everyone on the list
got the invitation twice (3 of 18 simultaneous pairs in a new organiser's trial, once to
300 people). Now the campaign is created only if the newest campaign of this event to this
list is still the one the plan saw, checked under the list's row lock; the second command
is refused with the campaign the first made, having written nothing. The same holds for
`--new`, for `schedule`, and for the dashboard (which plans and starts the same way).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from campaign_support import EVENT, new_campaign, seed_list
from mailer.campaigns import lifecycle
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.store import Store
from mailer.store.schema import campaigns


def campaign_count(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(campaigns)).scalar_one())


@pytest.mark.parametrize("new", [False, True], ids=["send", "send-new"])
def test_the_second_of_two_sends_planned_together_is_refused(
    store: Store, tmp_path: Path, new: bool
) -> None:
    seed_list(store, tmp_path, 5)
    if new:
        new_campaign(store)  # --new only makes sense after a first campaign
    event = load_event(EVENT)
    first = lifecycle.plan_send(store, event=event, list_name="members", new=new)
    second = lifecycle.plan_send(store, event=event, list_name="members", new=new)
    before = campaign_count(store)
    made = lifecycle.start_send(store, first, event=event, event_path=EVENT, owner="one")
    with pytest.raises(CampaignError) as refused:
        lifecycle.start_send(store, second, event=event, event_path=EVENT, owner="two")
    assert refused.value.campaign_id == made.id
    assert f"campaign {made.id} " in str(refused.value)
    assert campaign_count(store) == before + 1


def test_a_schedule_planned_beside_a_send_is_refused(store: Store, tmp_path: Path) -> None:
    seed_list(store, tmp_path, 5)
    event = load_event(EVENT)
    scheduling = lifecycle.plan_schedule(store, event=event, list_name="members", new=False)
    sending = lifecycle.plan_send(store, event=event, list_name="members", new=False)
    lifecycle.start_send(store, sending, event=event, event_path=EVENT, owner="one")
    with pytest.raises(CampaignError):
        lifecycle.schedule(
            store,
            scheduling,
            event=event,
            event_path=EVENT,
            when=datetime.now(UTC) + timedelta(days=1),
        )
    assert campaign_count(store) == 1


def test_a_plan_made_after_the_first_send_resumes_it(store: Store, tmp_path: Path) -> None:
    """The ordinary case is unchanged: planned after the first campaign exists, the
    second command resumes it rather than making another."""
    seed_list(store, tmp_path, 5)
    event = load_event(EVENT)
    first = lifecycle.plan_send(store, event=event, list_name="members", new=False)
    made = lifecycle.start_send(store, first, event=event, event_path=EVENT, owner="one")
    again = lifecycle.plan_send(store, event=event, list_name="members", new=False)
    assert again.existing is not None
    assert again.existing.id == made.id
    assert (
        lifecycle.start_send(store, again, event=event, event_path=EVENT, owner="two").id == made.id
    )
