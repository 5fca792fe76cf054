"""Running a campaign from settings: claim it, settle a crash, snapshot, send, release.

Used by `mailer send`, `mailer campaign resume`, `mailer demo` and the scheduler, so the
sequence is written once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import CampaignError, ConfigError, one_line_reason
from mailer.logs import fields
from mailer.message.calendar import revision, schedule_key, update_key
from mailer.message.compose import InvitationBuilder
from mailer.message.event import Event, load_event
from mailer.message.lint import ensure_templates
from mailer.models import (
    CampaignRecord,
    CampaignStatus,
    DeliveryCounts,
    FollowUpAudience,
    MessageKind,
)
from mailer.preflight import check_real_send
from mailer.sending.engine import (
    Dispatcher,
    EngineOptions,
    Progress,
    ProgressCallback,
    Stop,
    StopReason,
)
from mailer.sending.journal import Journal, journal_path
from mailer.sending.policy import CircuitBreaker, RetryPolicy
from mailer.sending.ports import CampaignLedger, RateBudget
from mailer.sending.ratelimit import RateLimiter
from mailer.sending.recovery import (
    RecoveryReport,
    is_dead_local_process,
    reap_batches,
    recover_batches,
    recover_in_flight,
    settle_batches_of,
)
from mailer.sending.shared_rate import SharedRateLimiter
from mailer.tokens import TokenSigner, calendar_url

log = logging.getLogger("mailer.worker")


def worker_identity() -> str:
    """Who holds a lease: host and pid, so `campaign show` can say who is sending."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(
    store: CampaignLedger,
    campaign_id: int,
    owner: str,
    lease: timedelta,
    allowed: tuple[CampaignStatus, ...],
    *,
    early: bool = False,
    retry_paused: bool = False,
) -> bool:
    """Claim the campaign; a lease held by a process of this host that has died (kill -9)
    is taken over at once instead of waiting for it to expire."""
    if store.claim_campaign(
        campaign_id,
        owner=owner,
        lease=lease,
        allowed=allowed,
        early=early,
        retry_paused=retry_paused,
    ):
        return True
    holder = store.get_campaign(campaign_id).lease_owner
    if holder and is_dead_local_process(holder):
        return store.claim_campaign(
            campaign_id,
            owner=owner,
            lease=lease,
            allowed=allowed,
            take_over_from=holder,
            early=early,
            retry_paused=retry_paused,
        )
    return False


@dataclass(frozen=True, slots=True)
class RunResult:
    campaign: CampaignRecord
    stop: Stop
    counts: DeliveryCounts
    progress: Progress
    recovery: RecoveryReport
    message: str

    @property
    def reason(self) -> StopReason:
        return self.stop.reason


def cooldown(settings: Settings, pauses_in_a_row: int) -> timedelta:
    """How long a campaign the relay paused rests before a worker tries it again:
    MAILER_BREAKER_COOLDOWN, doubling with each relay pause in a row, capped."""
    seconds = settings.breaker_cooldown * 2 ** min(pauses_in_a_row, 30)
    return timedelta(seconds=min(seconds, settings.breaker_cooldown_max))


def relay_retry(settings: Settings, reason: StopReason, relay_pauses: int) -> timedelta | None:
    """How long a campaign paused by this stop rests before a worker tries it again by
    itself: the cool-down for the relay's own stops (down, or its breaker tripped), for
    the coordinator and a helper alike; None for any other (an error needs a person).
    `relay_pauses`: the campaign's relay pauses in a row before this one."""
    if reason not in (StopReason.BREAKER, StopReason.RELAY_DOWN):
        return None
    return cooldown(settings, relay_pauses)


def retry_note(retry_after: timedelta) -> str:
    """The sentence a relay pause's note ends with."""
    return f"A running `mailer worker` tries again in {retry_after.total_seconds():.0f} s."


def journal_error(path: Path, exc: OSError) -> ConfigError:
    """A journal folder that cannot be used (a file in its place, no permission, a full
    disk) is one clear error naming the setting; nothing is sent without a journal."""
    return ConfigError(
        f"cannot use the send journal {path}: {exc.strerror or exc}",
        setting="MAILER_VAR_DIR",
        hint=f"mailer keeps crash-safety journals under {path.parent}; make it a writable "
        "folder, or set MAILER_VAR_DIR to one.",
    )


