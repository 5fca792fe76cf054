"""One subscriber, for the organiser (issue 10): add one address, see their lists and
history (when, how, from which campaign they left), put them back with a reason, and
count who left through each campaign."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_support import EVENT, cli_environment, make_settings, seed_list
from cli_support import run_mailer_here
from mailer.errors import CampaignError, InputError, StoreError
from mailer.models import CampaignStatus, SubscriberStatus, SuppressionReason, UnsubscribeSource
from mailer.store import Store
from test_web import seed


def _campaign(store: Store, list_name: str = "members") -> int:
    return store.create_campaign(
        event_path=str(EVENT),
        event_slug="meeting",
        list_id=store.list_id(list_name),
        subject="Meeting",
        status=CampaignStatus.FINISHED,
    )


def test_add_show_and_resubscribe_from_the_command_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 2525)
    with Store.open(settings.database_url) as store:
        seed_list(store, tmp_path, 2)
        campaign_id = _campaign(store)
        leaver = store.get_subscriber_id("person00001@example.org")
        store.unsubscribe(
            leaver,
            store.list_id("members"),
            source=UnsubscribeSource.ONE_CLICK,
            campaign_id=campaign_id,
        )
    env = cli_environment(tmp_path, 2525)

    added = run_mailer_here(
        env, tmp_path, "subscribers", "add", "New.One@Example.org", "-l", "members", "--name", "N"
    )
    assert added.returncode == 0, added.stderr
    assert "Added New.One@Example.org to list 'members'." in added.stdout
    assert run_mailer_here(env, tmp_path, "subscribers", "count", "-l", "members").stdout == "2\n"
    invalid = run_mailer_here(env, tmp_path, "subscribers", "add", "nobody", "-l", "members")
    assert invalid.returncode == 2
    assert invalid.stderr.startswith("error: 'nobody' is not a valid address")

    # Someone who left is not put back by `add`: the organiser is told when and how.
    refused = run_mailer_here(
        env, tmp_path, "subscribers", "add", "person00001@example.org", "-l", "members"
    )
    assert refused.returncode == 1
    assert "unsubscribed from 'members' on " in refused.stderr
    assert "mailer subscribers resubscribe person00001@example.org" in refused.stderr

    shown = run_mailer_here(env, tmp_path, "subscribers", "show", "PERSON00001@example.org")
    assert shown.returncode == 0, shown.stderr
    assert "person00001@example.org (Person 1)" in shown.stdout
    assert "members: unsubscribed" in shown.stdout
    assert "status:  mailed by 0 of their 1 list(s)" in shown.stdout
    assert (
        f"unsubscribed from list 'members' (one-click button in the mail program, "
        f"campaign {campaign_id})" in shown.stdout
    )

    no_reason = run_mailer_here(
        env, tmp_path, "subscribers", "resubscribe", "person00001@example.org", "-l", "members"
    )
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    back = run_mailer_here(
        env,
        tmp_path,
        "subscribers",
        "resubscribe",
        "person00001@example.org",
        "--list",
        "members",
        "--reason",
        "asked by phone on 3 May",
    )
    assert back.returncode == 0, back.stderr
    assert "Resubscribed person00001@example.org to list 'members'." in back.stdout
    assert run_mailer_here(env, tmp_path, "subscribers", "count", "-l", "members").stdout == "3\n"
    history = run_mailer_here(
        env, tmp_path, "subscribers", "show", "person00001@example.org"
    ).stdout
    assert "members: subscribed" in history
    assert f"campaign {campaign_id}); lifted " in history
    assert "resubscribed to list 'members' by the organiser: asked by phone on 3 May" in history


def test_campaign_show_and_report_count_who_left_through_its_links(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 2525)
    with Store.open(settings.database_url) as store:
        seed_list(store, tmp_path, 4)
        first, second = _campaign(store), _campaign(store)
        list_id = store.list_id("members")
        for index, campaign_id in ((0, first), (1, first), (2, second)):
            subscriber = store.get_subscriber_id(f"person{index:05d}@example.org")
            store.unsubscribe(
                subscriber, list_id, source=UnsubscribeSource.PAGE, campaign_id=campaign_id
            )
        # The organiser's own unsubscribe is no campaign's.
        store.unsubscribe_email("person00003@example.org", source=UnsubscribeSource.ADMIN)
    env = cli_environment(tmp_path, 2525)
    shown = run_mailer_here(env, tmp_path, "campaign", "show", str(first))
    assert shown.returncode == 0, shown.stderr
    assert "opt-outs:   2 unsubscribed through this campaign's links" in shown.stdout
    report = run_mailer_here(env, tmp_path, "campaign", "report", str(second))
    assert report.returncode == 0, report.stderr
    assert "; 1 unsubscribed through its links." in report.stdout


def test_resubscribe_rules(store: Store) -> None:
    """On both stores: a reason is needed; a complaint only with force; a bounce is lifted
    for every list; an unsubscribe from every list is lifted for the one list only, the
    person staying off the others; nothing changes when refused."""
    ann, bob, cat = seed(store, 3, list_name="a")
    seed(store, 3, list_name="b")
    a, b = store.list_id("a"), store.list_id("b")

    with pytest.raises(InputError, match="a reason is needed"):
        store.admin_resubscribe("person0@example.org", "a", reason=" ")

    store.unsubscribe_email("person0@example.org", source=UnsubscribeSource.ADMIN)
    assert not store.is_mailable(ann, a)
    done = store.admin_resubscribe("person0@example.org", "a", reason="asked again")
    assert done.changed
    assert done.kept_off == ["b"]
    assert store.is_mailable(ann, a)
    assert not store.is_mailable(ann, b)
    # A later import into b does not bring them back either.
    seed(store, 1, list_name="b")
    assert not store.is_mailable(ann, b)

    with store.engine.begin() as connection:
        store.suppress(
            connection,
            subscriber_id=bob,
            reason=SuppressionReason.COMPLAINED,
            source=UnsubscribeSource.MAILTO,
            campaign_id=7,
        )
        store.suppress(
            connection,
            subscriber_id=cat,
            reason=SuppressionReason.BOUNCED,
            source=UnsubscribeSource.BOUNCE,
            campaign_id=7,
            detail="550 5.1.1 no such user",
        )
    before = store.subscriber_record("person1@example.org")
    with pytest.raises(CampaignError, match=r"complained to campaign 7 on .*nothing was changed"):
        store.admin_resubscribe("person1@example.org", "a", reason="asked")
    assert store.subscriber_record("person1@example.org") == before
    done = store.admin_resubscribe(
        "person1@example.org", "a", reason="asked in writing", force=True
    )
    assert done.kept_off == ["b"]
    assert store.is_mailable(bob, a)
    assert not store.is_mailable(bob, b)

    done = store.admin_resubscribe("person2@example.org", "a", reason="mailbox fixed")
    assert done.bounce_lifted_on == ["b"]
    assert store.is_mailable(cat, a)
    assert store.is_mailable(cat, b)
    record = store.subscriber_record("person2@example.org")
    assert record.subscriber is not None
    assert record.subscriber.status is SubscriberStatus.SUBSCRIBED
    bounce, resubscribed = record.history
    assert (bounce.reason, bounce.list_name, bounce.detail) == (
        SuppressionReason.BOUNCED,
        None,
        "550 5.1.1 no such user",
    )
    assert bounce.lifted_at is not None
    assert (resubscribed.reason, resubscribed.source, resubscribed.detail) == (
        SuppressionReason.RESUBSCRIBED,
        UnsubscribeSource.ADMIN,
        "mailbox fixed",
    )

    again = store.admin_resubscribe("person2@example.org", "a", reason="twice")
    assert not again.changed
    assert len(store.subscriber_record("person2@example.org").history) == 2

    # Erased, the address's record is still there to be shown.
    store.remove_subscriber("person0@example.org")
    erased = store.subscriber_record("person0@example.org")
    assert erased.subscriber is None
    assert [entry.reason for entry in erased.history][:1] == [SuppressionReason.UNSUBSCRIBED]
    # Their unsubscribe from b (kept when they came back to a) still keeps them off b.
    with pytest.raises(StoreError, match="unsubscribed from 'b'"):
        store.add_subscriber("person0@example.org", "b")
    assert store.add_subscriber("person0@example.org", "a")
