"""Trying a campaign without sending it: the dry run and the test send."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import CampaignError, MailerError
from mailer.message.event import Event
from mailer.models import AudienceFilter, FollowUpAudience, MessageKind, Outcome, Recipient
from mailer.sending.run import invitation_builder
from mailer.store import Store
from mailer.store.ledger import SameEvent
from mailer.tokens import TokenSigner, rsvp_url, unsubscribe_url


@dataclass(frozen=True, slots=True)
class DryRunReport:
    messages: int
    failures: list[tuple[str, str]]
    total_bytes: int
    seconds: float
    peak_rss_mb: float


def dry_run(
    store: Store,
    *,
    settings: Settings,
    event: Event,
    list_name: str,
    signer: TokenSigner,
    message: MessageKind = MessageKind.INVITATION,
    only: frozenset[AudienceFilter] | None = None,
    mail_again: bool = False,
) -> DryRunReport:
    """Render and compose every message exactly as a send would, and send nothing: to
    whom the send would take (an invitation leaves out those who had it elsewhere unless
    `mail_again`; a follow-up takes its `message` and `only` answers)."""
    list_id = store.list_id(list_name)
    builder = invitation_builder(
        settings, event, campaign_id=0, list_name=list_name, list_title=store.list_title(list_name)
    )
    started = time.perf_counter()
    count, size, failures = 0, 0, []
    if message is MessageKind.INVITATION and only is None:
        leave_out = None if mail_again else SameEvent(event.slug, event.identity)
        audience = store.iter_audience(list_name, not_invited_to=leave_out)
    else:
        follow_up = FollowUpAudience(event.slug, message, only)
        audience = store.iter_audience(list_name, follow_up=follow_up)
    for subscriber in audience:
        assert subscriber.id is not None
        token = signer.sign(subscriber_id=subscriber.id, list_id=list_id)
        recipient = Recipient(
            subscriber.id, subscriber.email, subscriber.name, subscriber.attributes
        )
        rsvp = None
        if event.rsvp_enabled:
            rsvp_token = signer.sign_rsvp(subscriber_id=subscriber.id, campaign_id=0)
            rsvp = rsvp_url(settings.base_url, rsvp_token)
        try:
            built = builder.build(
                recipient, unsubscribe_url=unsubscribe_url(settings.base_url, token), rsvp_url=rsvp
            )
        except MailerError as exc:
            failures.append((subscriber.email, str(exc)))
            continue
        count += 1
        size += len(built.data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return DryRunReport(count, failures, size, time.perf_counter() - started, peak)


@dataclass(frozen=True, slots=True)
class TestSent:
    outcome: Outcome
    personalised_as: str
    """The member whose message it is (name and address): the organiser's test shows
    someone else's name, which must not look like a fault."""


async def send_test(
    store: Store,
    *,
    settings: Settings,
    transport: Transport,
    event: Event,
    list_name: str,
    to: str,
    signer: TokenSigner,
    personalise_as: str | None = None,
) -> TestSent:
    """One sample ([TEST] in the subject) to `to`, personalised as the list's first
    subscriber (or the member `personalise_as`); it is not recorded in any ledger."""
    from dataclasses import replace

    from mailer.addresses import InvalidAddress, normalise
    from mailer.campaigns.preview import member_recipient

    try:
        address = normalise(to).email
    except InvalidAddress as exc:
        raise CampaignError(f"--test-to {to!r}: {exc}") from exc
    list_id = store.list_id(list_name)
    if personalise_as is None:
        first = next(iter(store.iter_subscribers(list_name, only_subscribed=True)), None)
        if first is None or first.id is None:
            raise CampaignError(f"list {list_name!r} has no subscribed members to personalise for")
        sample = Recipient(first.id, first.email, first.name, first.attributes)
    else:
        sample = member_recipient(store, list_name, personalise_as)
    builder = invitation_builder(
        settings, event, campaign_id=0, list_name=list_name, list_title=store.list_title(list_name)
    )
    # Never the sample's own token: one click on a test message would unsubscribe her and
    # show her (masked) address to whoever holds the test message.
    token = signer.sign_test_message(list_id=list_id)
    recipient = replace(sample, email=address)
    # Its RSVP links carry the same test token: the page says it was a test, records nothing.
    message = builder.build(
        recipient,
        unsubscribe_url=unsubscribe_url(settings.base_url, token),
        test=True,
        rsvp_url=rsvp_url(settings.base_url, token) if event.rsvp_enabled else None,
    )
    outcome = await transport.send(replace(message, recipient=address))
    shown = f"{sample.name} <{sample.email}>" if sample.name else sample.email
    return TestSent(outcome, shown)
