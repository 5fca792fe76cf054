"""Many senders on one campaign (issue 15): ledger rows claimed in batches, each with a lease.

A sender claims the next due rows that nobody holds, in id order, as one batch: on
PostgreSQL with `FOR UPDATE SKIP LOCKED`, so senders never wait on each other's rows; on
SQLite the claiming UPDATE is itself the write lock. The rows keep their status and get
the batch's id; only the batch's owner may then mark them `sending` and record them (the
fences in store/ledger.py). A sender renews all its batches in one statement.

A batch is taken over when its lease expired or its owner is a dead process of this
machine: in ONE transaction the batch is deleted (its old owner is fenced out of every
row at once) and its rows are settled from what the old owner's journal says (outcomes
applied, bodies started -> `unknown`, the rest due again) or, without that journal (the
owner was on another machine), every row in flight becomes `unknown`, as a single sender's
crash does. A crash of the taker in between leaves the batch as it was.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from mailer.clock import as_utc, utcnow
from mailer.models import CampaignStatus, DeliveryStatus, DueDelivery, RecordedOutcome
from mailer.store.ledger import LedgerQueries
from mailer.store.schema import (
    CLAIMABLE_STATUSES,
    campaigns,
    deliveries,
    send_batches,
    subscribers,
)


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows claimed by one sender: send them under `batch` (begin_sending(batch=...))."""

    batch: int
    rows: list[DueDelivery]


@dataclass(frozen=True, slots=True)
class BatchHolder:
    """Another sender holding rows of a campaign."""

    owner: str
    expired: bool
    """Every one of its leases has run out: it may be taken over."""


@dataclass(frozen=True, slots=True)
class Settled:
    applied: int = 0
    unknown: int = 0
    requeued: int = 0


def _due(include_unknown: bool) -> ColumnElement[bool]:
    # Every status here must be in schema.CLAIMABLE_STATUSES (the claim filters on both).
    now = utcnow()
    return or_(
        deliveries.c.status == DeliveryStatus.QUEUED.value,
        and_(
            deliveries.c.status == DeliveryStatus.DEFERRED.value,
            deliveries.c.next_attempt_at <= now,
        ),
        *([deliveries.c.status == DeliveryStatus.UNKNOWN.value] if include_unknown else []),
    )