def invitation_builder(
    settings: Settings,
    event: Event,
    *,
    campaign_id: int,
    list_name: str,
    list_title: str | None = None,
    sequence: int = 0,
    signer: TokenSigner | None = None,
) -> InvitationBuilder:
    """The campaign's compiled templates, with the sender from the settings. A template
    problem is raised where it was written (compiling alone would blame the layout).

    `signer`: for a real campaign, the short `BASE/c/TOKEN.ics` link to its calendar file
    (the text part offers it instead of a long Google URL); `sequence`: see
    `calendar_sequence`."""
    ensure_templates(event, templates_dir=settings.templates_dir)
    ics_url = None
    if signer is not None and campaign_id:
        ics_url = calendar_url(settings.base_url, signer.sign_calendar(campaign_id=campaign_id))
    return InvitationBuilder(
        event,
        sender=settings.sender_identity,
        campaign_id=campaign_id,
        list_name=list_name,
        list_title=list_title,
        templates_dir=settings.templates_dir,
        sequence=sequence,
        ics_url=ics_url,
    )


# What every message of a campaign is made from, each part digested on its own (12 hex
# digits, after a tag saying so: 63 characters, within the column's 64), so that a sender
# that disagrees can say which part differs; and what an organiser then checks.
_FINGERPRINT_TAG = "p1:"
_PART_DIGITS = 12
_PARTS = (
    "the event file ({event_path})",
    "the layout's templates",
    "the sender's settings (MAILER_FROM_ADDRESS, MAILER_FROM_NAME, MAILER_REPLY_TO, "
    "MAILER_UNSUBSCRIBE_MAILTO, MAILER_POSTAL_ADDRESS, MAILER_FEEDBACK_ID_SENDER)",
    "MAILER_BASE_URL",
    "MAILER_BOUNCE_ADDRESS",
)


def _message_parts(settings: Settings, builder: InvitationBuilder) -> list[str]:
    sender = dataclasses.asdict(settings.sender_identity)
    return [
        builder.event.model_dump_json(exclude={"path"}),
        "\0".join(builder.renderer.layout_sources),
        repr(sorted(sender.items())),
        settings.base_url,
        settings.bounce_address or "",
    ]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def message_fingerprint(settings: Settings, builder: InvitationBuilder) -> str:
    """A digest of what every message of the campaign is made from: the event as loaded
    (its place on disk aside), its layout's files, and the settings that go into each
    message. Senders of one campaign must agree on it (issue 15): a helper whose event
    file was edited since the run started, or a machine with another MAILER_FROM or base
    URL, would mail part of the list something the organiser never confirmed."""
    digests = (_digest(part)[:_PART_DIGITS] for part in _message_parts(settings, builder))
    return _FINGERPRINT_TAG + "".join(digests)


def refuse_changed_messages(
    campaign: CampaignRecord, settings: Settings, builder: InvitationBuilder
) -> None:
    """CampaignError when this sender's messages (see message_fingerprint) would not be
    the ones the campaign started with: an event file edited since, another layout, or a
    machine with another sender, base URL or bounce address would mail part of the list
    something the organiser never confirmed. A helper then sends nothing (the others go
    on); a worker taking over pauses the campaign with this reason. The error names the
    parts that differ (a trial's helper only said that something did)."""
    recorded = campaign.message_fingerprint
    if recorded is None:
        return
    parts = _message_parts(settings, builder)
    if recorded.startswith(_FINGERPRINT_TAG):
        mine = message_fingerprint(settings, builder)
        if recorded == mine:
            return
        size, tag = _PART_DIGITS, len(_FINGERPRINT_TAG)
        differ = [
            what.format(event_path=campaign.event_path)
            for i, what in enumerate(_PARTS)
            if recorded[tag + i * size : tag + (i + 1) * size]
            != mine[tag + i * size : tag + (i + 1) * size]
        ]
    else:  # recorded before the digest named its parts: one digest of all of them
        legacy = [parts[0], *builder.renderer.layout_sources, *parts[2:]]
        if recorded == _digest("\0".join(legacy)):
            return
        differ = []
    what = " and ".join(differ) if differ else "its event file, layout or settings"
    raise CampaignError(
        f"campaign {campaign.id}: this sender's messages would differ from the campaign's "
        f"(it started with other messages: {what} changed since, or differ on this "
        "machine); this sender sends nothing",
        campaign_id=campaign.id,
        hint=f"Check {campaign.event_path} (edited since?) and that MAILER_FROM_ADDRESS, "
        "MAILER_FROM_NAME, MAILER_BASE_URL, MAILER_BOUNCE_ADDRESS and the templates are the "
        f"same on every machine sending it; `mailer campaign resume {campaign.id}` sends "
        "the rest with the file and settings as they are now.",
    )


