"""What the dashboard's overview and report pages read, without scanning a large ledger
at every page view.

- A campaign's report figures (outcomes, later bounces and complaints, per receiving
  domain, deliveries / unsubscribes / bounces over time) are computed by grouping its
  ledger rows: about a second for 1,000,000 rows. Once the campaign is finished or
  cancelled they are kept in `campaign_reports` with a fingerprint of what can still
  change them (status, later feedback, unsubscribes through its links: each found by an
  index), and recomputed only when the fingerprint moves.
- List member counts are index-only counts on memberships(list_id, status).
- Failed and deferred recipients are read by the (campaign_id, status, id) index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    ForeignKey,
    Select,
    String,
    Table,
    Text,
    func,
    select,
)

from mailer.clock import as_utc, utcnow
from mailer.models import (
    CampaignStatus,
    DeliveryStatus,
    LaterOutcome,
    SubscriberStatus,
    SuppressionReason,
)
from mailer.store.base import StoreBase
from mailer.store.schema import (
    Id,
    UtcDateTime,
    deliveries,
    feedback_events,
    lists,
    memberships,
    metadata,
    suppressions,
)

# Created by migration 0010. Kept beside its queries: nothing else reads it.
campaign_reports = Table(
    "campaign_reports",
    metadata,
    Column(
        "campaign_id",
        Id,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fingerprint", String(200), nullable=False),
    Column("built_at", UtcDateTime, nullable=False),
    Column("body", Text, nullable=False),
)

SETTLED = frozenset({CampaignStatus.FINISHED, CampaignStatus.CANCELLED})
"""Statuses whose ledger no longer changes (only later feedback and unsubscribes do)."""

MAX_DOMAINS = 25


@dataclass(frozen=True, slots=True)
class DomainFigures:
    domain: str
    total: int
    sent: int
    deferred: int
    bounced: int
    failed: int
    later_bounced: int
    complained: int

    @property
    def other(self) -> int:
        return self.total - self.sent - self.deferred - self.bounced - self.failed


@dataclass(frozen=True, slots=True)
class ReportFigures:
    """A campaign's report, as computed from its ledger (and kept once it is settled)."""

    outcomes: dict[str, int]
    """DeliveryStatus value -> rows."""
    later: dict[str, int]
    """LaterOutcome value -> sent rows that bounced or complained afterwards."""
    unsubscribed: int
    """People who left through this campaign's links."""
    domains: list[DomainFigures]
    """The largest receiving domains, largest first; the rest summed as `(other)`."""
    sent_per_minute: list[tuple[str, int]]
    """('YYYY-MM-DD HH:MM' UTC, messages the relay accepted in that minute)."""
    unsubscribes_per_hour: list[tuple[str, int]]
    """('YYYY-MM-DD HH' UTC, unsubscribes through its links in that hour)."""
    bounces_per_hour: list[tuple[str, int]]
    """('YYYY-MM-DD HH' UTC, bounces and complaints that came back in that hour)."""
    built_at: datetime = field(default_factory=utcnow)
    cached: bool = False

    def to_json(self) -> str:
        body = asdict(self)
        body.pop("cached")
        body["built_at"] = self.built_at.isoformat()
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReportFigures:
        body = json.loads(text)
        return cls(
            outcomes=body["outcomes"],
            later=body["later"],
            unsubscribed=body["unsubscribed"],
            domains=[DomainFigures(**d) for d in body["domains"]],
            sent_per_minute=[(str(k), int(v)) for k, v in body["sent_per_minute"]],
            unsubscribes_per_hour=[(str(k), int(v)) for k, v in body["unsubscribes_per_hour"]],
            bounces_per_hour=[(str(k), int(v)) for k, v in body["bounces_per_hour"]],
            built_at=datetime.fromisoformat(body["built_at"]),
            cached=True,
        )


@dataclass(frozen=True, slots=True)
class ListCount:
    id: int
    name: str
    title: str | None
    subscribed: int
    unsubscribed: int


@dataclass(frozen=True, slots=True)
class ProblemRow:
    email: str
    status: DeliveryStatus
    attempts: int
    code: int | None
    reply: str
    updated_at: datetime | None
    next_attempt_at: datetime | None
    later: LaterOutcome | None


def _minute(connection: Connection, column: ColumnElement[datetime]) -> ColumnElement[str]:
    if connection.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:MI")
    return func.substr(column, 1, 16)  # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)


def _hour(connection: Connection, column: ColumnElement[datetime]) -> ColumnElement[str]:
    if connection.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.substr(column, 1, 13)


def _domain(connection: Connection) -> ColumnElement[str]:
    email = deliveries.c.email
    if connection.dialect.name == "postgresql":
        return func.lower(func.split_part(email, "@", 2))
    return func.lower(func.substr(email, func.instr(email, "@") + 1))


