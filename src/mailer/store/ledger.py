"""The delivery ledger: one row per (campaign, subscriber), the record of who got what.

A row is `sent` only after the relay accepted the message. Rows are marked `sending` in the
store before their messages go out, so a crash leaves evidence; together with the local
journal (mailer.sending.journal) a resume knows which of them may have been delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    column,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from mailer.clock import as_utc, utcnow
from mailer.models import (
    CampaignStatus,
    DeliveryStatus,
    DueDelivery,
    FollowUpAudience,
    LaterOutcome,
    MessageKind,
    RecordedOutcome,
    ReportRow,
    SubscriberStatus,
    SuppressionReason,
    UnsubscribeSource,
)
from mailer.store.base import StoreBase, driver_values, executemany_in_driver, unchanged
from mailer.store.rsvps import follow_up_condition
from mailer.store.schema import (
    UtcDateTime,
    campaigns,
    deliveries,
    memberships,
    send_batches,
    subscribers,
)
from mailer.store.suppressions import SuppressionQueries, active_suppression

# States a row can be taken from for sending (unknown only with --resend-unknown).
_DUE = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, DeliveryStatus.UNKNOWN)


ALREADY_INVITED = "already had this event's invitation (another list); --new mails them too"


# A row that reached its subscriber for good: sent, or perhaps sent (unknown). Not rows
# still due, nor rows being sent now: those may go back to the queue (a pause, a relay
# that is down, a crash) and their campaign be cancelled, and a skip for having had the
# invitation is final (two reviews: left out for a campaign that never reached them).
_REACHED_FOR_GOOD = [DeliveryStatus.SENT.value, DeliveryStatus.UNKNOWN.value]


@dataclass(frozen=True, slots=True)
class SameEvent:
    """Which campaigns are of one event: those whose event is the same (`key`,
    Event.identity: title, start, venue and address; a copy of the file under another
    name is the same event, the same file edited to a new date is not). A campaign made
    before migration 0017 has no key: it is matched by its file's name (`slug`), as all
    were before."""

    slug: str
    key: str | None

    def campaigns(self, table: Any) -> ColumnElement[bool]:
        """SQL condition on `table` (campaigns or an alias): of this event."""
        by_name = table.c.event_slug == self.slug
        if self.key is None:
            return by_name  # type: ignore[no-any-return]
        return or_(table.c.event_key == self.key, and_(table.c.event_key.is_(None), by_name))

    def lock_names(self) -> list[str]:
        """What a marking of this event locks (see _marking_for_event), in one order for
        every caller: two campaigns of one event share one of them at least."""
        names = [f"mailer-marking:slug:{self.slug}"]
        if self.key is not None:
            names.append(f"mailer-marking:key:{self.key}")
        return sorted(names)


def invited_elsewhere(event: SameEvent, campaign_id: int | None) -> ColumnElement[bool]:
    """SQL condition on `subscribers`: had this event's invitation through another
    campaign (a row of it reached them)."""
    earlier = deliveries.alias("earlier")
    other = campaigns.alias("other")
    # Not correlated: the event's other campaigns, then their reached rows through
    # (campaign_id, status, id), as one set each database builds once (SQLite an
    # ephemeral index, PostgreSQL a hashed subplan). As a correlated EXISTS, SQLite
    # scanned the deliveries for every member: minutes for 100,000 members.
    others = select(other.c.id).where(
        event.campaigns(other),
        other.c.message == MessageKind.INVITATION.value,
        *([other.c.id != campaign_id] if campaign_id is not None else []),
    )
    return subscribers.c.id.in_(
        select(earlier.c.subscriber_id).where(
            earlier.c.campaign_id.in_(others),
            earlier.c.status.in_(_REACHED_FOR_GOOD),
        )
    )


def mailable(list_id: int | ColumnElement[int]) -> Any:
    """SQL condition: subscribed globally and to the list, no suppression in force."""
    return and_(
        subscribers.c.status == SubscriberStatus.SUBSCRIBED.value,
        memberships.c.status == SubscriberStatus.SUBSCRIBED.value,
        ~active_suppression(subscribers.c.email_key, list_id),
    )


# begin_sending runs once per chunk of rows about to go; building its statement with
# SQLAlchemy each time cost ~1.3 ms a call (~80 µs a message at concurrency 16). Built once,
# with the ids as an expanding parameter, it costs a fraction of that (bench_send.py).
#
# ONE UPDATE decides, with RETURNING, for each row: taken (`sending`) if it is still due, the
# caller still holds the lease and the subscriber is still mailable; skipped if it is due
# and held but the subscriber left. One statement is atomic on its own, so on PostgreSQL it
# runs in autocommit: one round trip instead of BEGIN, a take, a skip and COMMIT (four),
# each of which waits for a scheduler slot on a loaded machine and for the GIL in a busy
# sender (a call of 16 rows, from an idle process / beside a thread holding the GIL:
# 10.4 / 47 ms as four, 2.2-4.8 / 18-25 ms as one). A SELECT first and an UPDATE after
# would not be atomic on SQLite, where pysqlite only opens the transaction at the first
# write.
_IDS: BindParameter[list[int]] = bindparam("b_ids", expanding=True)
# On PostgreSQL one array parameter instead: the statement's text is then the same
# whatever the chunk's size, so psycopg prepares it once (after five calls) and the
# server plans it once; an expanding IN gave each size its own text (up to 8 x
# concurrency of them), and 28% of the markings of a 50,000 run were parsed and planned
# again (bench/README, thirteenth session).
_ID_ARRAY: BindParameter[Sequence[int]] = bindparam("b_ids", type_=postgresql.ARRAY(BigInteger()))
_LIST: BindParameter[int] = bindparam("b_list")
_STILL_DUE_ROW = deliveries.c.status.in_([s.value for s in _DUE])
_HOLDS_LEASE = (
    select(campaigns.c.id)
    .where(
        campaigns.c.id == bindparam("b_campaign"), campaigns.c.lease_owner == bindparam("b_owner")
    )
    .exists()
)
# Who may touch a row (issue 15): the owner of the batch it is in; a row in no batch (taken
# the single-sender way, fetch_due + begin_sending) only the holder of the campaign lease.
# A sender whose batch was taken over (its lease expired, or it died) is fenced out of
# every row of that batch: the row's batch_id names a batch that is no longer its.
_IN_OWN_BATCH = (
    select(send_batches.c.id)
    .where(
        send_batches.c.id == deliveries.c.batch_id,
        send_batches.c.owner == bindparam("b_owner"),
    )
    .exists()
)
_NO_BATCH = deliveries.c.batch_id.is_(None)
_HELD = or_(and_(_NO_BATCH, _HOLDS_LEASE), _IN_OWN_BATCH)
# The row is in the caller's batch and the caller holds that batch: the row's batch tested
# so that no index can serve it, the batch's owner once for the statement (not correlated
# with the row). Marking a few rows of a batch must find them by id: the batch ids are
# newer than the statistics, so the planner expected one row per batch and read the whole
# batch through ix_deliveries_batch_id for every chunk (1,504 rows read to mark 16, 0.5 ms
# of the server's time a call, growing with MAILER_BATCH_SIZE). NULL (no batch) never
# equals a batch's id.
_IN_BATCH = func.coalesce(deliveries.c.batch_id, 0) == bindparam("b_batch")
_HOLDS_BATCH = (
    select(send_batches.c.id)
    .where(send_batches.c.id == bindparam("b_batch"), send_batches.c.owner == bindparam("b_owner"))
    .exists()
)
_BATCH_HOLDER = select(send_batches.c.owner).where(send_batches.c.id == bindparam("b_batch"))
_STILL_MAILABLE = (
    select(subscribers.c.id)
    .join(
        memberships,
        and_(memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == _LIST),
    )
    .where(subscribers.c.id == deliveries.c.subscriber_id, mailable(_LIST))
    .exists()
)


# Marking a plain invitation's rows (see _mark) asks, for each row's subscriber, about
# the same event's other invitation campaigns (`b_others`, looked up once per call under
# the event's lock, usually none or one or two): two campaigns of one event to two lists,
# both sending (or the first paused and resumed), would each mail the people on both
# lists, as the snapshot leaves out only those reached before it. Each is one probe of
# uq_deliveries_campaign_subscriber per other campaign.
_ELSEWHERE = deliveries.alias("elsewhere")
_OTHERS: BindParameter[list[int]] = bindparam("b_others", expanding=True)


_LIVE: BindParameter[list[int]] = bindparam("b_live", expanding=True)


def _elsewhere(campaign_ids: BindParameter[list[int]], statuses: list[str]) -> ColumnElement[bool]:
    return (
        select(_ELSEWHERE.c.id)
        .where(
            _ELSEWHERE.c.campaign_id.in_(campaign_ids),
            _ELSEWHERE.c.subscriber_id == deliveries.c.subscriber_id,
            _ELSEWHERE.c.status.in_(statuses),
        )
        .exists()
    )


# Reached there for good (sent, or perhaps sent): skipped here, saying why. Being sent
# there right now: held back here a while (deferred, `b_held_until`), not skipped, as
# that row may yet go back to the queue (a pause, a relay that is down, a crash) and its
# campaign be cancelled: a review left two people without any invitation that way. Only
# by a campaign that is sending now, its lease alive (`b_live`): a `sending` row left by
# a crash in a campaign since cancelled, or paused, or not yet taken over, held people
# back for ever (a review).
_REACHED_ELSEWHERE = _elsewhere(_OTHERS, _REACHED_FOR_GOOD)
_GOING_ELSEWHERE = _elsewhere(_LIVE, [DeliveryStatus.SENDING.value])
HELD_BACK = "held back: another campaign of this event is sending it to them now"
_HOLD_SECONDS = 10.0


# With the other campaigns, each row's fate is decided once, in a CTE: one verdict a row,
# from which the UPDATE sets all four columns. Asked in each column's CASE, the three
# checks ran once per column (12 correlated subqueries a row): marking 64 rows beside 24
# other campaigns took 11.5 ms on PostgreSQL and 5.4 ms on SQLite, decided once 4.4 and
# 1.6 ms (bench_marking.py), and it runs under the event's lock. MATERIALIZED, or both
# databases fold the CTE back into the UPDATE, its CASE copied into every column again
# (16 ms on PostgreSQL). The rows' WHERE is asked twice: in the CTE, so that only rows
# to mark are judged; of the row written, so that PostgreSQL asks it again of a row
# another transaction changed while this one waited for it (still due, still held). The
# verdict, as the checks it replaces, reads the statement's snapshot. On SQLite the
# statement begins with WITH, which pysqlite does not take for a write: it runs inside
# the transaction that _marking_for_event's write lock began.
_LEFT, _REACHED, _GOING, _TAKE = "left", "reached", "going", "take"
_VERDICT = case(
    (~_STILL_MAILABLE, literal(_LEFT)),
    (_REACHED_ELSEWHERE, literal(_REACHED)),
    (_GOING_ELSEWHERE, literal(_GOING)),
    else_=literal(_TAKE),
)


def _mark(
    fence: ColumnElement[bool], *, leave_out_invited: bool = False, id_array: bool = False
) -> Any:
    """Take or skip each due, held row of `b_ids` (see above); RETURNING (id, new status).
    A skipped row leaves its batch; a taken one stays in it until recorded. With
    `leave_out_invited` (and `b_others`), a row whose subscriber another campaign of the
    event reached is skipped too, saying why (ALREADY_INVITED), and one that campaign is
    sending to now is deferred for a few seconds (HELD_BACK): neither taken nor skipped."""
    ids = deliveries.c.id == any_(_ID_ARRAY) if id_array else deliveries.c.id.in_(_IDS)
    rows = (ids, _STILL_DUE_ROW, fence)
    columns: dict[str, Any]
    if not leave_out_invited:
        marking = update(deliveries).where(*rows)
        columns = {
            "status": case(
                (_STILL_MAILABLE, DeliveryStatus.SENDING.value),
                else_=DeliveryStatus.SKIPPED.value,
            ),
            "batch_id": case((_STILL_MAILABLE, deliveries.c.batch_id), else_=null()),
        }
    else:
        verdicts = (
            select(deliveries.c.id, _VERDICT.label("verdict"))
            .where(*rows)
            .cte("verdicts")
            .prefix_with("MATERIALIZED")
        )
        verdict = verdicts.c.verdict
        marking = update(deliveries).where(deliveries.c.id == verdicts.c.id, *rows)
        columns = {
            "status": case(
                (verdict == _TAKE, DeliveryStatus.SENDING.value),
                (verdict == _GOING, DeliveryStatus.DEFERRED.value),
                else_=DeliveryStatus.SKIPPED.value,  # left, or reached
            ),
            "batch_id": case((verdict == _TAKE, deliveries.c.batch_id), else_=null()),
            "last_reply": case(
                (verdict == _REACHED, literal(ALREADY_INVITED)),
                (verdict == _GOING, literal(HELD_BACK)),
                else_=deliveries.c.last_reply,
            ),
            "next_attempt_at": case(
                (verdict == _GOING, bindparam("b_held_until", type_=UtcDateTime)),
                else_=deliveries.c.next_attempt_at,
            ),
        }
    return marking.values(**columns, updated_at=bindparam("b_now")).returning(
        deliveries.c.id, deliveries.c.status
    )


# (on PostgreSQL, in a batch, leaving out those invited elsewhere) -> the marking statement.
_MARKS = {
    (postgres, in_batch, leave_out): _mark(
        and_(_IN_BATCH, _HOLDS_BATCH) if in_batch else and_(_NO_BATCH, _HOLDS_LEASE),
        leave_out_invited=leave_out,
        id_array=postgres,
    )
    for postgres in (False, True)
    for in_batch in (False, True)
    for leave_out in (False, True)
}
_TAKE_WRITE_LOCK = update(campaigns).where(campaigns.c.id == -1).values(id=campaigns.c.id)
_LEASE_HOLDER = select(campaigns.c.lease_owner).where(campaigns.c.id == bindparam("b_campaign"))


# Recording outcomes: with `owner`, only rows still `sending` and held by it are written
# (fenced); a recorded row leaves its batch. _RECORD_EACH runs once per outcome
# (executemany). On PostgreSQL _RECORD_ALL writes a whole flush in one statement, the
# outcomes passed as one JSON parameter and joined by id: psycopg's executemany ran one
# UPDATE per row (500 a flush; 74 ms for 480 rows from an idle process), one statement
# plans and commits once. Its status test is written so that no index serves it (as
# _IN_BATCH): the statistics say few rows are `sending`, and the planner then read every
# `sending` row through ix_deliveries_campaign_status and joined each to every outcome (a
# flush of 500 rows, all still `sending`: 250,000 comparisons, 0.1-0.3 s) instead of
# finding each outcome's row by id.
_FENCE = and_(deliveries.c.status == DeliveryStatus.SENDING.value, _HELD)
_FENCE_BY_ID = and_(func.coalesce(deliveries.c.status, "") == DeliveryStatus.SENDING.value, _HELD)


def _record_each(fenced: bool) -> Any:
    return (
        update(deliveries)
        .where(deliveries.c.id == bindparam("b_id"), *([_FENCE] if fenced else []))
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            last_code=bindparam("b_code"),
            last_reply=bindparam("b_reply"),
            message_id=func.coalesce(bindparam("b_message_id"), deliveries.c.message_id),
            next_attempt_at=bindparam("b_next"),
            sent_at=bindparam("b_sent_at"),
            updated_at=bindparam("b_now"),
            batch_id=None,
            relay=bindparam("b_relay"),  # issue 15: which relay said it
        )
    )


_OUTCOME_COLUMNS = (
    column("id", BigInteger()),
    column("status", String()),
    column("attempts", Integer()),
    column("code", Integer()),
    column("reply", Text()),
    column("message_id", String()),
    column("next", DateTime(timezone=True)),
    column("relay", String()),
)


def _record_all(fenced: bool) -> Any:
    # The outcomes as one JSON array of objects: psycopg dumps a text array element by
    # element through a quoting regex (20 ms of the sender's CPU for a flush of 500 in
    # nine arrays), json.dumps does it in C.
    given = (
        func.jsonb_to_recordset(bindparam("o_rows", type_=JSONB))
        .table_valued(*_OUTCOME_COLUMNS)
        .render_derived(name="o", with_types=True)
    )
    return (
        update(deliveries)
        .where(deliveries.c.id == given.c.id, *([_FENCE_BY_ID] if fenced else []))
        .values(
            status=given.c.status,
            attempts=given.c.attempts,
            last_code=given.c.code,
            last_reply=given.c.reply,
            message_id=func.coalesce(given.c.message_id, deliveries.c.message_id),
            next_attempt_at=given.c.next,
            sent_at=case(
                (given.c.status == DeliveryStatus.SENT.value, bindparam("b_now")), else_=null()
            ),
            updated_at=bindparam("b_now"),
            batch_id=None,
            relay=given.c.relay,
        )
    )


_RECORD_EACH = {fenced: _record_each(fenced) for fenced in (False, True)}
_RECORD_ALL = {fenced: _record_all(fenced) for fenced in (False, True)}


def _distinct_ids(rows: list[RecordedOutcome]) -> bool:
    return len({o.delivery_id for o in rows}) == len(rows)


def _random_hex(dialect: str) -> ColumnElement[str]:
    """Random hex computed by the database, per row of an INSERT ... SELECT."""
    if dialect == "postgresql":
        # gen_random_uuid() (built in since PostgreSQL 13) is 122 random bits: two of them.
        pair = func.gen_random_uuid().cast(Text) + func.gen_random_uuid().cast(Text)
        return func.replace(pair, "-", "")
    return func.lower(func.hex(func.randomblob(16)))  # SQLite: 128 random bits


def _other_invitations(
    connection: Connection, event: SameEvent, campaign_id: int, now: datetime
) -> tuple[list[int], list[int]]:
    """The event's other invitation campaigns, and those of them sending now (status
    `sending`, lease alive: their `sending` rows are really going)."""
    found = connection.execute(
        select(campaigns.c.id, campaigns.c.status, campaigns.c.lease_expires_at).where(
            event.campaigns(campaigns),
            campaigns.c.message == MessageKind.INVITATION.value,
            campaigns.c.id != campaign_id,
        )
    ).all()
    live = [
        row.id
        for row in found
        if row.status == CampaignStatus.SENDING.value
        and (expires := as_utc(row.lease_expires_at)) is not None
        and expires > now
    ]
    return [row.id for row in found], live


class LedgerQueries(SuppressionQueries, StoreBase):
    _leaving_out: dict[int, SameEvent | None]
    """campaign id -> _leaves_out_invited's answer (Store.__init__ makes it)."""

    @contextmanager
    def _one_statement(self) -> Iterator[Connection]:
        """A connection for statements each atomic on its own: in autocommit on PostgreSQL,
        which spares the BEGIN and COMMIT round trips (each statement is its own
        transaction, committed and flushed as before); in a transaction on SQLite."""
        if self.engine.dialect.name == "postgresql":
            with self._reading() as connection:  # autocommit there
                yield connection
        else:
            with self.engine.begin() as connection:
                yield connection

    def count_mailable(self, list_id: int, *, not_invited_to: SameEvent | None = None) -> int:
        """How many a campaign to this list would reach now (what a snapshot would take);
        with `not_invited_to` (an event), leaving out those who had its invitation
        through another campaign, as a new invitation without --new does."""
        query = (
            select(func.count())
            .select_from(subscribers)
            .join(
                memberships,
                and_(
                    memberships.c.subscriber_id == subscribers.c.id,
                    memberships.c.list_id == list_id,
                ),
            )
            .where(mailable(list_id))
        )
        if not_invited_to is not None:
            query = query.where(~invited_elsewhere(not_invited_to, None))
        with self._reading() as connection:
            return int(connection.execute(query).scalar_one())

    def snapshot_audience(
        self,
        campaign_id: int,
        list_id: int,
        *,
        message_id_domain: str = "mailer.invalid",
        audience: FollowUpAudience | None = None,
    ) -> int | None:
        """Freeze the audience into the ledger once; None if it was already taken.

        `audience`: a follow-up (issue 14) takes only the list's members it names (by
        their answers; a reminder never anyone who already had it).

        Each row gets its Message-ID here, random (128 bits or more) and on the row before
        any message is built: a resend of an unknown outcome reuses it, and no two stores
        or campaigns can ever issue the same one."""
        now = utcnow()
        with self.engine.begin() as connection:
            random_part = _random_hex(connection.dialect.name)
            message_id = literal("<") + random_part + literal(f"@{message_id_domain}>")
            first = connection.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.snapshot_at.is_(None))
                .values(snapshot_at=now, updated_at=now)
            ).rowcount
            if not first:
                return None
            this = connection.execute(
                select(
                    campaigns.c.event_slug,
                    campaigns.c.event_key,
                    campaigns.c.message,
                    campaigns.c.mail_again,
                ).where(campaigns.c.id == campaign_id)
            ).one()
            status: ColumnElement[str] = literal(DeliveryStatus.QUEUED.value)
            reply: ColumnElement[Any] = null()
            if (
                audience is None
                and this.message == MessageKind.INVITATION.value
                and not this.mail_again
            ):
                # Not again to whoever had this event's invitation through another
                # campaign (another list): skipped, saying why (--new mails them too).
                invited = invited_elsewhere(SameEvent(this.event_slug, this.event_key), campaign_id)
                status = case((invited, DeliveryStatus.SKIPPED.value), else_=status)
                reply = case((invited, literal(ALREADY_INVITED)), else_=reply)
            taken = (
                select(
                    literal(campaign_id),
                    subscribers.c.id,
                    subscribers.c.email,
                    status,
                    literal(0),
                    literal(now, deliveries.c.updated_at.type),
                    message_id,
                    reply,
                )
                .join(
                    memberships,
                    and_(
                        memberships.c.subscriber_id == subscribers.c.id,
                        memberships.c.list_id == list_id,
                    ),
                )
                .where(
                    mailable(list_id),
                    *(
                        [follow_up_condition(audience, campaign_id=campaign_id)]
                        if audience is not None
                        else []
                    ),
                )
            )
            result = connection.execute(
                insert(deliveries).from_select(
                    [
                        "campaign_id",
                        "subscriber_id",
                        "email",
                        "status",
                        "attempts",
                        "updated_at",
                        "message_id",
                        "last_reply",
                    ],
                    taken,
                )
            )
            if result.rowcount is not None and result.rowcount >= 0:
                taken_count = int(result.rowcount)
            else:  # psycopg reports -1 for INSERT ... SELECT: count what was just written.
                taken_count = int(
                    connection.execute(
                        select(func.count())
                        .select_from(deliveries)
                        .where(deliveries.c.campaign_id == campaign_id)
                    ).scalar_one()
                )
        # The sending starts now: the row-marking checks read these tables for every batch.
        self.refresh_statistics("deliveries", "memberships", "subscribers", changed=taken_count)
        return taken_count

    def fetch_due(
        self,
        campaign_id: int,
        *,
        after_id: int,
        limit: int,
        include_unknown: bool = False,
    ) -> list[DueDelivery]:
        """The next `limit` rows due for sending, by id after `after_id` (keyset pagination)."""
        now = utcnow()
        due = or_(
            deliveries.c.status == DeliveryStatus.QUEUED.value,
            and_(
                deliveries.c.status == DeliveryStatus.DEFERRED.value,
                deliveries.c.next_attempt_at <= now,
            ),
            *([deliveries.c.status == DeliveryStatus.UNKNOWN.value] if include_unknown else []),
        )
        query = (
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
            .where(
                deliveries.c.campaign_id == campaign_id,
                deliveries.c.id > after_id,
                due,
                _NO_BATCH,  # not another sender's claim (issue 15)
            )
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        with self._reading() as connection:
            return [
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
                for row in connection.execute(query)
            ]

    def begin_sending(
        self,
        campaign_id: int,
        list_id: int,
        ids: list[int],
        *,
        owner: str,
        batch: int | None = None,
    ) -> tuple[set[int], set[int]] | None:
        """Just before sending: skip rows whose subscriber left since the snapshot, mark the
        rest `sending`. Returns (to send, skipped) delivery ids, in one statement.

        Nothing is taken unless `owner` holds `batch` (the rows' claim, store/batches.py)
        or, without a batch, the campaign's lease: else None is returned. Only rows still
        due are taken, so no row is ever sent by two.
        """
        if not ids:
            return set(), set()
        event = self._leaves_out_invited(campaign_id)
        now = utcnow()
        params: dict[str, object] = {
            "b_ids": ids,
            "b_list": list_id,
            "b_campaign": campaign_id,
            "b_owner": owner,
            "b_batch": batch,
            "b_now": now,
        }
        holder_of = _LEASE_HOLDER if batch is None else _BATCH_HOLDER
        taken: set[int] = set()
        skipped: set[int] = set()
        marking = self._one_statement() if event is None else self._marking_for_event(event)
        with marking as connection:
            others, live = (
                ([], [])
                if event is None
                else _other_invitations(connection, event, campaign_id, now)
            )
            if others:
                params["b_others"] = others
                params["b_live"] = live
                params["b_held_until"] = now + timedelta(seconds=_HOLD_SECONDS)
            postgres = connection.dialect.name == "postgresql"
            mark = _MARKS[(postgres, batch is not None, bool(others))]
            for delivery_id, status in connection.execute(mark, params):
                if status == DeliveryStatus.SENDING.value:
                    taken.add(delivery_id)
                elif status == DeliveryStatus.SKIPPED.value:
                    skipped.add(delivery_id)
                # else HELD_BACK (deferred): neither, taken up again after a few seconds
            if not taken and not skipped:
                holder = connection.execute(holder_of, params).scalar()
                if holder != owner:
                    return None
        return taken, skipped

    def _leaves_out_invited(self, campaign_id: int) -> SameEvent | None:
        """The campaign's event if its marking leaves out whoever another campaign of the
        event reached (a plain invitation: not --new, not a follow-up), else None.
        Remembered: none of this changes once a campaign is made, and ids are never
        reused."""
        if campaign_id in self._leaving_out:
            return self._leaving_out[campaign_id]
        with self._reading() as connection:
            this = connection.execute(
                select(
                    campaigns.c.event_slug,
                    campaigns.c.event_key,
                    campaigns.c.message,
                    campaigns.c.mail_again,
                    campaigns.c.audience_filter,
                ).where(campaigns.c.id == campaign_id)
            ).one_or_none()
        event = None
        if (
            this is not None
            and this.message == MessageKind.INVITATION.value
            and not this.mail_again
            and this.audience_filter is None
        ):
            event = SameEvent(str(this.event_slug), this.event_key)
        self._leaving_out[campaign_id] = event
        return event

    @contextmanager
    def _marking_for_event(self, event: SameEvent) -> Iterator[Connection]:
        """A transaction for marking rows of a campaign that leaves out those invited
        elsewhere, holding the event first, until commit: on PostgreSQL its advisory
        locks (in one order); on SQLite the write lock (a no-op UPDATE: pysqlite begins a
        transaction only at the first write, and the reads after it must see every
        commit). So two campaigns of the event marking the same person at the same moment
        do not both see them unreached, and the other campaigns read are all there are."""
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                for name in event.lock_names():
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name}
                    )
            else:
                connection.execute(_TAKE_WRITE_LOCK)
            yield connection

    def record_outcomes(
        self,
        campaign_id: int,
        outcomes: Iterable[RecordedOutcome],
        *,
        owner: str | None = None,
    ) -> None:
        """Write a batch of outcomes in one transaction; hard bounces also suppress.

        With `owner`, only rows still `sending` in that owner's batch (or, for a row in no
        batch, under its campaign lease) are written: a sender that lost its lease cannot
        overwrite what the new holder records. A recorded row leaves its batch.
        """
        rows = list(outcomes)
        if not rows:
            return
        # Without a bounce (whose suppression is written with it) and with each row once,
        # it is one statement on PostgreSQL (write_outcomes): no BEGIN and COMMIT round trips.
        single = _distinct_ids(rows) and all(o.status is not DeliveryStatus.BOUNCED for o in rows)
        with self._one_statement() if single else self.engine.begin() as connection:
            self.write_outcomes(connection, campaign_id, rows, owner=owner)

    def write_outcomes(
        self,
        connection: Connection,
        campaign_id: int,
        rows: list[RecordedOutcome],
        *,
        owner: str | None = None,
    ) -> None:
        """record_outcomes inside the caller's transaction (a batch taken over is settled
        in the same transaction as it is taken, store/batches.py)."""
        if not rows:
            return
        now = utcnow()
        fenced = owner is not None
        fence_params = {"b_owner": owner, "b_campaign": campaign_id} if fenced else {}
        if connection.dialect.name == "postgresql" and _distinct_ids(rows):
            connection.execute(
                _RECORD_ALL[fenced],
                {
                    **fence_params,
                    "b_now": now,
                    "o_rows": [
                        {
                            "id": o.delivery_id,
                            "status": o.status.value,
                            "attempts": o.attempts,
                            "code": o.code,
                            "reply": o.reply[:2000],
                            "message_id": o.message_id,
                            "next": None
                            if o.next_attempt_at is None
                            else o.next_attempt_at.isoformat(),
                            "relay": o.relay,
                        }
                        for o in rows
                    ],
                },
            )
        else:  # SQLite (no round trips to save), or an id twice: one row at a time, in order
            on_sqlite = connection.dialect.name == "sqlite"
            # On SQLite through the driver: SQLAlchemy's per-row parameter processing was
            # half the cost of a flush. Times are converted as SQLAlchemy would, `now` once.
            when = driver_values(connection, UtcDateTime) if on_sqlite else unchanged
            stamp = when(now)
            each = [
                {
                    **fence_params,
                    "b_now": stamp,
                    "b_id": o.delivery_id,
                    "b_status": o.status.value,
                    "b_attempts": o.attempts,
                    "b_code": o.code,
                    "b_reply": o.reply[:2000],
                    "b_message_id": o.message_id,
                    "b_next": when(o.next_attempt_at),
                    "b_sent_at": stamp if o.status is DeliveryStatus.SENT else None,
                    "b_relay": o.relay,
                }
                for o in rows
            ]
            if on_sqlite:
                executemany_in_driver(connection, _RECORD_EACH[fenced], each)
            else:
                connection.execute(_RECORD_EACH[fenced], each)
        for outcome in rows:
            if outcome.status is DeliveryStatus.BOUNCED:
                self._suppress_bounce(connection, outcome, campaign_id)

    def _suppress_bounce(
        self, connection: Connection, outcome: RecordedOutcome, campaign_id: int
    ) -> None:
        self.suppress(
            connection,
            subscriber_id=outcome.subscriber_id,
            reason=SuppressionReason.BOUNCED,
            source=UnsubscribeSource.BOUNCE,
            campaign_id=campaign_id,
            detail=f"{outcome.code} {outcome.reply}"[:500],
        )

    def in_flight(self, campaign_id: int) -> list[tuple[int, int, int]]:
        """Rows left `sending` in no batch (by a single sender under the campaign lease,
        that died): (delivery id, subscriber id, attempts). Rows in a sender's batch are
        settled with their batch (store/batches.py): they may be in flight right now."""
        with self._reading() as connection:
            return [
                (row.id, row.subscriber_id, row.attempts)
                for row in connection.execute(
                    select(
                        deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.attempts
                    ).where(
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.status == DeliveryStatus.SENDING.value,
                        _NO_BATCH,
                    )
                )
            ]

    def set_delivery_status(
        self,
        ids: Iterable[int],
        status: DeliveryStatus,
        *,
        only_from: DeliveryStatus | None = None,
        owner: str | None = None,
        campaign_id: int | None = None,
    ) -> None:
        """Move rows to `status` (only those in `only_from`; with `owner`, only while that
        sender still holds `campaign_id`'s lease)."""
        ids = list(ids)
        if not ids:
            return
        condition = [deliveries.c.status == only_from.value] if only_from is not None else []
        params: dict[str, object] = {}
        if owner is not None:
            condition.append(_HELD)
            params = {"b_owner": owner, "b_campaign": campaign_id}
        with self.engine.begin() as connection:
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids), *condition)
                # given back or settled: the row leaves its sender's batch
                .values(status=status.value, updated_at=utcnow(), batch_id=None),
                params,
            )

    def requeue_deferred(self, ids: Iterable[int]) -> None:
        """Deferred rows that never reached the relay on their last try: due again now."""
        ids = list(ids)
        if not ids:
            return
        now = utcnow()
        with self.engine.begin() as connection:
            connection.execute(
                update(deliveries)
                # only rows still deferred or left sending: never one that gave up (failed)
                # or one another sender has since taken or settled
                .where(
                    deliveries.c.id.in_(ids),
                    deliveries.c.status.in_(
                        [DeliveryStatus.DEFERRED.value, DeliveryStatus.SENDING.value]
                    ),
                )
                .values(
                    status=DeliveryStatus.DEFERRED.value,
                    next_attempt_at=now,
                    updated_at=now,
                    batch_id=None,
                )
            )

    def next_retry_at(self, campaign_id: int) -> datetime | None:
        with self._reading() as connection:
            value = connection.execute(
                select(func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == DeliveryStatus.DEFERRED.value,
                )
            ).scalar()
        return as_utc(value)

    def relay_counts(self, campaign_id: int) -> dict[str, dict[DeliveryStatus, int]]:
        """With MAILER_RELAYS (issue 15): each relay's rows by status; empty for a campaign
        sent through the single relay."""
        query = (
            select(deliveries.c.relay, deliveries.c.status, func.count())
            .where(deliveries.c.campaign_id == campaign_id, deliveries.c.relay.is_not(None))
            .group_by(deliveries.c.relay, deliveries.c.status)
            .order_by(deliveries.c.relay)
        )
        counts: dict[str, dict[DeliveryStatus, int]] = {}
        with self._reading() as connection:
            for relay, status, count in connection.execute(query):
                counts.setdefault(relay, {})[DeliveryStatus(status)] = int(count)
        return counts

    def iter_report(self, campaign_id: int) -> Iterator[ReportRow]:
        after = 0
        while True:
            with self._reading() as connection:
                rows = connection.execute(
                    select(deliveries)
                    .where(deliveries.c.campaign_id == campaign_id, deliveries.c.id > after)
                    .order_by(deliveries.c.id)
                    .limit(1000)
                ).all()
            if not rows:
                return
            for row in rows:
                yield ReportRow(
                    email=row.email,
                    status=DeliveryStatus(row.status),
                    attempts=row.attempts,
                    code=row.last_code,
                    reply=row.last_reply or "",
                    message_id=row.message_id,
                    sent_at=as_utc(row.sent_at),
                    updated_at=as_utc(row.updated_at),
                    later=LaterOutcome(row.feedback) if row.feedback else None,
                    relay=row.relay,
                )
            after = rows[-1].id