def calendar_sequence(
    store: CampaignLedger, campaign: CampaignRecord, event: Event, *, record: bool = True
) -> int:
    """The invite's SEQUENCE: how many times the event's time, place or join link changed
    across the campaigns of this event that reached anyone, this one last. Records this
    campaign's key, so the next campaign counts it (a resend of the same facts keeps the
    number; a corrected time raises it, and calendars update their entry). An update
    (`--message update`) always raises it (calendar.update_key).

    `record=False` (a helper): reads the key the coordinator recorded and writes nothing;
    a helper whose event file was edited is refused (refuse_changed_messages) and
    must not have replaced the campaign's key with its own first."""
    key = schedule_key(event)
    if campaign.message is MessageKind.UPDATE:
        key = update_key(key, campaign.id)
    if record:
        store.record_schedule_key(campaign.id, key)
    elif campaign.schedule_key is not None:
        key = campaign.schedule_key
    return revision([*store.earlier_schedule_keys(campaign.event_slug, campaign.id), key])


def follow_up_audience(campaign: CampaignRecord) -> FollowUpAudience | None:
    """Whom of its list a follow-up campaign takes; None for a plain invitation."""
    if campaign.message is MessageKind.INVITATION and campaign.audience_filter is None:
        return None
    return FollowUpAudience(campaign.event_slug, campaign.message, campaign.audience_filter)


def make_limiter(settings: Settings, store: RateBudget) -> SharedRateLimiter:
    """The relay's limits, for every sender together (issue 15): MAILER_RATE_LIMIT and the
    hourly and daily caps are one budget in the store, shared by all processes and
    machines. The caps count what was already sent (by any campaign) in the last day, so
    a restart cannot double the day's volume; one that cannot free up within
    MAILER_RETRY_HORIZON stops the run (CAPPED) instead of sleeping for hours."""
    return SharedRateLimiter(
        store,
        per_second=settings.rate_limit,
        per_hour=settings.hourly_limit,
        per_day=settings.daily_limit,
        patience=settings.retry_horizon,
    )


def campaign_dispatcher(
    settings: Settings,
    store: CampaignLedger,
    campaign: CampaignRecord,
    *,
    transport: Transport,
    limiter: RateLimiter | SharedRateLimiter,
    builder: InvitationBuilder,
    signer: TokenSigner,
    journal: Journal,
    owner: str,
    journal_of: Callable[[str], Path],
    on_progress: ProgressCallback | None,
    stop_requested: asyncio.Event | None,
    options: EngineOptions,
) -> Dispatcher:
    """The engine for one sender of `campaign`, as the settings configure it: the
    coordinator's (run_campaign) and a helper's (helping.help_campaign) alike. `options`
    gives what differs between them (coordinator, resend_unknown, shared_progress); the
    settings fill in the rest."""
    return Dispatcher(
        campaign_id=campaign.id,
        list_id=campaign.list_id,
        store=store,
        transport=transport,
        limiter=limiter,
        builder=builder,
        signer=signer,
        base_url=settings.base_url,
        journal=journal,
        retry=RetryPolicy(first_delay=settings.retry_delay, max_attempts=settings.max_attempts),
        breaker=CircuitBreaker(
            window=settings.breaker_window, threshold=settings.breaker_threshold
        ),
        options=dataclasses.replace(
            options,
            concurrency=settings.sending_concurrency,
            # As many ready behind them: each session's next envelope follows its last dot.
            ahead=settings.sending_concurrency,
            batch_size=settings.batch_size,
            retry_horizon=settings.retry_horizon,
            lease_seconds=settings.lease_seconds,
            bounce_address=settings.bounce_address,
        ),
        owner=owner,
        on_progress=on_progress,
        stop_requested=stop_requested,
        reap=functools.partial(reap_batches, store, campaign.id, me=owner, journal_of=journal_of),
    )


async def send_campaign_via_smtp(
    *,
    settings: Settings,
    store: CampaignLedger,
    signer: TokenSigner,
    campaign_id: int,
    resend_unknown: bool = False,
    on_progress: ProgressCallback | None = None,
    stop_requested: asyncio.Event | None = None,
    resume: bool = False,
    early: bool = False,
    event: Event | None = None,
    shared_progress: bool = False,
) -> RunResult:
    """`run_campaign` through a fresh SMTP pool for the settings' relay (or one per relay
    of MAILER_RELAYS), closed afterwards."""
    from mailer.sending.relays import transport_for

    async with transport_for(settings, store) as transport:
        return await run_campaign(
            settings=settings,
            store=store,
            transport=transport,
            signer=signer,
            campaign_id=campaign_id,
            resend_unknown=resend_unknown,
            on_progress=on_progress,
            stop_requested=stop_requested,
            resume=resume,
            early=early,
            event=event,
            shared_progress=shared_progress,
        )