class DashboardQueries(StoreBase):
    # -- lists --------------------------------------------------------------------------

    def list_counts(self) -> list[ListCount]:
        """Every live list with its members subscribed and unsubscribed (memberships only:
        an index-only count, not the per-person checks a send makes)."""
        with self._reading() as connection:
            names = connection.execute(
                select(lists.c.id, lists.c.name, lists.c.title)
                .where(lists.c.deleted_at.is_(None))
                .order_by(lists.c.name)
            ).all()
            counted = connection.execute(
                select(memberships.c.list_id, memberships.c.status, func.count()).group_by(
                    memberships.c.list_id, memberships.c.status
                )
            ).all()
        by_list: dict[int, dict[str, int]] = {}
        for list_id, status, count in counted:
            by_list.setdefault(int(list_id), {})[str(status)] = int(count)
        subscribed = SubscriberStatus.SUBSCRIBED.value
        return [
            ListCount(
                id=int(row.id),
                name=row.name,
                title=row.title,
                subscribed=by_list.get(int(row.id), {}).get(subscribed, 0),
                unsubscribed=sum(
                    n for s, n in by_list.get(int(row.id), {}).items() if s != subscribed
                ),
            )
            for row in names
        ]

    # -- a campaign's report ------------------------------------------------------------

    def report_figures(self, campaign_id: int, status: CampaignStatus) -> ReportFigures:
        """The campaign's report figures: kept ones when it is settled and nothing that
        changes them arrived since, else computed (and kept, if settled)."""
        with self._reading() as connection:
            fingerprint = _fingerprint(connection, campaign_id, status)
            if status in SETTLED:
                kept = connection.execute(
                    select(campaign_reports.c.fingerprint, campaign_reports.c.body).where(
                        campaign_reports.c.campaign_id == campaign_id
                    )
                ).first()
                if kept is not None and kept.fingerprint == fingerprint:
                    return ReportFigures.from_json(kept.body)
            figures = _compute(connection, campaign_id)
        if status in SETTLED:
            # An upsert: the sender keeps them as the campaign finishes (sending.run.
            # keep_report), just when an organiser may open the report; two writers with a
            # delete-then-insert both inserted, and the second failed on the key.
            values = {
                "campaign_id": campaign_id,
                "fingerprint": fingerprint,
                "built_at": figures.built_at,
                "body": figures.to_json(),
            }
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    from sqlalchemy.dialects import postgresql

                    upsert: Any = postgresql.insert(campaign_reports).values(**values)
                else:
                    from sqlalchemy.dialects import sqlite

                    upsert = sqlite.insert(campaign_reports).values(**values)
                connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[campaign_reports.c.campaign_id],
                        set_={k: v for k, v in values.items() if k != "campaign_id"},
                    )
                )
        return figures

    def problem_rows(self, campaign_id: int, *, limit: int = 200) -> list[ProblemRow]:
        """Recipients not (yet) delivered: bounced, failed, unknown, deferred; then sent
        ones that bounced or complained later. At most `limit`, by the status index."""
        wanted = [
            DeliveryStatus.BOUNCED,
            DeliveryStatus.FAILED,
            DeliveryStatus.UNKNOWN,
            DeliveryStatus.DEFERRED,
        ]
        found: list[ProblemRow] = []
        with self._reading() as connection:
            for status in wanted:
                if len(found) >= limit:
                    break
                rows = connection.execute(
                    select(deliveries)
                    .where(
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.status == status.value,
                    )
                    .order_by(deliveries.c.id)
                    .limit(limit - len(found))
                ).all()
                found.extend(_problem(row) for row in rows)
            if len(found) < limit:
                rows = connection.execute(
                    select(deliveries)
                    .where(
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.feedback.is_not(None),
                    )
                    .order_by(deliveries.c.id)
                    .limit(limit - len(found))
                ).all()
                found.extend(_problem(row) for row in rows)
        return found


def _problem(row: object) -> ProblemRow:
    later = row.feedback  # type: ignore[attr-defined]
    return ProblemRow(
        email=row.email,  # type: ignore[attr-defined]
        status=DeliveryStatus(row.status),  # type: ignore[attr-defined]
        attempts=int(row.attempts),  # type: ignore[attr-defined]
        code=row.last_code,  # type: ignore[attr-defined]
        reply=row.last_reply or "",  # type: ignore[attr-defined]
        updated_at=as_utc(row.updated_at),  # type: ignore[attr-defined]
        next_attempt_at=as_utc(row.next_attempt_at),  # type: ignore[attr-defined]
        later=LaterOutcome(later) if later else None,
    )


