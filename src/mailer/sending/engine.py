"""The campaign engine: ledger batches -> render/compose -> N connections -> rate -> record.

Shape (after listmonk's manager, without its delivery semantics): recipients are claimed
from the ledger in batches by id, re-checked and marked `sending` a few at a time just
before they go, rendered just in time by N workers that share one rate limiter and one
SMTP pool, and their outcomes are journalled at once and written to the ledger in
batches. Nothing is skipped on a crash (the cursor is the ledger itself) and nothing is
sent twice (see mailer.sending.journal).

Several senders may send one campaign (issue 15): each claims its own batches (a lease
per batch, see mailer.store.batches). The coordinator holds the campaign's lease and
decides how the campaign ends; helpers (`coordinator=False`) only send what they claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from mailer.delivery.base import Transport
from mailer.delivery.replies import CANNOT_CONNECT
from mailer.errors import MailerError, TransportError, one_line_reason
from mailer.logs import fields
from mailer.message.compose import InvitationBuilder
from mailer.models import (
    CampaignStatus,
    DeliveryCounts,
    DeliveryStatus,
    DueDelivery,
    Outcome,
    Recipient,
    RecordedOutcome,
)
from mailer.sending.chunks import ChunkSizer
from mailer.sending.journal import Journal
from mailer.sending.policy import CircuitBreaker, RetryPolicy
from mailer.sending.ports import Ledger
from mailer.sending.ratelimit import Limit, RateLimiter
from mailer.sending.shared_rate import RateCapped, SharedRateLimiter, Slot
from mailer.tokens import TokenSigner, rsvp_url, unsubscribe_url, verp_address

log = logging.getLogger("mailer.worker")

_CAPS = (Limit.HOURLY, Limit.DAILY)
_FLUSH_EVERY = 0.5  # seconds between ledger writes while sending
_FLUSH_SIZE = 500  # or sooner, once this many outcomes wait


class StopReason(StrEnum):
    FINISHED = "finished"  # every row is final
    WAITING = "waiting"  # deferred rows fall due beyond the retry horizon
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM: in-flight messages finished and recorded
    BREAKER = "breaker"  # most recent attempts failed: paused
    LEASE_LOST = "lease-lost"  # another worker took the campaign over
    HALTED = "halted"  # an organiser paused or cancelled it while it was sending
    CAPPED = "capped"  # the hourly or daily cap is reached for longer than the horizon
    RELAY_DOWN = "relay-down"  # no connection to the relay could be made: paused at once
    ERROR = "error"  # something unexpected failed (a full disk, a bug): paused, never hung


# When several causes arise in one run, the most serious is reported: an organiser who
# paused outranks a signal, a dead relay outranks both.
_PRECEDENCE = (
    StopReason.ERROR,
    StopReason.RELAY_DOWN,
    StopReason.BREAKER,
    StopReason.LEASE_LOST,
    StopReason.HALTED,
    StopReason.CAPPED,
    StopReason.INTERRUPTED,
)


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a run ended, with what the organiser needs to know about it."""

    reason: StopReason
    detail: str = ""
    """For BREAKER, RELAY_DOWN, ERROR: what failed, in one line."""
    until: datetime | None = None
    """For CAPPED: when the cap allows sending again."""
    limit: Limit | None = None
    """For CAPPED: which cap."""
    hint: str | None = None
    """For BREAKER from an error that says what to do (TransportError.hint): that."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    concurrency: int = 4
    ahead: int = 0
    """Messages built and waiting for a connection beyond `concurrency` (one task each):
    where the relay pipelines, a session that finishes a message finds the next one ready
    and sends its envelope right after the final dot (mailer.delivery.smtp). Never more
    than `concurrency` are with the relay."""
    batch_size: int = 500
    retry_horizon: float = 600.0
    resend_unknown: bool = False
    lease_seconds: float = 30.0
    bounce_address: str | None = None
    """MAILER_BOUNCE_ADDRESS: each message's envelope sender is then its VERP address,
    `LOCAL+TOKEN@DOMAIN`, naming its ledger row (mailer.tokens.verp_address)."""
    status_interval: float = 0.25
    """How often the campaign's status is read while sending: a pause or cancel takes
    effect within this (plus the messages already with the relay)."""
    coordinator: bool = True
    """Holds the campaign's lease: waits for the other senders, then ends the campaign.
    False: a helper (another process or machine) that sends what it claims, then stops."""
    shared_progress: bool = False
    """Progress counts every sender's outcomes (read from the store), not just ours."""
    mark_ahead: float = 0.1
    """Seconds of sending, at the rate rows are being taken, to re-check and mark `sending`
    in one statement (mailer.sending.chunks): at least `concurrency` rows, at most 8 times
    that. A marked row waits for at most its chunk and the queue's 2 x `concurrency` rows:
    0.2 s at 300 messages/s, 0.08 s at 2,000 (with 16 connections; was 0.16 and 0.024 s
    with chunks of `concurrency` rows)."""


