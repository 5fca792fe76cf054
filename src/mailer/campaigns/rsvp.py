"""RSVP use cases (issue 14): what a guest's link opens, recording an answer, and telling
whoever moves up from the waiting list.

The link names (campaign, subscriber); the campaign names the event file, read on every
request so a corrected capacity or closing time applies at once. The answer belongs to
the event (its slug), not to the campaign or the list: see store/rsvps.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import InputError, NotFoundError
from mailer.logs import fields
from mailer.message.event import Event, load_event
from mailer.message.rsvp_notice import build_promotion_notice
from mailer.models import (
    CampaignRecord,
    DeliveryStatus,
    Rsvp,
    RsvpChoice,
    RsvpCounts,
    RsvpOutcome,
    RsvpStatus,
)
from mailer.safety import find_unsafe
from mailer.store import Store
from mailer.tokens import RsvpClaims, TokenSigner, calendar_url, rsvp_url

logger = logging.getLogger("mailer.rsvp")

MAX_NOTE = 1000


def campaign_answers(store: Store, campaign: CampaignRecord) -> tuple[Event, RsvpCounts] | None:
    """The answers to the campaign's event among its list (as `mailer rsvps --list` counts
    them), for `campaign report` and the dashboard's report; None when the event takes no
    answers, or its file cannot be read now."""
    try:
        event = load_event(Path(campaign.event_path))
    except InputError:
        return None
    if not event.rsvp_enabled:
        return None
    return event, store.rsvp_counts(campaign.event_slug, list_id=campaign.list_id)


class AnswersClosed(Exception):
    """The event's `rsvp_closes` (or its start) has passed: the answer stays as it was."""


@dataclass(frozen=True, slots=True)
class Invitation:
    """What a guest's RSVP link opens."""

    campaign: CampaignRecord
    event: Event
    name: str
    email: str
    rsvp: Rsvp | None
    waiting_position: int | None
    closed: bool


def open_invitation(store: Store, claims: RsvpClaims, *, now: datetime) -> Invitation | None:
    """The invitation a link names; None (a plain 404) when the guest was erased, the
    campaign is gone, or its event file cannot be read or no longer takes answers."""
    guest = store.guest(claims.subscriber_id)
    if guest is None:
        return None
    try:
        campaign = store.get_campaign(claims.campaign_id)
    except NotFoundError:
        return None
    try:
        event = load_event(Path(campaign.event_path))
    except InputError as exc:
        logger.warning(fields(event="rsvp-event-unreadable", campaign=campaign.id, error=exc))
        return None
    if not event.rsvp_enabled:
        return None
    rsvp = store.get_rsvp(campaign.event_slug, claims.subscriber_id)
    position = None
    if rsvp is not None and rsvp.status is RsvpStatus.WAITING:
        position = store.waiting_position(campaign.event_slug, claims.subscriber_id)
    name, email = guest
    return Invitation(
        campaign=campaign,
        event=event,
        name=name,
        email=email,
        rsvp=rsvp,
        waiting_position=position,
        closed=now >= event.answers_close,
    )


def read_answer(
    event: Event, *, answer: str | None, guests: str | None, note: str | None
) -> tuple[RsvpChoice, int, str]:
    """The form's fields, checked; InputError says what is wrong (the page shows it)."""
    try:
        choice = RsvpChoice(answer or "")
    except ValueError as exc:
        raise InputError("choose one of the three buttons") from exc
    count = 0
    if guests not in (None, ""):
        if not guests.strip().isdigit():
            raise InputError("the number of guests must be a number")
        count = int(guests.strip())
    if count > event.max_guests:
        most = "no guests" if event.max_guests == 0 else f"at most {event.max_guests} guest(s)"
        raise InputError(f"you may bring {most}")
    text = " ".join((note or "").replace("\r", "\n").split("\n")).strip()
    if len(text) > MAX_NOTE:
        raise InputError(f"the note is longer than {MAX_NOTE} characters")
    if find_unsafe(text) is not None:
        raise InputError("the note holds characters that cannot be kept")
    if event.rsvp_note_prompt is None:
        text = ""
    return choice, count, text


def record_answer(
    store: Store,
    invitation: Invitation,
    *,
    subscriber_id: int,
    choice: RsvpChoice,
    guests: int,
    note: str,
    now: datetime,
) -> RsvpOutcome:
    """Record it (once, however often pressed), unless answers have closed."""
    if invitation.closed:
        raise AnswersClosed
    return store.record_rsvp(
        event_slug=invitation.campaign.event_slug,
        subscriber_id=subscriber_id,
        campaign_id=invitation.campaign.id,
        choice=choice,
        guests=guests,
        note=note,
        capacity=invitation.event.capacity,
        now=now,
    )


async def tell_promoted(
    store: Store,
    *,
    settings: Settings,
    signer: TokenSigner,
    transport: Transport,
    campaign: CampaignRecord,
    event: Event,
    subscriber_ids: Iterable[int],
    now: datetime,
) -> int:
    """Send each guest moved up a short confirmation through the relay; how many the relay
    accepted. Those it did not stay marked untold (`mailer rsvps` counts them).

    A guest no longer mailable on the invitation's list (unsubscribed since answering, a
    hard bounce, a complaint) keeps the place but gets no message: whoever left is never
    mailed again, and an address that bounced or complained is not written to. They stay
    untold, and the log says why."""
    told = 0
    for subscriber_id in subscriber_ids:
        guest = store.guest(subscriber_id)
        rsvp = store.get_rsvp(campaign.event_slug, subscriber_id)
        if guest is None or rsvp is None:
            continue
        if not store.is_mailable(subscriber_id, campaign.list_id):
            logger.info(
                fields(
                    event="rsvp-moved-up",
                    campaign=campaign.id,
                    subscriber=subscriber_id,
                    told="no: not mailable (unsubscribed or suppressed)",
                )
            )
            continue
        name, email = guest
        link = rsvp_url(
            settings.base_url,
            signer.sign_rsvp(subscriber_id=subscriber_id, campaign_id=campaign.id),
        )
        ics = calendar_url(settings.base_url, signer.sign_calendar(campaign_id=campaign.id))
        message = build_promotion_notice(
            event,
            sender=settings.sender_identity,
            name=name,
            email=email,
            guests=rsvp.guests,
            rsvp_url=link,
            ics_url=ics,
            now=now,
        )
        outcome = await transport.send(message)
        if outcome.status is DeliveryStatus.SENT:
            store.mark_rsvp_notified(campaign.event_slug, subscriber_id, now=now)
            told += 1
        logger.info(
            fields(
                event="rsvp-moved-up",
                campaign=campaign.id,
                subscriber=subscriber_id,
                told=outcome.status.value,
                reply=outcome.reply if outcome.status is not DeliveryStatus.SENT else None,
            )
        )
    return told


async def tell_promoted_via_smtp(
    store: Store,
    *,
    settings: Settings,
    signer: TokenSigner,
    campaign: CampaignRecord,
    event: Event,
    subscriber_ids: Iterable[int],
    now: datetime,
) -> int:
    """`tell_promoted` through a fresh connection to the configured relay."""
    from mailer.sending.relays import transport_for

    async with transport_for(settings, store) as transport:
        return await tell_promoted(
            store,
            settings=settings,
            signer=signer,
            transport=transport,
            campaign=campaign,
            event=event,
            subscriber_ids=subscriber_ids,
            now=now,
        )
