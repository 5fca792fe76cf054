"""After a crash: settle the rows a dead sender left `sending`, from its journal.

See mailer.sending.journal for what the journal proves about each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailer.models import DeliveryStatus
from mailer.sending.journal import Journal
from mailer.sending.ports import CampaignLedger


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    applied: int
    unknown: int
    requeued: int


def recover_in_flight(
    store: CampaignLedger, journal_file: Path | None, campaign_id: int
) -> RecoveryReport:
    """Settle rows a dead sender left `sending`, from its journal (see mailer.sending.journal).

    `journal_file` is the journal of the sender that held the campaign; None (or a file
    that is not on this machine) means nothing is known about its rows in flight.
    """
    left = store.in_flight(campaign_id)
    if not left:
        return RecoveryReport(0, 0, 0)
    state = Journal.read(journal_file) if journal_file is not None else None
    if state is None or not state.exists:  # assume the worst: the relay may have them all
        store.set_delivery_status([d for d, _, _ in left], DeliveryStatus.UNKNOWN)
        return RecoveryReport(0, len(left), 0)
    outcomes = [state.outcomes[d] for d, _, _ in left if d in state.outcomes]
    store.record_outcomes(campaign_id, outcomes)
    settled = {o.delivery_id for o in outcomes}
    unknown = [d for d, _, _ in left if d not in settled and d in state.started]
    requeue = [d for d, _, _ in left if d not in settled and d not in state.started]
    store.set_delivery_status(unknown, DeliveryStatus.UNKNOWN)
    # Rows that never reached DATA go back to where they were: queued, or deferred and
    # due now (attempts > 0).
    first_try = [d for d, _, attempts in left if d in requeue and attempts == 0]
    retry = [d for d, _, attempts in left if d in requeue and attempts > 0]
    store.set_delivery_status(first_try, DeliveryStatus.QUEUED)
    store.requeue_deferred(retry)
    return RecoveryReport(len(outcomes), len(unknown), len(requeue))
