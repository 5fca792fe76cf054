"""What the sending engine needs from storage, as protocols: the engine never imports `store`.

`Ledger` is all one campaign run touches while it sends; `CampaignLedger` adds what the
session around a run needs (claiming, crash recovery, release). `mailer.store.Store`
implements both; tests may hand the engine anything that does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from mailer.models import (
    CampaignRecord,
    CampaignStatus,
    DeliveryCounts,
    DeliveryStatus,
    DueDelivery,
    FollowUpAudience,
    RecordedOutcome,
)


class Claimed(Protocol):
    """Rows a sender claimed as one batch (mailer.store.batches.Claim)."""

    @property
    def batch(self) -> int: ...

    @property
    def rows(self) -> list[DueDelivery]: ...


class Holder(Protocol):
    """Another sender holding rows of a campaign (mailer.store.batches.BatchHolder)."""

    @property
    def owner(self) -> str: ...

    @property
    def expired(self) -> bool: ...


class Settled(Protocol):
    @property
    def applied(self) -> int: ...

    @property
    def unknown(self) -> int: ...

    @property
    def requeued(self) -> int: ...


class Ledger(Protocol):
    """One campaign's rows: take them in order, mark them, record what the relay said."""

    def claim_batch(
        self,
        campaign_id: int,
        *,
        owner: str,
        lease: timedelta,
        limit: int,
        include_unknown: bool = False,
        after: int = 0,
    ) -> Claimed | None:
        """The next due rows nobody holds with an id above `after`, as a new batch of
        `owner` (issue 15)."""
        ...

    def renew_batches(self, campaign_id: int, *, owner: str, lease: timedelta) -> int: ...

    def renew_sender(
        self, campaign_id: int, *, owner: str, lease: timedelta, holds_campaign: bool
    ) -> CampaignStatus | None:
        """The heartbeat: the campaign's lease (None if lost), our batches, the status."""
        ...

    def release_batches(self, campaign_id: int, *, owner: str) -> int:
        """Rows claimed and not taken go back to everyone; how many are still `sending`."""
        ...

    def fetch_due(
        self, campaign_id: int, *, after_id: int, limit: int, include_unknown: bool = False
    ) -> list[DueDelivery]: ...

    def begin_sending(
        self,
        campaign_id: int,
        list_id: int,
        ids: list[int],
        *,
        owner: str,
        batch: int | None = None,
    ) -> tuple[set[int], set[int]] | None:
        """(to send, skipped) among `ids`, now `sending` under `owner`'s batch (or, without
        one, its campaign lease); None if that is no longer `owner`'s."""
        ...

    def record_outcomes(
        self, campaign_id: int, outcomes: Iterable[RecordedOutcome], *, owner: str | None = None
    ) -> None: ...

    def set_delivery_status(
        self,
        ids: Iterable[int],
        status: DeliveryStatus,
        *,
        only_from: DeliveryStatus | None = None,
        owner: str | None = None,
        campaign_id: int | None = None,
    ) -> None: ...

    def requeue_deferred(self, ids: Iterable[int]) -> None:
        """Deferred rows that never reached the relay: due again now."""
        ...

    def delivery_counts(self, campaign_id: int) -> DeliveryCounts: ...

    def campaign_status(self, campaign_id: int) -> CampaignStatus: ...

    def next_retry_at(self, campaign_id: int) -> datetime | None: ...

    def renew_lease(
        self, campaign_id: int, *, owner: str, lease: timedelta
    ) -> CampaignStatus | None:
        """The campaign's status if `owner` still holds it (lease extended), else None."""
        ...


class RateBudget(Protocol):
    """What the store offers (mailer.store.rate_budget.RateBudgetQueries)."""

    def take_rate_slots(
        self,
        budget: str,
        *,
        now: float,
        count: int,
        interval: float,
        burst: int = ...,
        horizon: float = ...,
        per_hour: int | None = ...,
        per_day: int | None = ...,
    ) -> tuple[float, int, float, str | None]: ...

    def return_rate_slots(
        self, budget: str, *, minute: int, count: int, tat_end: float | None, interval: float
    ) -> None: ...


class CampaignLedger(Ledger, RateBudget, Protocol):
    """The session around a run: claim, settle a dead sender's rows, snapshot, release."""

    def get_campaign(self, campaign_id: int) -> CampaignRecord: ...

    def report_figures(self, campaign_id: int, status: CampaignStatus) -> object:
        """Computes the campaign's report figures and, once it is settled, keeps them."""
        ...

    def claim_campaign(
        self,
        campaign_id: int,
        *,
        owner: str,
        lease: timedelta,
        allowed: Iterable[CampaignStatus] = ...,
        take_over_from: str | None = None,
        early: bool = False,
        retry_paused: bool = False,
    ) -> bool: ...

    def release_campaign(
        self,
        campaign_id: int,
        *,
        owner: str,
        status: CampaignStatus | None,
        error: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None: ...

    def snapshot_audience(
        self,
        campaign_id: int,
        list_id: int,
        *,
        message_id_domain: str = ...,
        audience: FollowUpAudience | None = ...,
    ) -> int | None: ...

    def in_flight(self, campaign_id: int) -> list[tuple[int, int, int]]: ...

    def batch_holders(
        self, campaign_id: int, *, besides: str | None = None
    ) -> Sequence[Holder]: ...

    def take_over_batches(
        self,
        campaign_id: int,
        *,
        owner: str,
        dead: bool,
        journal_outcomes: Mapping[int, RecordedOutcome] | None,
        journal_started: Collection[int] = (),
    ) -> Settled: ...

    def record_message_fingerprint(self, campaign_id: int, fingerprint: str) -> None: ...

    def record_schedule_key(self, campaign_id: int, key: str) -> None: ...

    def earlier_schedule_keys(self, event_slug: str, campaign_id: int) -> list[str]: ...