async def run_campaign(
    *,
    settings: Settings,
    store: CampaignLedger,
    transport: Transport,
    signer: TokenSigner,
    campaign_id: int,
    owner: str | None = None,
    resend_unknown: bool = False,
    interrupted_status: CampaignStatus = CampaignStatus.PAUSED,
    on_progress: ProgressCallback | None = None,
    stop_requested: asyncio.Event | None = None,
    event: Event | None = None,
    limiter: RateLimiter | SharedRateLimiter | None = None,
    resume: bool = False,
    early: bool = False,
    journal_factory: Callable[[Path], Journal] = Journal,
    shared_progress: bool = False,
) -> RunResult:
    """Send `campaign_id` until finished, waiting for retries, interrupted or paused.

    `resume`: the organiser asked for this campaign by hand, so a paused, missed or
    finished one (for --resend-unknown) may go on; a worker never passes it.
    `early`: a scheduled campaign is taken before its time (`campaign send-now`).
    `event`: the event the organiser confirmed (loaded once by the command); None reads
    the campaign's event file now (the scheduler's case).
    `stop_requested`: set it to stop taking recipients (SIGINT, worker shutdown).
    `journal_factory`: opens the sender's journal (tests stand a full disk in).
    `shared_progress`: other senders help (issue 15): progress counts theirs too.

    This sender coordinates: other senders (helping.help_campaign) may claim batches of
    the campaign meanwhile; it waits for them before the campaign ends."""
    # Before any claim or connection: a relay off this machine with the demo's sender or
    # an unusable unsubscribe link would reach real people broken.
    check_real_send(settings)
    owner = owner or worker_identity()
    lease = timedelta(seconds=settings.lease_seconds)
    campaign = store.get_campaign(campaign_id)
    previous_owner = campaign.lease_owner  # whose rows may be in flight, if any
    # Claiming is what moves a paused, missed (or, to resend unknowns, finished) campaign
    # back to sending, atomically: if the claim fails nothing has changed.
    allowed: tuple[CampaignStatus, ...] = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)
    if resume:
        allowed += (CampaignStatus.PAUSED, CampaignStatus.MISSED, CampaignStatus.FINISHED)
    if not _claim(store, campaign_id, owner, lease, allowed, early=early, retry_paused=True):
        current = store.get_campaign(campaign_id)
        if current.lease_owner:
            raise CampaignError(
                f"campaign {campaign_id} is being sent by {current.lease_owner}",
                campaign_id=campaign_id,
                hint="Wait for it, or stop that process; a dead sender's lease expires "
                f"after {settings.lease_seconds:.0f} s.",
            )
        raise CampaignError(
            f"campaign {campaign_id} is {current.status.value} and cannot be sent",
            campaign_id=campaign_id,
        )

    def journal_of(sender: str) -> Path:
        return journal_path(settings.var_dir, settings.database_url, campaign_id, sender)

    try:
        previous_journal = journal_of(previous_owner) if previous_owner else None
        recovery = recover_in_flight(store, previous_journal, campaign_id)
        # Rows in the batches of senders that died (issue 15), this one's predecessor too.
        in_batches = recover_batches(store, campaign_id, me=owner, journal_of=journal_of)
        recovery = RecoveryReport(
            recovery.applied + in_batches.applied,
            recovery.unknown + in_batches.unknown,
            recovery.requeued + in_batches.requeued,
        )
        # The ledger now holds all the old journals knew; ours starts empty.
        if previous_journal is not None:
            previous_journal.unlink(missing_ok=True)
        journal_of(owner).unlink(missing_ok=True)
        journal = journal_factory(journal_of(owner))
        confirmed = event is not None  # by the organiser, for this very command
        if event is None:
            event = load_event(Path(campaign.event_path))
        # A reminder or an update sends its section of the event file (issue 14).
        event = event.for_message(campaign.message)
        builder = invitation_builder(
            settings,
            event,
            campaign_id=campaign_id,
            list_name=campaign.list_name,
            list_title=campaign.list_title,
            sequence=calendar_sequence(store, campaign, event),
            signer=signer,
        )
        if not confirmed and campaign.snapshot_at is not None:
            # A worker taking over a campaign already under way (its sender died): only
            # with the messages it started with, or part of the list would get another
            # one nobody confirmed. Paused with the reason; `campaign resume` (which the
            # organiser confirms) goes on with the file as it is now.
            refuse_changed_messages(campaign, settings, builder)
        # Before the snapshot, which helpers wait for: they check theirs against it.
        store.record_message_fingerprint(campaign_id, message_fingerprint(settings, builder))
        store.snapshot_audience(
            campaign_id,
            campaign.list_id,
            message_id_domain=builder.domain,
            audience=follow_up_audience(campaign),
        )
    except BaseException as exc:
        problem = journal_error(journal_of(owner), exc) if isinstance(exc, OSError) else exc
        store.release_campaign(
            campaign_id, owner=owner, status=CampaignStatus.PAUSED, error=f"paused: {problem}"
        )
        if problem is not exc:
            raise problem from exc
        raise
    limiter = limiter or make_limiter(settings, store)
    dispatcher = campaign_dispatcher(
        settings,
        store,
        campaign,
        transport=transport,
        limiter=limiter,
        builder=builder,
        signer=signer,
        journal=journal,
        owner=owner,
        journal_of=journal_of,
        on_progress=on_progress,
        stop_requested=stop_requested,
        options=EngineOptions(resend_unknown=resend_unknown, shared_progress=shared_progress),
    )
    try:
        stop, progress = await dispatcher.run()
    except BaseException:
        # Keep the lease and the journal: whoever claims next (after the lease expires, or
        # at once if this process is gone) settles the rows in flight from the journal.
        journal.close()
        raise
    reason = stop.reason
    if reason is not StopReason.LEASE_LOST and store.release_batches(campaign_id, owner=owner):
        # The same, for rows of our batches (the engine claims in batches, issue 15).
        try:
            settle_batches_of(store, campaign_id, owner, journal_of(owner), dead=True)
        except BaseException:
            journal.close()
            raise
    if reason is not StopReason.LEASE_LOST and store.in_flight(campaign_id):
        # A row whose give-back failed (the database blinked) is still `sending`. Settle it
        # from our own journal while the lease is ours: once released, the next sender
        # cannot know whose journal to read and would call the row unknown, and that
        # person would not be mailed. If this fails too, the lease and journal are kept.
        try:
            recover_in_flight(store, journal_of(owner), campaign_id)
        except BaseException:
            journal.close()
            raise
    counts = store.delivery_counts(campaign_id)
    # Every sender's, the helpers' last ones included (read at most once a second while
    # sending): the final progress, report and log say what the campaign's run did.
    progress.count_everyone(counts)
    if on_progress is not None:
        on_progress(progress)
    status, message = final_state(stop, counts, campaign_id, store, relays=bool(settings.relays))
    if reason is not StopReason.LEASE_LOST:
        final: CampaignStatus | None = status
        if reason is StopReason.INTERRUPTED:
            final = interrupted_status
            if final is CampaignStatus.SENDING:  # a worker stopping: not paused
                message = (
                    "stopped on request (this worker is stopping); another running `mailer "
                    f"worker` goes on with it, or `mailer campaign resume {campaign_id}`."
                )
        elif reason is StopReason.HALTED:
            final = None  # keep the organiser's paused / cancelled
        retry_after = relay_retry(settings, reason, campaign.relay_pauses)
        if retry_after is not None:
            message += f" {retry_note(retry_after)}"
        store.release_campaign(
            campaign_id,
            owner=owner,
            status=final,
            error=message if final is CampaignStatus.PAUSED else None,
            retry_after=retry_after,
        )
        if final is CampaignStatus.FINISHED:
            keep_report(store, campaign_id)
    settled = (
        reason is not StopReason.LEASE_LOST
        and not store.in_flight(campaign_id)
        and not store.release_batches(campaign_id, owner=owner)
    )
    journal.close(remove=settled)
    return RunResult(
        campaign=store.get_campaign(campaign_id),
        stop=stop,
        counts=counts,
        progress=progress,
        recovery=recovery,
        message=message,
    )


