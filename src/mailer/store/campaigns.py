"""Campaigns: creation, leases (one sender at a time), status, listing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Text,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)

from mailer.clock import as_utc, utcnow
from mailer.errors import CampaignError, NotFoundError
from mailer.models import (
    AudienceFilter,
    CampaignRecord,
    CampaignStatus,
    DeliveryCounts,
    DeliveryStatus,
    MessageKind,
)
from mailer.store.base import StoreBase
from mailer.store.schema import UtcDateTime, campaigns, deliveries, lists

UNFINISHED = (
    CampaignStatus.SCHEDULED,
    CampaignStatus.SENDING,
    CampaignStatus.PAUSED,
    CampaignStatus.MISSED,
)


def _record(row: Row[tuple[object, ...]]) -> CampaignRecord:
    m = row._mapping
    return CampaignRecord(
        id=int(m["id"]),
        event_path=str(m["event_path"]),
        event_slug=str(m["event_slug"]),
        list_id=int(m["list_id"]),
        list_name=str(m["list_name"]),
        subject=str(m["subject"]),
        status=CampaignStatus(m["status"]),
        scheduled_at=as_utc(m["scheduled_at"]),
        snapshot_at=as_utc(m["snapshot_at"]),
        started_at=as_utc(m["started_at"]),
        finished_at=as_utc(m["finished_at"]),
        created_at=as_utc(m["created_at"]) or utcnow(),
        lease_owner=m["lease_owner"],
        lease_expires_at=as_utc(m["lease_expires_at"]),
        last_error=m["last_error"],
        retry_at=as_utc(m["retry_at"]),
        relay_pauses=int(m["relay_pauses"] or 0),
        schedule_key=m["schedule_key"],
        list_title=m["list_title"],
        message=MessageKind(m["message"] or MessageKind.INVITATION.value),
        audience_filter=parse_audience(m["audience_filter"]),
        message_fingerprint=m["message_fingerprint"],
        mail_again=bool(m["mail_again"]),
        event_key=m["event_key"],
    )


def parse_audience(value: str | None) -> frozenset[AudienceFilter] | None:
    """The stored `--only` list (comma-separated AudienceFilter values); None: everyone."""
    if not value:
        return None
    return frozenset(AudienceFilter(part) for part in value.split(","))


def format_audience(only: frozenset[AudienceFilter] | None) -> str | None:
    return None if not only else ",".join(sorted(f.value for f in only))


def _relay_pause_over(now: datetime) -> ColumnElement[bool]:
    """Paused by the relay (not by a person) and its cool-down is over."""
    return (
        (campaigns.c.status == CampaignStatus.PAUSED.value)
        & campaigns.c.retry_at.is_not(None)
        & (campaigns.c.retry_at <= now)
    )


def _relay_pause(now: datetime, retry_after: timedelta) -> dict[str, ColumnElement[Any]]:
    """Paused by the relay: a worker takes it again once `retry_after` has passed (see
    _relay_pause_over), and the streak of relay pauses in a row (which doubles the next
    cool-down) grows by one."""
    return {
        "retry_at": literal(now + retry_after, UtcDateTime),
        "relay_pauses": campaigns.c.relay_pauses + 1,
    }


# The campaign reached someone: a sent row, or an unknown one (the relay probably has it:
# a crash after the body went).
_REACHED_ANYONE = (
    select(deliveries.c.id)
    .where(
        deliveries.c.campaign_id == campaigns.c.id,
        deliveries.c.status.in_([DeliveryStatus.SENT.value, DeliveryStatus.UNKNOWN.value]),
    )
    .exists()
)


def _newest_campaign(
    event_slug: str, list_id: int, message: MessageKind, only: frozenset[AudienceFilter] | None
) -> Select[tuple[Any]]:
    return select(func.max(campaigns.c.id)).where(
        campaigns.c.event_slug == event_slug,
        campaigns.c.list_id == list_id,
        campaigns.c.message == message.value,
        _same_audience(only),
    )


def _same_audience(only: frozenset[AudienceFilter] | None) -> ColumnElement[bool]:
    stored = format_audience(only)
    if stored is None:
        return campaigns.c.audience_filter.is_(None)
    return campaigns.c.audience_filter == stored


_CAMPAIGN_QUERY = select(
    campaigns, lists.c.name.label("list_name"), lists.c.title.label("list_title")
).join(lists, lists.c.id == campaigns.c.list_id)


class CampaignQueries(StoreBase):
    def create_campaign(
        self,
        *,
        event_path: str,
        event_slug: str,
        list_id: int,
        subject: str,
        status: CampaignStatus,
        scheduled_at: datetime | None = None,
        lease_owner: str | None = None,
        lease: timedelta | None = None,
        message: MessageKind = MessageKind.INVITATION,
        only: frozenset[AudienceFilter] | None = None,
        newest: int | None = None,
        check_newest: bool = False,
        mail_again: bool = False,
        event_key: str | None = None,
    ) -> int:
        """A new campaign; with `lease_owner`, held by that sender from the start, so a
        running worker cannot take it between its creation and the creator's claim.
        `message` and `only`: a follow-up (issue 14) and whose answers it goes to.

        `mail_again`: to everyone on the list (--new); else the snapshot leaves out those
        who already had this event's invitation through another campaign.

        `check_newest`: only if the newest campaign of this event to this list (the same
        message to the same answers) is still `newest`, the one the caller planned from
        (None: there was none); else CampaignError and nothing is written. Two `mailer
        send` started at the same moment both planned a new campaign and both created
        one, and the list got the invitation twice. The check holds the list's row
        (an UPDATE: SQLite's write lock, PostgreSQL's row lock) until the insert commits,
        so the second waits for the first and then sees its campaign."""
        now = utcnow()
        with self.engine.begin() as connection:
            if check_newest:
                connection.execute(update(lists).where(lists.c.id == list_id).values(id=lists.c.id))
                found = connection.execute(
                    _newest_campaign(event_slug, list_id, message, only)
                ).scalar()
                if found != newest:
                    raise CampaignError(
                        f"campaign {found} of this event to this list was started meanwhile "
                        "(by another command or the dashboard); nothing was started",
                        campaign_id=found,
                        hint=f"`mailer campaign show {found}` shows it; running the same "
                        "command again resumes or reports it.",
                    )
            return int(
                connection.execute(
                    insert(campaigns)
                    .values(
                        event_path=event_path,
                        event_slug=event_slug,
                        list_id=list_id,
                        subject=subject,
                        status=status.value,
                        scheduled_at=scheduled_at,
                        created_at=now,
                        updated_at=now,
                        lease_owner=lease_owner,
                        lease_expires_at=now + lease if lease_owner and lease else None,
                        message=message.value,
                        audience_filter=format_audience(only),
                        mail_again=int(mail_again),
                        event_key=event_key,
                    )
                    .returning(campaigns.c.id)
                ).scalar_one()
            )

    def get_campaign(self, campaign_id: int) -> CampaignRecord:
        with self._reading() as connection:
            row = connection.execute(_CAMPAIGN_QUERY.where(campaigns.c.id == campaign_id)).first()
        if row is None:
            raise NotFoundError(
                f"no campaign {campaign_id}", hint="`mailer campaign list` shows them all."
            )
        return _record(row)

    def newest_campaign_id(
        self,
        event_slug: str,
        list_id: int,
        *,
        message: MessageKind = MessageKind.INVITATION,
        only: frozenset[AudienceFilter] | None = None,
    ) -> int | None:
        """The newest campaign of this event to this list, whatever its state (what
        create_campaign's `check_newest` compares with)."""
        with self._reading() as connection:
            found = connection.execute(
                _newest_campaign(event_slug, list_id, message, only)
            ).scalar()
        return None if found is None else int(found)

    def find_unfinished_campaign(
        self,
        event_slug: str,
        list_id: int,
        *,
        message: MessageKind = MessageKind.INVITATION,
        only: frozenset[AudienceFilter] | None = None,
    ) -> CampaignRecord | None:
        """The newest campaign of this event to this list that has not finished, sending
        the same message to the same answers (a reminder is not the invitation)."""
        with self._reading() as connection:
            row = connection.execute(
                _CAMPAIGN_QUERY.where(
                    campaigns.c.event_slug == event_slug,
                    campaigns.c.list_id == list_id,
                    campaigns.c.message == message.value,
                    _same_audience(only),
                    campaigns.c.status.in_([s.value for s in UNFINISHED]),
                )
                .order_by(campaigns.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _record(row)

    def record_message_fingerprint(self, campaign_id: int, fingerprint: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(message_fingerprint=fingerprint)
            )

    def record_schedule_key(self, campaign_id: int, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(campaigns).where(campaigns.c.id == campaign_id).values(schedule_key=key)
            )

    def earlier_schedule_keys(self, event_slug: str, campaign_id: int) -> list[str]:
        """The schedule keys of the earlier campaigns of this event that reached anyone,
        oldest first: their invites are in calendars, so a change must raise SEQUENCE."""
        reached = (
            select(deliveries.c.id)
            .where(
                deliveries.c.campaign_id == campaigns.c.id,
                # unknown: the relay probably has it (a crash after the body went)
                deliveries.c.status.in_([DeliveryStatus.SENT.value, DeliveryStatus.UNKNOWN.value]),
            )
            .exists()
        )
        query = (
            select(campaigns.c.schedule_key)
            .where(
                campaigns.c.event_slug == event_slug,
                campaigns.c.id < campaign_id,
                campaigns.c.schedule_key.is_not(None),
                reached,
            )
            .order_by(campaigns.c.id)
        )
        with self._reading() as connection:
            return [str(key) for key in connection.execute(query).scalars()]

    def campaign_status(self, campaign_id: int) -> CampaignStatus:
        """Just the status: a sender reads it a few times a second (primary-key lookup)."""
        with self._reading() as connection:
            value = connection.execute(
                select(campaigns.c.status).where(campaigns.c.id == campaign_id)
            ).scalar()
        if value is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        return CampaignStatus(value)

    def last_sent_campaign(
        self,
        event_slug: str,
        list_id: int,
        *,
        message: MessageKind = MessageKind.INVITATION,
        only: frozenset[AudienceFilter] | None = None,
    ) -> CampaignRecord | None:
        """The newest finished or cancelled campaign of this event to this list that
        reached anyone (a `sent` row): sending the event again would mail them twice.
        Only campaigns of the same message to the same answers count."""
        with self._reading() as connection:
            row = connection.execute(
                _CAMPAIGN_QUERY.where(
                    campaigns.c.event_slug == event_slug,
                    campaigns.c.list_id == list_id,
                    campaigns.c.message == message.value,
                    _same_audience(only),
                    campaigns.c.status.in_(
                        [CampaignStatus.FINISHED.value, CampaignStatus.CANCELLED.value]
                    ),
                    _REACHED_ANYONE,
                )
                .order_by(campaigns.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _record(row)

    def invitations_that_reached(self, list_id: int) -> list[CampaignRecord]:
        """Every invitation campaign to this list (the whole list, not a follow-up) that
        reached anyone (a sent or unknown row), newest first, whatever its event."""
        with self._reading() as connection:
            found = connection.execute(
                _CAMPAIGN_QUERY.where(
                    campaigns.c.list_id == list_id,
                    campaigns.c.message == MessageKind.INVITATION.value,
                    campaigns.c.audience_filter.is_(None),
                    _REACHED_ANYONE,
                ).order_by(campaigns.c.id.desc())
            )
            return [_record(row) for row in found]

    def campaigns(self, statuses: Iterable[CampaignStatus] | None = None) -> list[CampaignRecord]:
        query = _CAMPAIGN_QUERY.order_by(campaigns.c.id)
        if statuses is not None:
            query = query.where(campaigns.c.status.in_([s.value for s in statuses]))
        with self._reading() as connection:
            return [_record(row) for row in connection.execute(query)]

    def delivery_counts(self, campaign_id: int) -> DeliveryCounts:
        counts = DeliveryCounts()
        with self._reading() as connection:
            rows = connection.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.status)
            )
            for status, count in rows:
                setattr(counts, DeliveryStatus(status).value, int(count))
        return counts

    def set_campaign_status(
        self,
        campaign_id: int,
        status: CampaignStatus,
        *,
        only_from: Iterable[CampaignStatus] | None = None,
        error: str | None = None,
        scheduled_at: datetime | None = None,
        retry_after: timedelta | None = None,
    ) -> bool:
        """Move a campaign to `status` (if it is in one of `only_from`); True if it moved.

        `retry_after`: a sender that does not hold the campaign's lease (a helper, issue
        15) pauses it for the relay: a worker takes it again after this cool-down, one
        more relay pause in a row, as release_campaign does for the coordinator. Only to
        `paused` from `sending` (only_from), so that a pause or cancel a person made
        meanwhile wins."""
        now = utcnow()
        # A person's decision (pause, cancel, reschedule) ends any automatic retry; a
        # sender's pause for the relay starts one.
        values: dict[str, object] = {"status": status.value, "updated_at": now, "retry_at": None}
        if retry_after is not None:
            only_from = list(only_from or [])
            if status is not CampaignStatus.PAUSED or only_from != [CampaignStatus.SENDING]:
                raise ValueError("retry_after is for a relay pause: PAUSED, only from SENDING")
            values.update(_relay_pause(now, retry_after))
        if error is not None:
            values["last_error"] = error
        if scheduled_at is not None:
            values["scheduled_at"] = scheduled_at
        if status in (CampaignStatus.FINISHED, CampaignStatus.CANCELLED):
            # The lease stays with a sender that may still be draining: it notices at its
            # next heartbeat, records what is in flight, then releases the campaign.
            values["finished_at"] = now
        query = update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
        if only_from is not None:
            query = query.where(campaigns.c.status.in_([s.value for s in only_from]))
        with self.engine.begin() as connection:
            return bool(connection.execute(query).rowcount)

    # -- leases: at most one sender per campaign, across processes and machines ----------

    def claim_campaign(
        self,
        campaign_id: int,
        *,
        owner: str,
        lease: timedelta,
        allowed: Iterable[CampaignStatus] = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING),
        take_over_from: str | None = None,
        early: bool = False,
        retry_paused: bool = False,
    ) -> bool:
        """Atomically take the campaign for `owner` unless another live sender holds it.

        A scheduled campaign is taken only once due, unless `early` (sent now on request).
        With `retry_paused`, a campaign the relay paused is taken once its cool-down ends.

        One UPDATE with the whole condition in its WHERE clause: on SQLite and PostgreSQL
        alike, two workers racing for it see exactly one success.
        """
        now = utcnow()
        query = (
            update(campaigns)
            .where(
                campaigns.c.id == campaign_id,
                or_(
                    campaigns.c.status.in_([s.value for s in allowed]),
                    *([_relay_pause_over(now)] if retry_paused else []),
                ),
                # a scheduled campaign only once it is due (it may have been rescheduled)
                *(
                    []
                    if early
                    else [
                        or_(
                            campaigns.c.status != CampaignStatus.SCHEDULED.value,
                            campaigns.c.scheduled_at <= now,
                        )
                    ]
                ),
                or_(
                    campaigns.c.lease_owner.is_(None),
                    campaigns.c.lease_owner == owner,
                    campaigns.c.lease_expires_at < now,
                    # a sender known to be dead (same host, process gone)
                    campaigns.c.lease_owner == (take_over_from or owner),
                ),
            )
            .values(
                status=CampaignStatus.SENDING.value,
                lease_owner=owner,
                lease_expires_at=now + lease,
                started_at=func.coalesce(campaigns.c.started_at, now),
                updated_at=now,
                last_error=None,
                retry_at=None,
            )
        )
        with self.engine.begin() as connection:
            return bool(connection.execute(query).rowcount)

    def renew_lease(
        self, campaign_id: int, *, owner: str, lease: timedelta
    ) -> CampaignStatus | None:
        """Heartbeat. Returns the campaign's status (an organiser may have paused or
        cancelled it meanwhile), or None if the lease was lost to another worker."""
        now = utcnow()
        with self.engine.begin() as connection:
            held = connection.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                .values(lease_expires_at=now + lease)
            ).rowcount
            if not held:
                return None
            status = connection.execute(
                select(campaigns.c.status).where(campaigns.c.id == campaign_id)
            ).scalar_one()
        return CampaignStatus(status)

    def release_campaign(
        self,
        campaign_id: int,
        *,
        owner: str,
        status: CampaignStatus | None,
        error: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        """Give the lease up, moving to `status` (None: keep what an organiser set).

        The status (and the note, the relay-pause streak, the finish time) changes only
        while the campaign is still `sending`: a pause or cancel an organiser made while
        the run drained is never overwritten, whatever ended the run.

        `retry_after`: paused by the relay; a worker takes it again after this cool-down
        (one more relay pause in a row). Any other release ends the streak."""
        now = utcnow()
        still_sending = campaigns.c.status == CampaignStatus.SENDING.value

        def if_sending(value: object, column: ColumnElement[Any]) -> ColumnElement[Any]:
            return case((still_sending, value), else_=column)

        values: dict[str, object] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "last_error": if_sending(literal(error, Text), campaigns.c.last_error),
        }
        if status is not None:
            values["status"] = if_sending(literal(status.value), campaigns.c.status)
        if retry_after is not None:
            for name, value in _relay_pause(now, retry_after).items():
                values[name] = if_sending(value, campaigns.c[name])
        elif status is not None:
            values["retry_at"] = if_sending(null(), campaigns.c.retry_at)
            values["relay_pauses"] = if_sending(literal(0), campaigns.c.relay_pauses)
        if status is CampaignStatus.FINISHED:
            values["finished_at"] = if_sending(literal(now, UtcDateTime), campaigns.c.finished_at)
        with self.engine.begin() as connection:
            connection.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                .values(**values)
            )


