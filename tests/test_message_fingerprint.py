"""Every sender of one campaign sends the same message (issue 15): the coordinator records
a digest of what the messages are made from (the event as loaded, its layout's files, the
settings that go into each message), and the digest moves with any of them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from campaign_support import EVENT, REPO_ROOT, make_settings, new_campaign, seed_list, send
from mailer.campaigns.lifecycle import start_or_resume
from mailer.campaigns.scheduler import Scheduler
from mailer.config import Settings
from mailer.delivery.memory import MemoryTransport
from mailer.errors import CampaignError
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.sending.helping import help_campaign
from mailer.sending.run import (
    calendar_sequence,
    invitation_builder,
    message_fingerprint,
    run_campaign,
)
from mailer.store import Store
from mailer.store.signer import load_signer
from smtp_server import SmtpTestServer


def fingerprint(settings: Settings, event_path: Path) -> str:
    builder = invitation_builder(
        settings, load_event(event_path), campaign_id=1, list_name="members"
    )
    return message_fingerprint(settings, builder)


def copy_templates(tmp_path: Path) -> Path:
    """The example's templates folder, so its event and layouts can be edited."""
    folder = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "templates", folder)
    return folder


async def test_the_coordinator_records_the_fingerprint_before_anyone_is_mailed(
    store: Store, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    seed_list(store, tmp_path, 3)
    campaign_id = new_campaign(store)
    settings = make_settings(tmp_path, smtp_server.port)
    assert store.get_campaign(campaign_id).message_fingerprint is None
    await send(settings, store, campaign_id)
    recorded = store.get_campaign(campaign_id).message_fingerprint
    assert recorded == fingerprint(settings, EVENT)
    assert len(smtp_server.messages) == 3


def test_the_fingerprint_moves_with_the_event_its_layout_and_the_settings(
    tmp_path: Path,
) -> None:
    templates = copy_templates(tmp_path)
    event = templates / "events" / EVENT.name
    settings = make_settings(tmp_path, 2525, templates_dir=templates)
    first = fingerprint(settings, event)
    # The same inputs, the same digest (another process, another machine's checkout).
    assert fingerprint(settings, event) == first
    moved = tmp_path / "elsewhere" / "templates"
    shutil.copytree(templates, moved)
    assert (
        fingerprint(
            make_settings(tmp_path, 2525, templates_dir=moved), moved / "events" / EVENT.name
        )
        == first
    )

    event.write_text(event.read_text().replace("Calthorpe Arms", "Conway Hall"))
    edited_event = fingerprint(settings, event)
    assert edited_event != first

    layout = templates / "layouts" / "default.txt.j2"
    if not layout.exists():  # the built-in layout: shadow it beside the event
        layout.parent.mkdir(exist_ok=True)
        builtin = REPO_ROOT / "src" / "mailer" / "assets" / "layouts"
        for part in builtin.glob("default.*"):
            shutil.copy(part, layout.parent / part.name)
        assert fingerprint(settings, event) == edited_event
    layout.write_text(layout.read_text() + "\nP.S. Bring a friend.\n")
    assert fingerprint(settings, event) != edited_event

    other_sender = make_settings(tmp_path, 2525, templates_dir=templates, from_name="Someone Else")
    assert fingerprint(other_sender, event) != fingerprint(settings, event)
    other_site = make_settings(
        tmp_path, 2525, templates_dir=templates, base_url="https://other.example.org"
    )
    assert fingerprint(other_site, event) != fingerprint(settings, event)


async def start_as_coordinator(
    store: Store,
    settings: Settings,
    event_path: Path,
    tmp_path: Path,
    *,
    lease: timedelta = timedelta(minutes=5),
) -> int:
    """A campaign as its coordinator leaves it once sending has begun: held, its
    fingerprint recorded, its audience snapshotted; nothing sent yet."""
    seed_list(store, tmp_path, 4)
    event = load_event(event_path)
    campaign = start_or_resume(
        store, event_path=event_path, event=event, list_name="members", new=True
    ).campaign
    assert store.claim_campaign(campaign.id, owner="coordinator", lease=lease)
    builder = invitation_builder(settings, event, campaign_id=campaign.id, list_name="members")
    calendar_sequence(store, campaign, event)  # the coordinator records the schedule key
    store.record_message_fingerprint(campaign.id, message_fingerprint(settings, builder))
    assert store.snapshot_audience(campaign.id, campaign.list_id)
    return campaign.id


@pytest.mark.parametrize("change", ["event edited", "other sender", "nothing"])
async def test_a_helper_sends_only_the_messages_the_campaign_started_with(
    store: Store, tmp_path: Path, change: str
) -> None:
    templates = copy_templates(tmp_path)
    event_path = templates / "events" / EVENT.name
    settings = make_settings(tmp_path, 9, templates_dir=templates)
    campaign_id = await start_as_coordinator(store, settings, event_path, tmp_path)
    helper_settings = settings
    if change == "event edited":  # after the organiser confirmed and the send began
        event_path.write_text(event_path.read_text().replace("Calthorpe Arms", "Conway Hall"))
    elif change == "other sender":  # another machine, configured otherwise
        helper_settings = make_settings(tmp_path, 9, templates_dir=templates, from_name="Other")
    transport = MemoryTransport()
    helping = help_campaign(
        settings=helper_settings,
        store=store,
        transport=transport,
        signer=load_signer(helper_settings, store=store),
        campaign_id=campaign_id,
        owner="helper",
    )
    if change == "nothing":
        result = await helping
        assert result is not None
        assert len(transport.sent) == 4  # the same messages: it helps
        return
    key = store.get_campaign(campaign_id).schedule_key
    assert key is not None
    with pytest.raises(CampaignError, match="would differ from the campaign's") as refused:
        await helping
    # It says which part differs, and only that one.
    named = {
        "event edited": f"the event file ({event_path}) changed",
        "other sender": "the sender's settings (MAILER_FROM_ADDRESS, MAILER_FROM_NAME",
    }
    assert named[change] in str(refused.value)
    assert [part for part in named.values() if part in str(refused.value)] == [named[change]]
    assert transport.messages == []
    # The refused helper changed nothing of the campaign: not even its calendar key.
    assert store.get_campaign(campaign_id).schedule_key == key
    counts = store.delivery_counts(campaign_id)
    assert (counts.queued, counts.sending, counts.sent) == (4, 0, 0)


async def test_a_worker_taking_over_with_other_messages_pauses_the_campaign(
    store: Store, tmp_path: Path
) -> None:
    """The coordinator died mid-campaign; a worker that would now make other messages (the
    event file edited since) takes it over: it pauses the campaign with the reason and
    sends nothing, where it would have sent the rest of the list an unconfirmed message."""
    templates = copy_templates(tmp_path)
    event_path = templates / "events" / EVENT.name
    settings = make_settings(tmp_path, 9, templates_dir=templates, lease_seconds=0.2)
    campaign_id = await start_as_coordinator(
        store, settings, event_path, tmp_path, lease=timedelta(seconds=0.2)
    )
    event_path.write_text(event_path.read_text().replace("Calthorpe Arms", "Conway Hall"))
    await asyncio.sleep(0.3)  # the dead coordinator's lease runs out
    transport = MemoryTransport()
    with pytest.raises(CampaignError, match="started with other messages"):
        await run_campaign(
            settings=settings,
            store=store,
            transport=transport,
            signer=load_signer(settings, store=store),
            campaign_id=campaign_id,
            owner="worker-b",
        )
    assert transport.messages == []
    campaign = store.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.last_error is not None
    assert "started with other messages" in campaign.last_error


@pytest.mark.parametrize("same", [True, False])
async def test_a_campaign_recorded_with_the_earlier_whole_digest_is_still_checked(
    store: Store, tmp_path: Path, same: bool
) -> None:
    """A campaign started before the fingerprint named its parts holds one SHA-256 of all
    of them (an upgrade while it sends): a helper with the same messages still helps, one
    with others is still refused, in the general words."""
    templates = copy_templates(tmp_path)
    event_path = templates / "events" / EVENT.name
    settings = make_settings(tmp_path, 9, templates_dir=templates)
    campaign_id = await start_as_coordinator(store, settings, event_path, tmp_path)
    builder = invitation_builder(settings, load_event(event_path), campaign_id=1, list_name="m")
    sender = sorted(dataclasses.asdict(settings.sender_identity).items())
    whole = [
        builder.event.model_dump_json(exclude={"path"}),
        *builder.renderer.layout_sources,
        repr(sender),
        settings.base_url,
        settings.bounce_address or "",
    ]
    store.record_message_fingerprint(
        campaign_id, hashlib.sha256("\0".join(whole).encode()).hexdigest()
    )
    if not same:
        event_path.write_text(event_path.read_text().replace("Calthorpe Arms", "Conway Hall"))
    transport = MemoryTransport()
    helping = help_campaign(
        settings=settings,
        store=store,
        transport=transport,
        signer=load_signer(settings, store=store),
        campaign_id=campaign_id,
        owner="helper",
    )
    if same:
        assert await helping is not None
        assert len(transport.sent) == 4
        return
    with pytest.raises(CampaignError, match="its event file, layout or settings changed"):
        await helping
    assert transport.messages == []


async def test_a_worker_refused_as_a_helper_says_why_once_with_what_to_check(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker configured otherwise (another MAILER_FROM_NAME) is refused as a helper of a
    campaign another sender runs: its log names the part that differs and what to check,
    once, not again at every poll (a trial's worker logged it every two seconds)."""
    templates = copy_templates(tmp_path)
    event_path = templates / "events" / EVENT.name
    settings = make_settings(tmp_path, 9, templates_dir=templates)
    campaign_id = await start_as_coordinator(store, settings, event_path, tmp_path)
    other = make_settings(tmp_path, 9, templates_dir=templates, from_name="Someone Else")
    worker = Scheduler(
        settings=other,
        store=store,
        signer=load_signer(other, store=store),
        transport_factory=lambda _settings: MemoryTransport(),
        owner="worker-b",
    )
    with caplog.at_level(logging.INFO, logger="mailer.worker"):
        for _ in range(3):  # three polls
            await worker._help(campaign_id)
    refusals = [r.getMessage() for r in caplog.records if "event=help-failed" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert "MAILER_FROM_NAME" in refusals[0]
    assert f"hint='Check {event_path}" in refusals[0]