def keep_report(store: CampaignLedger, campaign_id: int) -> None:
    """Compute the finished campaign's report figures now, while the sender ends, and keep
    them: the dashboard's first view of a million-recipient report would otherwise group
    the whole ledger while the organiser waits (4.5 s on SQLite, bench_dashboard.py). A
    failure here only costs that wait later: the send itself is done and recorded."""
    try:
        store.report_figures(campaign_id, CampaignStatus.FINISHED)
    except Exception as exc:
        log.warning(
            fields(campaign=campaign_id, event="report-not-kept", error=one_line_reason(exc))
        )


def _one_line(text: str) -> str:
    """A relay's reply as one line: a multi-line reply ("535-5.7.8 ...\n535 5.7.8 ...")
    would break the note over several lines of the campaign list and the dashboard."""
    return " ".join(text.split())


def final_state(
    stop: Stop,
    counts: DeliveryCounts,
    campaign_id: int,
    store: CampaignLedger,
    *,
    relays: bool = False,
) -> tuple[CampaignStatus, str]:
    """The campaign's status after a run and the one line that explains it."""
    resume = f"mailer campaign resume {campaign_id}"
    reason = stop.reason
    if reason is StopReason.BREAKER:
        detail = _one_line(stop.detail).rstrip(". ")
        # The error knows better than "the relay" (a login, a size limit); but its hint
        # names the single relay's settings, which MAILER_RELAYS replaces.
        if stop.hint and not relays:
            advice = _one_line(stop.hint)
            advice += "" if advice.endswith((".", "?", "!")) else "."
            return CampaignStatus.PAUSED, f"paused: {detail}. {advice} Then `{resume}`."
        return CampaignStatus.PAUSED, f"paused: {detail}. Fix the relay, then `{resume}`."
    if reason is StopReason.RELAY_DOWN:
        where = (
            "the relays in MAILER_RELAYS (are they running?)"
            if relays
            else "MAILER_SMTP_HOST and MAILER_SMTP_PORT (is the relay running?)"
        )
        return (
            CampaignStatus.PAUSED,
            f"paused: {_one_line(stop.detail)}. Check {where}, then `{resume}`; nobody was lost.",
        )
    if reason is StopReason.ERROR:
        return (
            CampaignStatus.PAUSED,
            f"paused after an error while {stop.detail}. Fix it, then `{resume}`; messages "
            "in flight were recorded.",
        )
    if reason is StopReason.INTERRUPTED:
        return CampaignStatus.PAUSED, f"stopped on request; `{resume}` sends the rest."
    if reason is StopReason.LEASE_LOST:
        return CampaignStatus.SENDING, "another worker took the campaign over (lease expired)."
    if reason is StopReason.HALTED:
        now = store.campaign_status(campaign_id)  # an organiser's pause or cancel
        if now is CampaignStatus.CANCELLED:
            return CampaignStatus.PAUSED, "stopped: the campaign was cancelled meanwhile."
        if now is CampaignStatus.PAUSED:
            return (
                CampaignStatus.PAUSED,
                f"stopped: the campaign was paused meanwhile; `{resume}` sends the rest.",
            )
        return CampaignStatus.PAUSED, "stopped: the campaign was paused or cancelled meanwhile."
    if reason is StopReason.CAPPED:
        which = stop.limit.value if stop.limit else "sending"
        when = f"{stop.until:%Y-%m-%d %H:%M} UTC" if stop.until else "later"
        return (
            CampaignStatus.SENDING,
            f"the {which} cap is reached; sending can go on at {when} — a running "
            f"`mailer worker` continues then, or `{resume}`.",
        )
    if reason is StopReason.WAITING:
        due = store.next_retry_at(campaign_id)
        when = f"{due:%Y-%m-%d %H:%M:%S} UTC" if due else "later"
        return (
            CampaignStatus.SENDING,
            f"{counts.deferred} deferred; next retry at {when} — a running `mailer worker` "
            f"sends them, or `{resume}`.",
        )
    if counts.queued or counts.sending:
        # Never "finished" with someone still to send (a backstop: the engine finishes
        # only after a pass that found nothing, once nobody else held rows). Left
        # sending, so a worker goes on with it as with a retry that is due.
        left = counts.queued + counts.sending
        return (
            CampaignStatus.SENDING,
            f"{left} recipient(s) still to send (given back as this sender ended) — a "
            f"running `mailer worker` sends them, or `{resume}`.",
        )
    note = ""
    if counts.unknown:
        note = (
            f" {counts.unknown} outcome(s) unknown (the process died with them at the relay);"
            f" not resent to avoid duplicates — `{resume} --resend-unknown` resends them with"
            " the same Message-ID."
        )
    return CampaignStatus.FINISHED, f"every recipient has a final outcome.{note}"