class SchedulingQueries(StoreBase):
    """What the scheduler asks: which campaigns are due, which were missed."""

    def mark_missed(self, *, older_than: datetime) -> list[int]:
        """Scheduled campaigns whose time passed more than the grace period ago -> missed."""
        now = utcnow()
        with self.engine.begin() as connection:
            ids = list(
                connection.execute(
                    select(campaigns.c.id).where(
                        campaigns.c.status == CampaignStatus.SCHEDULED.value,
                        campaigns.c.scheduled_at < older_than,
                    )
                ).scalars()
            )
            if ids:
                connection.execute(
                    update(campaigns)
                    .where(
                        campaigns.c.id.in_(ids),
                        campaigns.c.status == CampaignStatus.SCHEDULED.value,
                    )
                    .values(
                        status=CampaignStatus.MISSED.value,
                        updated_at=now,
                        last_error="missed: no worker was running when it was due; "
                        "resume or cancel it",
                    )
                )
        return [int(i) for i in ids]

    def due_campaigns(self) -> list[int]:
        """Campaigns a worker should take now: scheduled and due, or sending with work due
        and nobody holding them (a dead worker's lease has expired)."""
        now = utcnow()
        free = or_(campaigns.c.lease_owner.is_(None), campaigns.c.lease_expires_at < now)
        work_due = (
            select(deliveries.c.id)
            .where(
                deliveries.c.campaign_id == campaigns.c.id,
                or_(
                    deliveries.c.status.in_(
                        [DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value]
                    ),
                    (deliveries.c.status == DeliveryStatus.DEFERRED.value)
                    & (deliveries.c.next_attempt_at <= now),
                ),
            )
            .exists()
        )
        # Every row final, yet still `sending`: its coordinator died after helpers sent
        # the rest (issue 15); taken, it finishes at once.
        unfinished = (
            select(deliveries.c.id)
            .where(
                deliveries.c.campaign_id == campaigns.c.id,
                deliveries.c.status.in_(
                    [
                        DeliveryStatus.QUEUED.value,
                        DeliveryStatus.SENDING.value,
                        DeliveryStatus.DEFERRED.value,
                    ]
                ),
            )
            .exists()
        )
        query = (
            select(campaigns.c.id)
            .where(
                free,
                or_(
                    (campaigns.c.status == CampaignStatus.SCHEDULED.value)
                    & (campaigns.c.scheduled_at <= now),
                    (campaigns.c.status == CampaignStatus.SENDING.value)
                    & (campaigns.c.snapshot_at.is_(None) | work_due | ~unfinished),
                    _relay_pause_over(now),
                ),
            )
            .order_by(campaigns.c.scheduled_at, campaigns.c.id)
        )
        with self._reading() as connection:
            return [int(i) for i in connection.execute(query).scalars()]