def claimable_rows(
    campaign_id: int, *, limit: int, include_unknown: bool, after: int = 0
) -> Select[tuple[int]]:
    """The ids of the campaign's next `limit` due rows held by nobody above `after`, in id
    order (rows are returned in that order: the caller's next `after` is the last).

    Both conditions keep a claim from reading what was already sent, whichever way the
    database reads: ix_deliveries_claimable holds only rows still to claim, and `after`
    (the sender's last claimed id in this pass) starts the read past the rows it has
    already been through. Either alone was not enough on PostgreSQL: with statistics
    taken before the sending started (the usual case mid-campaign: most rows look
    `queued`), the planner reads the primary key from the start, past every row sent
    (58 ms a claim at 50,000 of 100,000 sent, growing with the campaign)."""
    return (
        select(deliveries.c.id)
        .where(
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.id > after,
            deliveries.c.batch_id.is_(None),
            # Implied by _due, but written out: it is ix_deliveries_claimable's predicate,
            # which SQLite's planner matches only term for term, literals included (a
            # bound `IN (?, ?, ?)` does not match, and SQLite read the rowids from 0).
            deliveries.c.status.in_(
                bindparam(
                    "claimable_statuses",
                    list(CLAIMABLE_STATUSES),
                    expanding=True,
                    literal_execute=True,
                )
            ),
            _due(include_unknown),
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )


class BatchQueries(LedgerQueries):
    def claim_batch(
        self,
        campaign_id: int,
        *,
        owner: str,
        lease: timedelta,
        limit: int,
        include_unknown: bool = False,
        after: int = 0,
    ) -> Claim | None:
        """The next `limit` due rows nobody holds with an id above `after`, as a new batch
        of `owner`; None if none. A pass over the campaign passes its last claimed id as
        `after` (see claimable_rows), and 0 again once it reaches the top (rows below it
        may have been given back or come due meanwhile).

        The owner's batches whose rows are all done are dropped first, so renewing stays
        one short statement however long the campaign."""
        now = utcnow()
        free_rows = (
            claimable_rows(campaign_id, limit=limit, include_unknown=include_unknown, after=after)
            .with_for_update(skip_locked=True)  # PostgreSQL; nothing on SQLite
            # A CTE: evaluated once. As a plain `IN (subquery)` PostgreSQL may run it again
            # for each row it updates, and then claims far more than `limit` rows.
            .cte("free_rows")
        )
        with self.engine.begin() as connection:
            connection.execute(
                delete(send_batches).where(
                    send_batches.c.campaign_id == campaign_id,
                    send_batches.c.owner == owner,
                    ~exists().where(deliveries.c.batch_id == send_batches.c.id),
                )
            )
            batch = int(
                connection.execute(
                    insert(send_batches)
                    .values(
                        campaign_id=campaign_id,
                        owner=owner,
                        lease_expires_at=now + lease,
                        created_at=now,
                    )
                    .returning(send_batches.c.id)
                ).scalar_one()
            )
            taken = connection.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(select(free_rows.c.id)))
                .where(deliveries.c.batch_id.is_(None))
                .values(batch_id=batch)
                .returning(deliveries.c.id)
            ).all()
            if not taken:
                connection.execute(delete(send_batches).where(send_batches.c.id == batch))
                return None
            rows = connection.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.subscriber_id,
                    deliveries.c.email,
                    deliveries.c.attempts,
                    deliveries.c.status,
                    deliveries.c.message_id,
                    subscribers.c.name,
                    subscribers.c.attributes,
                )
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.batch_id == batch)
                .order_by(deliveries.c.id)
            ).all()
        return Claim(
            batch,
            [
                DueDelivery(
                    id=row.id,
                    subscriber_id=row.subscriber_id,
                    email=row.email,
                    name=row.name,
                    attributes=row.attributes or {},
                    attempts=row.attempts,
                    status=DeliveryStatus(row.status),
                    message_id=row.message_id,
                )
                for row in rows
            ],
        )

    def renew_batches(self, campaign_id: int, *, owner: str, lease: timedelta) -> int:
        """Extend every batch `owner` holds in the campaign; how many it still holds."""
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    update(send_batches)
                    .where(send_batches.c.campaign_id == campaign_id, send_batches.c.owner == owner)
                    .values(lease_expires_at=utcnow() + lease)
                ).rowcount
            )

    def renew_sender(
        self, campaign_id: int, *, owner: str, lease: timedelta, holds_campaign: bool
    ) -> CampaignStatus | None:
        """The heartbeat, in one transaction (one commit: a loaded database must not make
        it late): the campaign's lease if `holds_campaign` (None if it was lost), every
        batch of `owner`, and the campaign's status (a pause or cancel meanwhile)."""
        until = utcnow() + lease
        with self.engine.begin() as connection:
            if holds_campaign:
                held = connection.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                    .values(lease_expires_at=until)
                ).rowcount
                if not held:
                    return None
            connection.execute(
                update(send_batches)
                .where(send_batches.c.campaign_id == campaign_id, send_batches.c.owner == owner)
                .values(lease_expires_at=until)
            )
            status = connection.execute(
                select(campaigns.c.status).where(campaigns.c.id == campaign_id)
            ).scalar_one()
        return CampaignStatus(status)

    def release_batches(self, campaign_id: int, *, owner: str) -> int:
        """The sender stops: its rows not in flight go back to everyone, its batches with
        nothing in flight are dropped. Returns how many of its rows are still `sending`
        (a give-back that failed): those stay in its batch, for its journal to settle."""
        mine = select(send_batches.c.id).where(
            send_batches.c.campaign_id == campaign_id, send_batches.c.owner == owner
        )
        with self.engine.begin() as connection:
            connection.execute(
                update(deliveries)
                .where(
                    deliveries.c.batch_id.in_(mine.scalar_subquery()),
                    deliveries.c.status != DeliveryStatus.SENDING.value,
                )
                .values(batch_id=None)
            )
            connection.execute(
                delete(send_batches).where(
                    send_batches.c.campaign_id == campaign_id,
                    send_batches.c.owner == owner,
                    ~exists().where(deliveries.c.batch_id == send_batches.c.id),
                )
            )
            return int(
                connection.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.batch_id.in_(mine.scalar_subquery()))
                ).scalar_one()
            )

    def batch_holders(self, campaign_id: int, *, besides: str | None = None) -> list[BatchHolder]:
        """Who else holds rows of the campaign, and whether all their leases ran out."""
        now = utcnow()
        query = (
            select(send_batches.c.owner, func.max(send_batches.c.lease_expires_at))
            .where(send_batches.c.campaign_id == campaign_id)
            .group_by(send_batches.c.owner)
        )
        if besides is not None:
            query = query.where(send_batches.c.owner != besides)
        with self._reading() as connection:
            return [
                BatchHolder(owner=str(owner), expired=(as_utc(until) or now) < now)
                for owner, until in connection.execute(query)
            ]

    def take_over_batches(
        self,
        campaign_id: int,
        *,
        owner: str,
        dead: bool,
        journal_outcomes: Mapping[int, RecordedOutcome] | None,
        journal_started: Collection[int] = (),
    ) -> Settled:
        """Take `owner`'s batches of the campaign (those whose lease ran out; all of them
        when `dead`) and settle their rows, in one transaction (see the module docstring).

        `journal_outcomes` / `journal_started`: what `owner`'s journal says (None: it is
        not on this machine, so every row it had `sending` becomes unknown)."""
        now = utcnow()
        with self.engine.begin() as connection:
            taken = [
                int(i)
                for i in connection.execute(
                    delete(send_batches)
                    .where(
                        send_batches.c.campaign_id == campaign_id,
                        send_batches.c.owner == owner,
                        *([] if dead else [send_batches.c.lease_expires_at < now]),
                    )
                    .returning(send_batches.c.id)
                ).scalars()
            ]
            if not taken:
                return Settled()
            in_flight = connection.execute(
                select(deliveries.c.id, deliveries.c.attempts).where(
                    deliveries.c.batch_id.in_(taken),
                    deliveries.c.status == DeliveryStatus.SENDING.value,
                )
            ).all()
            known = journal_outcomes or {}
            outcomes = [known[i] for i, _ in in_flight if i in known]
            self.write_outcomes(connection, campaign_id, outcomes)
            rest = [(i, attempts) for i, attempts in in_flight if i not in known]
            started = set(journal_started)
            unknown = [i for i, _ in rest if journal_outcomes is None or i in started]
            never_left = [
                (i, a) for i, a in rest if journal_outcomes is not None and i not in started
            ]
            moves = (
                (unknown, {"status": DeliveryStatus.UNKNOWN.value}),
                ([i for i, a in never_left if a == 0], {"status": DeliveryStatus.QUEUED.value}),
                (
                    [i for i, a in never_left if a > 0],
                    {"status": DeliveryStatus.DEFERRED.value, "next_attempt_at": now},
                ),
            )
            for ids, values in moves:
                if ids:
                    connection.execute(
                        update(deliveries)
                        .where(
                            deliveries.c.id.in_(ids),
                            deliveries.c.status == DeliveryStatus.SENDING.value,
                        )
                        .values(**values, updated_at=now, batch_id=None)
                    )
            # every other row of those batches (claimed, not yet taken): back to everyone
            connection.execute(
                update(deliveries).where(deliveries.c.batch_id.in_(taken)).values(batch_id=None)
            )
        return Settled(len(outcomes), len(unknown), len(never_left))

    def joinable_campaigns(self) -> list[int]:
        """Campaigns being sent (by a sender holding the campaign lease) with due rows that
        nobody holds: another sender may help (`mailer worker` on another core or machine)."""
        now = utcnow()
        claimable = (
            select(deliveries.c.id)
            .where(
                deliveries.c.campaign_id == campaigns.c.id,
                deliveries.c.batch_id.is_(None),
                or_(
                    deliveries.c.status == DeliveryStatus.QUEUED.value,
                    and_(
                        deliveries.c.status == DeliveryStatus.DEFERRED.value,
                        deliveries.c.next_attempt_at <= now,
                    ),
                ),
            )
            .exists()
        )
        query = (
            select(campaigns.c.id)
            .where(
                campaigns.c.status == CampaignStatus.SENDING.value,
                campaigns.c.snapshot_at.is_not(None),
                campaigns.c.lease_owner.is_not(None),
                campaigns.c.lease_expires_at >= now,
                claimable,
            )
            .order_by(campaigns.c.id)
        )
        with self._reading() as connection:
            return [int(i) for i in connection.execute(query).scalars()]
