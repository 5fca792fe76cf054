"""After a crash: settle the rows a dead sender left `sending`, from its journal.

See mailer.sending.journal for what the journal proves about each row. With several
senders on a campaign (issue 15), each sender's rows are in its batches, and a dead
sender's batches are taken over and settled together (reap_batches).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
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


def is_dead_local_process(owner: str) -> bool:
    """`owner` (host:pid, see run.worker_identity) is a process of this machine that is
    gone (kill -9): its leases need not run out before others take over."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its lease expiry can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _exited(int(pid))


def _exited(pid: int) -> bool:
    """A process that has ended but that its parent has not collected yet (a zombie):
    kill(pid, 0) still finds it. A helper of `mailer send --processes N` killed with
    kill -9 stays one while the sender that started it runs, so its batches waited for
    their lease (30 s) instead of being taken over at once. Linux's /proc says so; where
    there is none, the lease decides, as for another machine's sender."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold ")"
    return bool(fields) and fields[0] in {"Z", "X"}


def reap_batches(
    store: CampaignLedger,
    campaign_id: int,
    *,
    me: str,
    journal_of: Callable[[str], Path],
) -> bool:
    """Take over the batches of senders that died (this machine) or whose leases ran out,
    settling their rows from their journals when the journal is here (issue 15). True
    while other senders still hold rows of the campaign."""
    return _reap(store, campaign_id, me=me, journal_of=journal_of)[0]


def recover_batches(
    store: CampaignLedger,
    campaign_id: int,
    *,
    me: str,
    journal_of: Callable[[str], Path],
) -> RecoveryReport:
    """reap_batches, before a run: what was settled, for the organiser."""
    return _reap(store, campaign_id, me=me, journal_of=journal_of)[1]


def _reap(
    store: CampaignLedger,
    campaign_id: int,
    *,
    me: str,
    journal_of: Callable[[str], Path],
) -> tuple[bool, RecoveryReport]:
    busy = False
    applied = unknown = requeued = 0
    for holder in store.batch_holders(campaign_id, besides=me):
        dead = is_dead_local_process(holder.owner)
        if not dead and not holder.expired:
            busy = True
            continue
        report = settle_batches_of(
            store, campaign_id, holder.owner, journal_of(holder.owner), dead=dead
        )
        applied, unknown = applied + report.applied, unknown + report.unknown
        requeued += report.requeued
    return busy, RecoveryReport(applied, unknown, requeued)


def settle_batches_of(
    store: CampaignLedger, campaign_id: int, owner: str, journal_file: Path, *, dead: bool
) -> RecoveryReport:
    """`owner`'s batches (all when `dead`, else those whose lease ran out), settled from
    its journal if that is on this machine, else every row in flight unknown."""
    state = Journal.read(journal_file)
    settled = store.take_over_batches(
        campaign_id,
        owner=owner,
        dead=dead,
        journal_outcomes=state.outcomes if state.exists else None,
        journal_started=state.started,
    )
    if dead and state.exists:
        journal_file.unlink(missing_ok=True)  # the ledger now holds all it knew
    return RecoveryReport(settled.applied, settled.unknown, settled.requeued)
