"""Helping with a campaign another sender coordinates (issue 15: one campaign, many senders).

The coordinator (run.run_campaign) holds the campaign's lease: it snapshots the audience,
settles crashes, and ends the campaign. A helper (another process of `mailer send
--processes N`, or a `mailer worker` on any machine sharing the store) claims batches of
the campaign's rows with their own leases, sends them through its own SMTP pool and the
shared rate, records them, and stops when nothing is left to claim or the campaign is no
longer sending. A pause or cancel reaches it through the status it reads a few times a
second, and the coordinator decides the end. The one status a helper changes: when it
stops because the relay is down, its breaker tripped or something failed (RELAY_DOWN,
BREAKER, ERROR), it pauses the campaign with the reason, as the coordinator does for those
reasons, so every sender stops within a status check instead of going on without it. A
pause for the relay (down, or the breaker) is retried by a worker after the cool-down, as
the coordinator's is (run.relay_retry); one for an error waits for a person.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import one_line_reason
from mailer.logs import fields
from mailer.message.event import load_event
from mailer.models import CampaignStatus
from mailer.preflight import check_real_send
from mailer.sending.engine import (
    EngineOptions,
    Progress,
    ProgressCallback,
    Stop,
    StopReason,
)
from mailer.sending.journal import Journal, journal_path
from mailer.sending.ports import CampaignLedger
from mailer.sending.ratelimit import RateLimiter
from mailer.sending.recovery import settle_batches_of
from mailer.sending.run import (
    calendar_sequence,
    campaign_dispatcher,
    final_state,
    invitation_builder,
    journal_error,
    make_limiter,
    refuse_changed_messages,
    relay_retry,
    retry_note,
    worker_identity,
)
from mailer.sending.shared_rate import SharedRateLimiter
from mailer.tokens import TokenSigner

log = logging.getLogger("mailer.worker")

# Why a helper pauses the campaign for every sender (what the coordinator pauses it for).
PAUSES_EVERYONE = (StopReason.RELAY_DOWN, StopReason.BREAKER, StopReason.ERROR)


class HelpingLedger(CampaignLedger, Protocol):
    """The ledger, and the status change a helper makes when it pauses the campaign."""

    def set_campaign_status(
        self,
        campaign_id: int,
        status: CampaignStatus,
        *,
        only_from: Iterable[CampaignStatus] | None = None,
        error: str | None = None,
        retry_after: timedelta | None = None,
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class HelpResult:
    stop: Stop
    progress: Progress


async def help_campaign(
    *,
    settings: Settings,
    store: HelpingLedger,
    transport: Transport,
    signer: TokenSigner,
    campaign_id: int,
    owner: str | None = None,
    on_progress: ProgressCallback | None = None,
    stop_requested: asyncio.Event | None = None,
    limiter: RateLimiter | SharedRateLimiter | None = None,
    journal_factory: Callable[[Path], Journal] = Journal,
) -> HelpResult | None:
    """Send what can be claimed of `campaign_id` while another sender coordinates it;
    None when there is nothing to help with (not sending, or not yet snapshotted)."""
    check_real_send(settings)
    owner = owner or worker_identity()
    campaign = store.get_campaign(campaign_id)
    if campaign.status is not CampaignStatus.SENDING or campaign.snapshot_at is None:
        return None

    def journal_of(sender: str) -> Path:
        return journal_path(settings.var_dir, settings.database_url, campaign_id, sender)

    try:
        journal = journal_factory(journal_of(owner))
    except OSError as exc:
        raise journal_error(journal_of(owner), exc) from exc
    try:
        event = load_event(Path(campaign.event_path)).for_message(campaign.message)
        builder = invitation_builder(
            settings,
            event,
            campaign_id=campaign_id,
            list_name=campaign.list_name,
            list_title=campaign.list_title,
            # the coordinator's figure: the same keys, so the same SEQUENCE
            sequence=calendar_sequence(store, campaign, event, record=False),
            signer=signer,
        )
        refuse_changed_messages(campaign, settings, builder)
    except BaseException:
        journal.close(remove=True)
        raise
    dispatcher = campaign_dispatcher(
        settings,
        store,
        campaign,
        transport=transport,
        limiter=limiter or make_limiter(settings, store),
        builder=builder,
        signer=signer,
        journal=journal,
        owner=owner,
        journal_of=journal_of,
        on_progress=on_progress,
        stop_requested=stop_requested,
        options=EngineOptions(coordinator=False),
    )
    try:
        stop, progress = await dispatcher.run()
    except BaseException:
        journal.close()  # kept: whoever takes our batches over settles them from it
        raise
    if stop.reason in PAUSES_EVERYONE:
        await asyncio.to_thread(
            pause_everyone,
            store,
            settings,
            campaign_id,
            stop,
            owner,
            relay_pauses=campaign.relay_pauses,
        )
    settled = stop.reason is not StopReason.LEASE_LOST
    if settled and store.release_batches(campaign_id, owner=owner):
        # A row whose give-back failed is still `sending` in our batch: settle it from our
        # journal now, as the coordinator does with its own.
        try:
            settle_batches_of(store, campaign_id, owner, journal_of(owner), dead=True)
        except BaseException:
            journal.close()
            raise
    journal.close(remove=settled and not store.release_batches(campaign_id, owner=owner))
    log.info(
        fields(
            campaign=campaign_id,
            event="helped",
            worker=owner,
            reason=stop.reason.value,
            sent=progress.sent_this_run,
        )
    )
    return HelpResult(stop, progress)


def pause_everyone(
    store: HelpingLedger,
    settings: Settings,
    campaign_id: int,
    stop: Stop,
    owner: str,
    *,
    relay_pauses: int,
) -> bool:
    """Pause the campaign, while it is still sending, with what stopped this helper: the
    coordinator and the other helpers read the status a few times a second and stop (the
    coordinator keeps this pause and its note). True if this call paused it; a campaign
    already paused or cancelled meanwhile keeps its own status and note.

    A pause for the relay is retried by a worker after the cool-down the coordinator
    would give it (`relay_pauses`: the campaign's relay pauses in a row so far), in the
    same store call: the coordinator, seeing the pause, releases the campaign as it is."""
    try:
        # The coordinator's own words for the same stop (naming MAILER_RELAYS when set).
        _, note = final_state(
            stop,
            store.delivery_counts(campaign_id),
            campaign_id,
            store,
            relays=bool(settings.relays),
        )
        note = f"{note} Seen by the sender {owner}."
        retry_after = relay_retry(settings, stop.reason, relay_pauses)
        if retry_after is not None:
            note = f"{note} {retry_note(retry_after)}"
        paused = store.set_campaign_status(
            campaign_id,
            CampaignStatus.PAUSED,
            only_from=[CampaignStatus.SENDING],
            error=note,
            retry_after=retry_after,
        )
    except Exception as exc:  # the database itself failed: the coordinator sees that too
        log.error(fields(campaign=campaign_id, event="pause-failed", error=one_line_reason(exc)))
        return False
    if paused:
        log.warning(
            fields(
                campaign=campaign_id,
                event="paused" if retry_after is None else "relay-paused",
                worker=owner,
                reason=stop.reason.value,
                retry_seconds=None if retry_after is None else retry_after.total_seconds(),
            )
        )
    return paused
