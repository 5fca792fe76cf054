"""The scheduler: due campaigns -> the engine, once, across any number of workers.

Every few seconds a worker (1) marks scheduled campaigns older than the grace period as
missed, then (2) asks the store for campaigns that are due: scheduled ones whose time has
come, and sending ones with work due (retries, or a dead worker's rows) whose lease is free
or expired. Each is claimed with one atomic UPDATE (see Store.claim_campaign), so two
workers, in two processes or on two machines sharing PostgreSQL, never both coordinate it.
(3) A campaign another worker coordinates, with rows nobody has claimed yet, is joined as
a helper (issue 15): the workers send it together, each claiming its own batches.

Logs are structured `key=value` lines: campaign, event, counts, rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.delivery.base import Transport
from mailer.errors import CampaignError, ConfigError, MailerError, one_line_reason
from mailer.logs import fields
from mailer.models import CampaignStatus
from mailer.preflight import check_real_send
from mailer.sending.engine import Progress
from mailer.sending.helping import help_campaign
from mailer.sending.ratelimit import Limit
from mailer.sending.run import make_limiter, run_campaign, worker_identity
from mailer.store import Store
from mailer.tokens import TokenSigner

log = logging.getLogger("mailer.worker")

_PROGRESS_EVERY = 5.0


class Scheduler:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        signer: TokenSigner,
        transport_factory: Callable[[Settings], Transport],
        owner: str | None = None,
        max_campaigns: int = 4,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.transport_factory = transport_factory
        self.owner = owner or worker_identity()
        self.max_campaigns = max_campaigns
        self._running: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._refusal: str | None = None
        self._help_refused: dict[int, str] = {}  # campaign -> why this worker may not help
        # One limiter for every campaign this worker sends: the relay's limit is global.
        self._limiter = make_limiter(settings, store)

    def request_stop(self) -> None:
        """Stop polling, let running campaigns finish their in-flight messages, release them."""
        self._stopping.set()

    async def run(self) -> None:
        log.info(fields(event="worker-started", worker=self.owner))
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except MailerError as exc:  # the database is down: say so, try again later
                log.error(fields(event="poll-failed", error=str(exc)))
            except SQLAlchemyError as exc:
                # A connection cut under the poll (a database restart, pg_terminate_backend):
                # the pool replaces it at the next poll; a worker must not exit for it.
                log.error(fields(event="poll-failed", error=one_line_reason(exc)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval)
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        log.info(fields(event="worker-stopped", worker=self.owner))

    async def poll_once(self) -> None:
        grace = timedelta(seconds=self.settings.grace_period)
        missed = await asyncio.to_thread(self.store.mark_missed, older_than=utcnow() - grace)
        for campaign_id in missed:
            log.warning(
                fields(campaign=campaign_id, event="missed", grace_seconds=grace.total_seconds())
            )
        if not self._running and (self.settings.hourly_limit or self.settings.daily_limit):
            # Idle: recount the caps from the ledger, which other senders (`mailer send`,
            # other workers) may have added to since.
            self._limiter = await asyncio.to_thread(make_limiter, self.settings, self.store)
        wait = self._limiter.next_wait()
        if wait.limit in (Limit.HOURLY, Limit.DAILY) and wait.seconds > self.settings.poll_interval:
            return  # the relay's cap is reached: nothing may be sent before it frees up
        if not self._settings_allow_sending():
            return
        due = await asyncio.to_thread(self.store.due_campaigns)
        for campaign_id in due:
            if campaign_id in self._running or len(self._running) >= self.max_campaigns:
                continue
            if self._stopping.is_set():
                return
            self._running[campaign_id] = asyncio.create_task(self._send(campaign_id))
        joinable = await asyncio.to_thread(self.store.joinable_campaigns)
        for campaign_id in joinable:
            if campaign_id in self._running or len(self._running) >= self.max_campaigns:
                continue
            if self._stopping.is_set():
                return
            self._running[campaign_id] = asyncio.create_task(self._help(campaign_id))

    def _settings_allow_sending(self) -> bool:
        """No claim while the settings would send broken mail (see mailer.preflight); the
        refusal is logged once, not at every poll."""
        try:
            check_real_send(self.settings)
        except ConfigError as exc:
            if self._refusal != str(exc):
                self._refusal = str(exc)
                log.error(fields(event="refusing-to-send", error=str(exc)))
            return False
        return True

    def _forget(self, campaign_id: int) -> None:
        self._running.pop(campaign_id, None)

    async def _send(self, campaign_id: int) -> None:
        try:
            await self._send_campaign(campaign_id)
        except Exception:  # a bug or a lost database must not vanish with the task
            log.exception(fields(campaign=campaign_id, event="crashed"))
        finally:
            self._forget(campaign_id)

    async def _help(self, campaign_id: int) -> None:
        transport = self.transport_factory(self.settings)
        try:
            await help_campaign(
                settings=self.settings,
                store=self.store,
                transport=transport,
                signer=self.signer,
                campaign_id=campaign_id,
                owner=self.owner,
                stop_requested=self._stopping,
                limiter=self._limiter,
            )
        except MailerError as exc:
            # Once, with what to do, until the reason changes: a helper refused for its
            # messages is asked again at every poll, and said so every two seconds.
            if self._help_refused.get(campaign_id) != str(exc):
                self._help_refused[campaign_id] = str(exc)
                log.error(
                    fields(campaign=campaign_id, event="help-failed", error=str(exc), hint=exc.hint)
                )
        except Exception:  # a bug or a lost database must not vanish with the task
            log.exception(fields(campaign=campaign_id, event="crashed"))
        else:
            self._help_refused.pop(campaign_id, None)
        finally:
            await transport.aclose()
            self._forget(campaign_id)

    async def _send_campaign(self, campaign_id: int) -> None:
        last_report = 0.0

        def on_progress(progress: Progress) -> None:
            nonlocal last_report
            loop_time = asyncio.get_running_loop().time()
            if loop_time - last_report >= _PROGRESS_EVERY:
                last_report = loop_time
                log.info(fields(campaign=campaign_id, event="progress", **_counts(progress)))

        before = await asyncio.to_thread(self.store.get_campaign, campaign_id)
        if before.status is CampaignStatus.PAUSED and before.retry_at is not None:
            log.info(
                fields(campaign=campaign_id, event="auto-retry", relay_pauses=before.relay_pauses)
            )
        transport = self.transport_factory(self.settings)
        try:
            result = await run_campaign(
                settings=self.settings,
                store=self.store,
                transport=transport,
                signer=self.signer,
                campaign_id=campaign_id,
                owner=self.owner,
                # a worker that is shut down hands the campaign to the next worker
                interrupted_status=CampaignStatus.SENDING,
                on_progress=on_progress,
                stop_requested=self._stopping,
                limiter=self._limiter,
            )
        except CampaignError as exc:  # another worker claimed it first: nothing to do
            log.debug(fields(campaign=campaign_id, event="not-claimed", reason=str(exc)))
            return
        except MailerError as exc:
            log.error(fields(campaign=campaign_id, event="failed", error=str(exc)))
            return
        finally:
            await transport.aclose()
        log.info(
            fields(
                campaign=campaign_id,
                event=result.reason.value,
                status=result.campaign.status.value,
                **_counts(result.progress),
            )
        )
        if result.campaign.retry_at is not None:
            log.warning(
                fields(
                    campaign=campaign_id,
                    event="relay-paused",
                    retry_at=f"{result.campaign.retry_at:%Y-%m-%dT%H:%M:%SZ}",
                    relay_pauses=result.campaign.relay_pauses,
                )
            )
        if result.message and result.campaign.status is not CampaignStatus.FINISHED:
            log.info(fields(campaign=campaign_id, event="note", message=result.message))


def _counts(progress: Progress) -> dict[str, object]:
    counts = progress.counts
    return {
        "sent": counts.sent,
        "deferred": counts.deferred,
        "bounced": counts.bounced,
        "failed": counts.failed,
        "skipped": counts.skipped,
        "unknown": counts.unknown,
        "total": counts.total,
        "rate": f"{progress.rate:.1f}/s",
    }