def _fingerprint(connection: Connection, campaign_id: int, status: CampaignStatus) -> str:
    """What would change a settled campaign's figures: its status, feedback recorded for
    it, unsubscribes through its links (each an indexed lookup, never a ledger scan)."""
    feedback = connection.execute(
        select(func.count(), func.max(feedback_events.c.id)).where(
            feedback_events.c.campaign_id == campaign_id
        )
    ).one()
    left = connection.execute(
        select(func.count(), func.max(suppressions.c.id)).where(
            suppressions.c.campaign_id == campaign_id
        )
    ).one()
    return f"v1:{status.value}:f{feedback[0]}.{feedback[1]}:u{left[0]}.{left[1]}"


def _compute(connection: Connection, campaign_id: int) -> ReportFigures:
    mine = deliveries.c.campaign_id == campaign_id
    outcomes = {s.value: 0 for s in DeliveryStatus}
    for status, count in connection.execute(
        select(deliveries.c.status, func.count()).where(mine).group_by(deliveries.c.status)
    ):
        outcomes[str(status)] = int(count)
    later = {o.value: 0 for o in LaterOutcome}
    for outcome, count in connection.execute(
        select(deliveries.c.feedback, func.count())
        .where(mine, deliveries.c.feedback.is_not(None))
        .group_by(deliveries.c.feedback)
    ):
        later[str(outcome)] = int(count)
    unsubscribed = int(
        connection.execute(
            select(func.count(func.distinct(suppressions.c.email_key))).where(
                suppressions.c.campaign_id == campaign_id,
                suppressions.c.reason == SuppressionReason.UNSUBSCRIBED.value,
            )
        ).scalar_one()
    )
    return ReportFigures(
        outcomes=outcomes,
        later=later,
        unsubscribed=unsubscribed,
        domains=_domains(connection, campaign_id),
        sent_per_minute=_series(
            connection,
            select(_minute(connection, deliveries.c.sent_at), func.count()).where(
                mine,
                deliveries.c.status == DeliveryStatus.SENT.value,
                deliveries.c.sent_at.is_not(None),
            ),
        ),
        unsubscribes_per_hour=_series(
            connection,
            select(_hour(connection, suppressions.c.created_at), func.count()).where(
                suppressions.c.campaign_id == campaign_id,
                suppressions.c.reason == SuppressionReason.UNSUBSCRIBED.value,
            ),
        ),
        bounces_per_hour=_series(
            connection,
            select(_hour(connection, deliveries.c.feedback_at), func.count()).where(
                mine, deliveries.c.feedback_at.is_not(None)
            ),
        ),
    )


def _series(connection: Connection, query: Select[str, int]) -> list[tuple[str, int]]:
    bucket = query.selected_columns[0]
    rows = connection.execute(query.group_by(bucket).order_by(bucket)).all()
    return [(str(key), int(count)) for key, count in rows if key is not None]


def _domains(connection: Connection, campaign_id: int) -> list[DomainFigures]:
    domain = _domain(connection).label("domain")
    status = deliveries.c.status
    rows = connection.execute(
        select(domain, status, deliveries.c.feedback, func.count())
        .where(deliveries.c.campaign_id == campaign_id)
        .group_by(domain, status, deliveries.c.feedback)
    ).all()
    table: dict[str, dict[str, int]] = {}
    for name, row_status, feedback, count in rows:
        cell = table.setdefault(str(name or "?"), {})
        cell["total"] = cell.get("total", 0) + int(count)
        cell[str(row_status)] = cell.get(str(row_status), 0) + int(count)
        if feedback:
            cell[f"later:{feedback}"] = cell.get(f"later:{feedback}", 0) + int(count)
    ranked = sorted(table.items(), key=lambda item: (-item[1]["total"], item[0]))
    shown, rest = ranked[:MAX_DOMAINS], ranked[MAX_DOMAINS:]
    if rest:
        merged: dict[str, int] = {}
        for _name, cell in rest:
            for key, value in cell.items():
                merged[key] = merged.get(key, 0) + value
        shown.append((f"(other {len(rest)} domains)", merged))
    return [
        DomainFigures(
            domain=name,
            total=cell.get("total", 0),
            sent=cell.get(DeliveryStatus.SENT.value, 0),
            deferred=cell.get(DeliveryStatus.DEFERRED.value, 0),
            bounced=cell.get(DeliveryStatus.BOUNCED.value, 0),
            failed=cell.get(DeliveryStatus.FAILED.value, 0),
            later_bounced=cell.get(f"later:{LaterOutcome.BOUNCED.value}", 0),
            complained=cell.get(f"later:{LaterOutcome.COMPLAINED.value}", 0),
        )
        for name, cell in shown
    ]