@dataclass(slots=True)
class Progress:
    counts: DeliveryCounts
    started: float = field(default_factory=time.monotonic)
    sent_this_run: int = 0
    sent_before: int = 0
    """The campaign's rows already sent when the run began."""

    def count_everyone(self, counts: DeliveryCounts) -> None:
        """The campaign's counts from the store, which hold every sender's outcomes (the
        helpers', a worker's on another machine): "sent in this run" counts theirs too."""
        self.counts = counts
        self.sent_this_run = max(self.sent_this_run, counts.sent - self.sent_before)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent_this_run / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


class Dispatcher:
    """Sends one campaign (bound when built) until it is finished, waiting, or stopped.

    `run()` returns one `Stop` value: why the run ended and what to say about it. The first
    serious cause wins (see _PRECEDENCE); nothing outside reads the engine's internals.
    """

    def __init__(
        self,
        *,
        campaign_id: int,
        list_id: int,
        store: Ledger,
        transport: Transport,
        limiter: RateLimiter | SharedRateLimiter,
        builder: InvitationBuilder,
        signer: TokenSigner,
        base_url: str,
        journal: Journal,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        options: EngineOptions,
        owner: str,
        on_progress: ProgressCallback | None = None,
        stop_requested: asyncio.Event | None = None,
        reap: Callable[[], bool] | None = None,
    ) -> None:
        """`reap`: takes over the batches of senders that died or whose lease ran out
        (settling them from their journals); True while other senders still hold rows."""
        self.campaign_id = campaign_id
        self.list_id = list_id
        self.store = store
        self.transport = transport
        self.limiter = limiter
        self.builder = builder
        self.signer = signer
        self.base_url = base_url
        self.journal = journal
        self.retry = retry
        self.breaker = breaker
        self.options = options
        self.owner = owner
        self.on_progress = on_progress
        self._external_stop = stop_requested
        self._stop = asyncio.Event()
        self._cause: Stop | None = None
        self._pending: list[RecordedOutcome] = []
        self._flush_lock = asyncio.Lock()
        # Connections that could not be made, since the last reply from the relay: when
        # they reach `concurrency`, every connection has failed. `_unreached` holds the
        # rows they left deferred (due again at once if the send stops for it).
        self._unreachable_streak = 0
        self._unreached: list[int] = []
        # Rows whose body has started towards the relay in this run: never given back.
        self._at_relay: set[int] = set()
        # When the lease was last renewed (monotonic, taken before the renewal): nothing
        # goes to the relay once half the lease has passed without one (a suspended or
        # stalled process may have lost the campaign to another sender meanwhile).
        self._renewed_at = time.monotonic()
        self._lease_lost = False
        self._reap = reap
        self._claimed_in_pass = 0  # rows claimed by the current (or last) pass
        self._counts_read_at = 0.0
        least = max(1, options.concurrency)
        self._chunks = ChunkSizer(least=least, most=8 * least, window=options.mark_ahead)

    # -- stopping ----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking new recipients; messages already with the relay are finished."""
        self._halt(Stop(StopReason.INTERRUPTED))

    def _halt(self, cause: Stop) -> None:
        current = self._cause
        if current is None or _PRECEDENCE.index(cause.reason) < _PRECEDENCE.index(current.reason):
            self._cause = cause
        self._stop.set()

    def _halted(self) -> bool:
        return self._stop.is_set() or self.breaker.tripped

    def _final_cause(self) -> Stop | None:
        if self.breaker.tripped:
            self._halt(Stop(StopReason.BREAKER, self.breaker.explain()))
        return self._cause

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> tuple[Stop, Progress]:
        counts = await asyncio.to_thread(self.store.delivery_counts, self.campaign_id)
        progress = Progress(counts=counts, sent_before=counts.sent)
        helpers = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._watch_status()),
        ]
        if self._reap is not None:
            helpers.append(asyncio.create_task(self._reap_periodically()))
        if self._external_stop is not None:
            helpers.append(asyncio.create_task(self._watch_external_stop(self._external_stop)))
        try:
            stop = await self._passes(progress)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._flush(progress)
            if isinstance(self.limiter, SharedRateLimiter):
                with contextlib.suppress(Exception):  # the caps count them otherwise
                    await self.limiter.close()
        if stop.reason is StopReason.RELAY_DOWN and self._unreached and not self._lease_lost:
            # They never reached the relay: due again as soon as the campaign goes on.
            await asyncio.to_thread(self.store.requeue_deferred, self._unreached)
        # What we claimed and did not take goes back to the other senders; a row still
        # `sending` (its give-back failed) stays in our batch for our journal to settle.
        await asyncio.to_thread(self.store.release_batches, self.campaign_id, owner=self.owner)
        return stop, progress

    async def _watch_external_stop(self, event: asyncio.Event) -> None:
        await event.wait()
        self.request_stop()

    async def _passes(self, progress: Progress) -> Stop:
        while True:
            await self._one_pass(progress)
            if (cause := self._final_cause()) is not None:
                return cause
            await self._flush(progress)
            if not self.options.coordinator:
                return Stop(StopReason.FINISHED)  # a helper: nothing left to claim
            if self._reap is not None:
                if await asyncio.to_thread(self._reap):
                    # Other senders still hold rows: wait for them (or for their leases to
                    # run out), then take what they gave back.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.options.status_interval)
                    continue
                if self._claimed_in_pass:
                    # Nobody else holds rows now, but rows may have come back since this
                    # pass's last claim: a batch taken over (by that reap, which then
                    # finds nobody, or by the periodic one) or given back. Finish only
                    # after a pass that starts once nobody else holds rows and finds none.
                    continue
            next_retry = await asyncio.to_thread(self.store.next_retry_at, self.campaign_id)
            if next_retry is None:
                return Stop(StopReason.FINISHED)
            wait = (next_retry - datetime.now(UTC)).total_seconds()
            if wait > self.options.retry_horizon:
                return Stop(StopReason.WAITING)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)

    async def _one_pass(self, progress: Progress) -> None:
        """Every due row once, in id order; N workers drain a small queue fed just in time."""
        self._claimed_in_pass = 0
        queue: asyncio.Queue[DueDelivery | None] = asyncio.Queue(self.options.concurrency * 2)
        workers = [
            asyncio.create_task(self._worker(queue, progress))
            for _ in range(self.options.concurrency + self.options.ahead)
        ]
        flusher = asyncio.create_task(self._flush_periodically(progress))
        try:
            await self._feed(queue, progress)
        except Exception as exc:  # the database failed under the feeder: stop, do not hang
            self._fail(exc, "taking recipients")
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def _feed(self, queue: asyncio.Queue[DueDelivery | None], progress: Progress) -> None:
        # Re-check and mark only what the workers will take within moments: a subscriber
        # who unsubscribes now is skipped, and a crash leaves few rows `sending`.
        lease = timedelta(seconds=self.options.lease_seconds)
        # Each claim starts after the last, so it does not read again what this pass went
        # through (a claim from the start read every row already sent: O(campaign) a
        # claim). At the top it starts again from 0: rows below that were given back (a
        # sender stopped or was taken over) or came due meanwhile are taken then; the
        # pass ends only when a claim from 0 finds nothing.
        claimed_up_to = 0
        while not self._halted():
            claim = await asyncio.to_thread(
                self.store.claim_batch,
                self.campaign_id,
                owner=self.owner,
                lease=lease,
                limit=self.options.batch_size,
                include_unknown=self.options.resend_unknown,
                after=claimed_up_to,
            )
            if claim is None:
                if claimed_up_to == 0:
                    return
                claimed_up_to = 0
                continue
            batch = claim.rows
            self._claimed_in_pass += len(batch)
            if batch:
                claimed_up_to = batch[-1].id  # rows come in id order
            start = 0
            while start < len(batch):
                if self._halted():
                    return
                part = batch[start : start + self._chunks.next_size()]
                start += len(part)
                marked = await asyncio.to_thread(
                    functools.partial(
                        self.store.begin_sending,
                        self.campaign_id,
                        self.list_id,
                        [d.id for d in part],
                        owner=self.owner,
                        batch=claim.batch,
                    )
                )
                if marked is None:  # the lease is someone else's now: take nothing more
                    self._lease_lost = True
                    self._halt(Stop(StopReason.LEASE_LOST))
                    return
                to_send, skipped = marked
                for delivery in part:
                    if delivery.id in skipped:
                        _move(progress.counts, delivery.status, DeliveryStatus.SKIPPED)
                for delivery in part:
                    if delivery.id in to_send:
                        await queue.put(delivery)

    async def _worker(self, queue: asyncio.Queue[DueDelivery | None], progress: Progress) -> None:
        """Take rows off the queue until told to stop; never dies with rows left behind.

        An unexpected error (a journal that cannot be written, a lost database, a bug)
        pauses the campaign with the error as its reason: the row in hand is recorded if
        it was sent, given back if not, and the other workers drain the queue."""
        while (delivery := await queue.get()) is not None:
            self._chunks.taken()
            try:
                await self._process(delivery, progress)
            except Exception as exc:
                self._fail(exc, f"sending to row {delivery.id}")
                if any(o.delivery_id == delivery.id for o in self._pending):
                    continue  # its outcome is known and will be recorded: never undo it
                if delivery.id in self._at_relay:
                    # The body went (at least in part) and no reply came back: the relay
                    # may have it. Unknown, as after a crash; never queued again.
                    self._pending.append(_unknown_after_error(delivery, exc))
                    _move(progress.counts, delivery.status, DeliveryStatus.UNKNOWN)
                    continue
                with contextlib.suppress(Exception):  # left `sending`: recovery settles it
                    await self._give_back(delivery)

    async def _process(self, delivery: DueDelivery, progress: Progress) -> None:
        wait = self.limiter.next_wait()
        if wait.limit in _CAPS and wait.seconds > self.options.retry_horizon:
            # Hours until the cap allows more: stop rather than hold the lease asleep.
            until = datetime.now(UTC) + timedelta(seconds=wait.seconds)
            self._halt(Stop(StopReason.CAPPED, until=until, limit=wait.limit))
        turn = None if self._halted() else await self._wait_for_turn()
        if turn is None or not turn.go:
            self._unused(turn)
            await self._give_back(delivery)
            return
        sent = await self._send_one(delivery)
        if sent is None:  # held back: nothing reached the relay
            self._unused(turn)
            await self._give_back(delivery)
            return
        outcome, message_id = sent
        recorded = self.retry.settle(
            delivery, outcome, message_id=message_id, now=datetime.now(UTC)
        )
        # In the ledger's queue first: if the journal write below fails, the outcome is
        # still recorded (and _worker does not give the row back).
        self._pending.append(recorded)
        _move(progress.counts, delivery.status, recorded.status)
        if recorded.status is DeliveryStatus.SENT:
            progress.sent_this_run += 1
        self._watch_connections(delivery, outcome, recorded)
        self.breaker.record(outcome)
        self.journal.outcome(recorded)
        if len(self._pending) >= _FLUSH_SIZE:
            await self._flush(progress)

    def _watch_connections(
        self, delivery: DueDelivery, outcome: Outcome, recorded: RecordedOutcome
    ) -> None:
        """Stop within seconds when the relay cannot be reached at all, instead of
        deferring every recipient for the retry horizon."""
        if not is_unreachable(outcome):
            self._unreachable_streak = 0
            self._unreached.clear()
            return
        self._unreachable_streak += 1
        if recorded.status is DeliveryStatus.DEFERRED:  # not one that just gave up (failed)
            self._unreached.append(delivery.id)
        if self._unreachable_streak >= self.options.concurrency:
            self._halt(Stop(StopReason.RELAY_DOWN, outcome.reply))

    def _fail(self, exc: BaseException, doing: str) -> None:
        # One line: a database error's str() carries the whole statement and parameters.
        reason = f"{type(exc).__name__}: {one_line_reason(exc)}"
        log.error(fields(campaign=self.campaign_id, event="error", doing=doing, error=reason))
        self._halt(Stop(StopReason.ERROR, f"{doing}: {reason}"))

    async def _wait_for_turn(self) -> _Turn | None:
        """Wait for the rate limiter: the slot, and whether to go on with it (not if a stop
        came meanwhile); None if a stop came first (nothing is booked then).

        The wait can last minutes (a cap nearly reached, many workers queued), so it races
        the stop request; when a grant is free now, no race is set up at all."""
        try:
            if self.limiter.ready():
                slot = await self.limiter.take()
                return _Turn(slot, go=not self._halted())
            grant = asyncio.ensure_future(self.limiter.take())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({grant, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not grant.done():
                grant.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await grant
                return None
            slot = grant.result()
        except RateCapped as capped:  # the shared budget's cap: hours away
            until = datetime.now(UTC) + timedelta(seconds=capped.wait.seconds)
            self._halt(Stop(StopReason.CAPPED, until=until, limit=capped.wait.limit))
            return None
        return _Turn(slot, go=not self._halted())

    def _unused(self, turn: _Turn | None) -> None:
        """The rate slot of a message that did not go (a stop came, it was held back): the
        hourly and daily caps get it back (they counted it: a stop with messages waiting
        cost the day's cap one each)."""
        if turn is not None:
            self.limiter.give_back(turn.slot)

    async def _give_back(self, delivery: DueDelivery) -> None:
        """Taken off the queue but never sent: back to its previous state, untouched."""
        await asyncio.to_thread(
            self.store.set_delivery_status,
            [delivery.id],
            delivery.status,
            only_from=DeliveryStatus.SENDING,
            owner=self.owner,  # never undo a row a new lease holder has taken meanwhile
            campaign_id=self.campaign_id,
        )

    def _lease_stale(self) -> bool:
        return time.monotonic() - self._renewed_at > self.options.lease_seconds / 2

    def _body(self, delivery: DueDelivery) -> None:
        """Just before the body goes: the last moment to hold back (the lease) and the
        moment the relay may have it from (the journal)."""
        if self._lease_stale():
            raise _LeaseStale
        if self._halted():
            # Stopped (paused, cancelled, a signal, the relay) while this message waited
            # for a session: it has not reached the relay, so it goes back untouched.
            raise _HeldBack
        self.journal.body_started(delivery.id)
        self._at_relay.add(delivery.id)

    async def _send_one(self, delivery: DueDelivery) -> tuple[Outcome, str | None] | None:
        """Build and send one message: its outcome and Message-ID; None when it was held
        back (the lease may be gone) and nothing reached the relay."""
        token = self.signer.sign(
            subscriber_id=delivery.subscriber_id,
            list_id=self.list_id,
            campaign_id=self.campaign_id,
        )
        recipient = Recipient(
            subscriber_id=delivery.subscriber_id,
            email=delivery.email,
            name=delivery.name,
            attributes=delivery.attributes,
        )
        rsvp = None
        if self.builder.event.rsvp_enabled:  # issue 14: the guest's own answer page
            rsvp = rsvp_url(
                self.base_url,
                self.signer.sign_rsvp(
                    subscriber_id=delivery.subscriber_id, campaign_id=self.campaign_id
                ),
            )
        try:
            message = self.builder.build(
                recipient,
                unsubscribe_url=unsubscribe_url(self.base_url, token),
                message_id=delivery.message_id,
                rsvp_url=rsvp,
            )
        except MailerError as exc:
            return Outcome(DeliveryStatus.FAILED, None, f"could not build the message: {exc}"), None
        except Exception as exc:  # a template or data problem this recipient alone has
            reason = f"could not build the message: {type(exc).__name__}: {exc}"
            return Outcome(DeliveryStatus.FAILED, None, reason), None
        if self.options.bounce_address is not None:
            # Bounces then come back to an address that names this row and cannot be
            # forged, whatever the remote server's DSN says or leaves out.
            verp = verp_address(
                self.options.bounce_address, self.signer.sign_bounce(delivery_id=delivery.id)
            )
            message = replace(message, sender=verp)
        if self._lease_stale():
            self._halt(Stop(StopReason.LEASE_LOST))
            return None
        if self._halted():
            # Stopped while this one was built: no session for it (after a refused login,
            # each would be one more try of a wrong password).
            return None
        try:
            outcome = await self.transport.send(message, on_body=lambda: self._body(delivery))
        except _LeaseStale:
            self._halt(Stop(StopReason.LEASE_LOST))
            return None
        except _HeldBack:
            return None
        except RateCapped as capped:  # MAILER_RELAYS: every relay at its daily cap
            until = datetime.now(UTC) + timedelta(seconds=capped.wait.seconds)
            self._halt(Stop(StopReason.CAPPED, until=until, limit=capped.wait.limit))
            return None
        except TransportError as exc:
            # Bad credentials, TLS, a refused sender or size: no retry in this run will
            # fix it. Pause.
            self._halt(Stop(StopReason.BREAKER, str(exc), hint=exc.hint))
            if delivery.id in self._at_relay:  # no transport raises after the body today
                outcome = Outcome(DeliveryStatus.UNKNOWN, exc.code, str(exc))
            elif exc.judged_message:  # about this message (its size, its recipient)
                outcome = Outcome(DeliveryStatus.DEFERRED, exc.code, str(exc))
            else:
                # The session's problem: this message was never tried. Counting it an
                # attempt would, over a worker's automatic retries of a misconfigured
                # relay, give up on recipients that were never tried. Back untouched.
                return None
        else:
            if (
                outcome.status is DeliveryStatus.DEFERRED
                and delivery.id not in self._at_relay
                and self._halted()
            ):
                # Stopped meanwhile, and it never reached the relay: typically it waited
                # for a session, and the one opened for it after the stop failed. No
                # attempt counts (a relay error above that judged it still does).
                return None
        return outcome, message.message_id

    # -- recording ---------------------------------------------------------------------

    async def _flush(self, progress: Progress) -> None:
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(
                    self.store.record_outcomes, self.campaign_id, batch, owner=self.owner
                )
            except BaseException:
                self._pending[:0] = batch  # nothing was written: keep them for a retry
                raise
        await self._read_shared_counts(progress)
        if self.on_progress is not None:
            self.on_progress(progress)

    async def _read_shared_counts(self, progress: Progress) -> None:
        """With other senders, the counts (and the rate) are everyone's, from the store;
        read at most once a second, a grouped count over the campaign's rows."""
        if not self.options.shared_progress or time.monotonic() - self._counts_read_at < 1.0:
            return
        self._counts_read_at = time.monotonic()
        progress.count_everyone(
            await asyncio.to_thread(self.store.delivery_counts, self.campaign_id)
        )

    async def _flush_periodically(self, progress: Progress) -> None:
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            try:
                await self._flush(progress)
            except Exception as exc:  # kept in memory; the final flush tries again
                self._fail(exc, "recording outcomes")
                return
            if self.on_progress is not None:
                self.on_progress(progress)

    async def _heartbeat(self) -> None:
        """Renew the lease; stop sending long before it could expire unrenewed.

        A renewal that fails (database locked or unreachable) is retried; if none has
        succeeded for half the lease, the lease is treated as lost: another worker may take
        the campaign once it expires, and two senders must never overlap.
        """
        lease = timedelta(seconds=self.options.lease_seconds)
        last_renewed = time.monotonic()
        first = True
        while True:
            # The first renewal at once: claiming, marking and booking the rate before the
            # first message all take round trips, and on a loaded database they may use up
            # half a short lease before a renewal made after a full interval comes back.
            if not first:
                await asyncio.sleep(self.options.lease_seconds / 6)
            first = False
            asked_at = time.monotonic()
            try:
                status = await asyncio.to_thread(self._renew, lease)
            except Exception as exc:
                if time.monotonic() - last_renewed < self.options.lease_seconds / 2:
                    log.warning(
                        fields(campaign=self.campaign_id, event="renew-failed", error=str(exc))
                    )
                    continue
                status = None
            if status is None:
                self._lease_lost = True
                self._halt(Stop(StopReason.LEASE_LOST))
                return
            last_renewed = self._renewed_at = asked_at
            if status is not CampaignStatus.SENDING:
                # Paused or cancelled: stop taking recipients, but keep the lease renewed
                # until the messages in flight are recorded (run() cancels this task), so
                # nobody can take the campaign over while this sender still drains.
                self._halt(Stop(StopReason.HALTED))

    def _renew(self, lease: timedelta) -> CampaignStatus | None:
        """The coordinator renews the campaign's lease and its batches; a helper only its
        batches (losing one shows when its rows can no longer be taken or recorded)."""
        return self.store.renew_sender(
            self.campaign_id,
            owner=self.owner,
            lease=lease,
            holds_campaign=self.options.coordinator,
        )

    async def _reap_periodically(self) -> None:
        """Take over the batches of dead senders soon, not only when our claims run dry:
        at once for a dead process of this machine, after its lease for another's."""
        while True:
            await asyncio.sleep(self.options.status_interval * 4)
            try:
                if self._reap is not None:
                    await asyncio.to_thread(self._reap)
            except Exception as exc:  # the heartbeat decides about a lost database
                log.debug(fields(campaign=self.campaign_id, event="reap-failed", error=str(exc)))

    async def _watch_status(self) -> None:
        """Read the campaign's status a few times a second: a pause or cancel stops the
        taking of rows at once (the lease heartbeat is far too slow for that)."""
        while True:
            await asyncio.sleep(self.options.status_interval)
            try:
                status = await asyncio.to_thread(self.store.campaign_status, self.campaign_id)
            except Exception as exc:  # the heartbeat decides about a lost database
                log.debug(fields(campaign=self.campaign_id, event="status-failed", error=str(exc)))
                continue
            if status is not CampaignStatus.SENDING:
                self._halt(Stop(StopReason.HALTED))
                return


@dataclass(frozen=True, slots=True)
class _Turn:
    slot: Slot | None
    go: bool


class _LeaseStale(Exception):
    """Raised from the body callback: the lease was not renewed for half its length."""


class _HeldBack(Exception):
    """Raised from the body callback: the run was stopped before this body went."""


def _unknown_after_error(delivery: DueDelivery, exc: Exception) -> RecordedOutcome:
    return RecordedOutcome(
        delivery_id=delivery.id,
        subscriber_id=delivery.subscriber_id,
        status=DeliveryStatus.UNKNOWN,
        attempts=delivery.attempts + 1,
        reply=f"error after the body reached the relay: {type(exc).__name__}: {exc}"[:2000],
        message_id=delivery.message_id,
    )


def is_unreachable(outcome: Outcome) -> bool:
    """A deferral because no connection to the relay could be made (refused, no route,
    no greeting): the relay never saw the message. See mailer.delivery.smtp."""
    return (
        outcome.status is DeliveryStatus.DEFERRED
        and outcome.code is None
        and outcome.reply.startswith(CANNOT_CONNECT)
    )


def _move(counts: DeliveryCounts, before: DeliveryStatus, after: DeliveryStatus) -> None:
    setattr(counts, before.value, getattr(counts, before.value) - 1)
    setattr(counts, after.value, getattr(counts, after.value) + 1)
