"""Organiser actions around a campaign: start or resume, dry run, test send."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import CampaignError, MailerError
from mailer.message.event import Event, load_event
from mailer.models import CampaignRecord, CampaignStatus, Outcome, Recipient
from mailer.sending.run import invitation_builder
from mailer.store import Store
from mailer.tokens import TokenSigner, unsubscribe_url


@dataclass(frozen=True, slots=True)
class CampaignChoice:
    campaign: CampaignRecord
    resumed: bool


def start_or_resume(
    store: Store,
    *,
    event_path: Path,
    event: Event,
    list_name: str,
    new: bool = False,
    owner: str | None = None,
) -> CampaignChoice:
    """The unfinished campaign of this event to this list, or (none, or --new) a new one.

    `owner`: the sender about to run it; a new campaign is created already leased to it.

    Running the very same `mailer send` again after a crash resumes instead of starting
    a second campaign that would mail everyone again.
    """
    list_id = store.list_id(list_name)
    if not new:
        existing = store.find_unfinished_campaign(event.slug, list_id)
        if existing is not None:
            if existing.status is CampaignStatus.SCHEDULED:
                raise CampaignError(
                    f"campaign {existing.id} of this event to {list_name!r} is scheduled for "
                    f"{existing.scheduled_at:%Y-%m-%d %H:%M} UTC",
                    campaign_id=existing.id,
                    hint=f"Cancel it (`mailer campaign cancel {existing.id}`) or pass --new.",
                )
            # A paused or missed campaign goes on when the run claims it (resume=True).
            return CampaignChoice(existing, resumed=True)
    campaign_id = store.create_campaign(
        event_path=str(event_path.resolve()),
        event_slug=event.slug,
        list_id=list_id,
        subject=event.subject,
        status=CampaignStatus.SENDING,
        lease_owner=owner,
        lease=timedelta(seconds=60),
    )
    return CampaignChoice(store.get_campaign(campaign_id), resumed=False)


@dataclass(frozen=True, slots=True)
class DryRunReport:
    messages: int
    failures: list[tuple[str, str]]
    total_bytes: int
    seconds: float
    peak_rss_mb: float


def dry_run(
    store: Store, *, settings: Settings, event_path: Path, list_name: str, signer: TokenSigner
) -> DryRunReport:
    """Render and compose every message exactly as a send would, and send nothing."""
    event = load_event(event_path)
    list_id = store.list_id(list_name)
    builder = invitation_builder(settings, event, campaign_id=0, list_name=list_name)
    started = time.perf_counter()
    count, size, failures = 0, 0, []
    for subscriber in store.iter_subscribers(list_name, only_subscribed=True):
        assert subscriber.id is not None
        token = signer.sign(subscriber_id=subscriber.id, list_id=list_id)
        recipient = Recipient(
            subscriber.id, subscriber.email, subscriber.name, subscriber.attributes
        )
        try:
            message = builder.build(
                recipient, unsubscribe_url=unsubscribe_url(settings.base_url, token)
            )
        except MailerError as exc:
            failures.append((subscriber.email, str(exc)))
            continue
        count += 1
        size += len(message.data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return DryRunReport(count, failures, size, time.perf_counter() - started, peak)


async def send_test(
    store: Store,
    *,
    settings: Settings,
    transport: Transport,
    event_path: Path,
    list_name: str,
    to: str,
    signer: TokenSigner,
) -> Outcome:
    """One sample ([TEST] in the subject) to `to`, personalised as the list's first
    subscriber; it is not recorded in any ledger."""
    from dataclasses import replace

    from mailer.addresses import InvalidAddress, normalise

    try:
        address = normalise(to).email
    except InvalidAddress as exc:
        raise CampaignError(f"--test-to {to!r}: {exc}") from exc
    event = load_event(event_path)
    list_id = store.list_id(list_name)
    sample = next(iter(store.iter_subscribers(list_name, only_subscribed=True)), None)
    if sample is None or sample.id is None:
        raise CampaignError(f"list {list_name!r} has no subscribed members to personalise for")
    builder = invitation_builder(settings, event, campaign_id=0, list_name=list_name)
    token = signer.sign(subscriber_id=sample.id, list_id=list_id)
    recipient = Recipient(sample.id, address, sample.name, sample.attributes)
    message = builder.build(
        recipient, unsubscribe_url=unsubscribe_url(settings.base_url, token), test=True
    )
    return await transport.send(replace(message, recipient=address))
