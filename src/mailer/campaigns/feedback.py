"""Bounces, complaints and mailed unsubscribes: a classified report -> the store, and the
bounce mailbox read once (`mailer bounces fetch`) or every so often (worker, serve).

A report acts only on a ledger row it can be tied to, in this order: the VERP token of the
address it came back to (verified under the same keys as unsubscribe links: a forged one
is ignored), the Message-ID it quotes together with the recipient it names (128 random
bits per row: only someone who saw the message knows it), or the token of a
List-Unsubscribe link it quotes. The recipient alone is enough only for an authenticated
report (a signed webhook): anyone can mail the bounce mailbox, and a DSN or an abuse
report naming an address we mailed is no proof, since whoever knows the address could
write one and have it suppressed (a complaint: for good). A report about no message of
ours changes nothing and is left for a person.

Crash safety: a message's outcome and its key (a digest of its bytes) are committed in one
transaction, and only then is it moved or deleted; a message read again finds its key and
is only moved. Addresses and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mailer.clock import utcnow
from mailer.config import Settings
from mailer.errors import MailerError, TokenError
from mailer.feedback.classify import OwnAddresses, classify
from mailer.feedback.mailbox import Folders, Mailbox, open_mailbox, parse_mailbox
from mailer.feedback.policy import BouncePolicy, disposition
from mailer.logs import fields
from mailer.models import (
    Disposition,
    Feedback,
    FeedbackAction,
    FeedbackKind,
    FeedbackTarget,
)
from mailer.store import Store
from mailer.store.base import email_key
from mailer.store.feedback import FeedbackRecord
from mailer.tokens import TokenSigner

log = logging.getLogger("mailer.feedback")


@dataclass(frozen=True, slots=True)
class Applied:
    """What one report did."""

    kind: FeedbackKind
    disposition: Disposition
    actions: tuple[FeedbackAction, ...] = ()
    """One per recipient it was tied to."""
    duplicate: bool = False
    """Seen before (its key was recorded): nothing changed this time."""
    note: str | None = None
    """Why it changed nothing, when it did not."""


def message_key(data: bytes) -> str:
    """How a mailbox message is recognised when read again: a digest of its bytes (its
    Message-ID is in them, and a forger cannot make two reports share one)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def policy_from(settings: Settings) -> BouncePolicy:
    return BouncePolicy(
        soft_bounce_limit=settings.soft_bounce_limit, soft_bounce_days=settings.soft_bounce_days
    )


def apply_feedback(
    store: Store,
    feedback: Feedback,
    *,
    signer: TokenSigner,
    policy: BouncePolicy,
    now: datetime,
    key: str | None = None,
    authenticated: bool = False,
) -> Applied:
    """Record what `feedback` says, once: with `key`, a report recorded before is not
    applied again. Webhooks call this with their notification id as `key`, and with
    `authenticated` (the sender proved who it is), which lets a report that names only
    an address act on it."""
    if key is not None and (seen := store.feedback_seen(key)) is not None:
        return Applied(feedback.kind, seen, duplicate=True, note="seen before")
    targets, note = attribute(store, feedback, signer=signer, authenticated=authenticated)
    where = disposition(feedback.kind, attributed=bool(targets))
    if where is Disposition.LEFT_ALONE:
        targets = []
    record = FeedbackRecord(
        message_key=key,
        kind=feedback.kind,
        disposition=where,
        source=feedback.source,
        targets=targets,
        status=feedback.status,
        diagnostic=feedback.diagnostic,
        note=note,
    )
    actions = store.record_feedback(
        record,
        soft_bounce_limit=policy.soft_bounce_limit,
        soft_bounces_since=policy.soft_bounces_since(now),
        now=now,
    )
    if actions is None:  # another reader recorded it between our check and our write
        return Applied(feedback.kind, where, duplicate=True, note="seen before")
    for target, action in zip(targets, actions, strict=True):
        log.info(
            fields(
                event="feedback",
                kind=feedback.kind.value,
                action=action.value,
                campaign=target.campaign_id,
                delivery=target.delivery_id,
                status=feedback.status,
                source=feedback.source,
            )
        )
    if not targets and feedback.kind is not FeedbackKind.OTHER:
        log.warning(fields(event="feedback-ignored", kind=feedback.kind.value, reason=note or ""))
    return Applied(feedback.kind, where, tuple(actions), note=note)


def attribute(
    store: Store, feedback: Feedback, *, signer: TokenSigner, authenticated: bool = False
) -> tuple[list[FeedbackTarget], str | None]:
    """Whom the report is about (see the module docstring), or why nobody. By the
    recipient alone only when `authenticated`."""
    if feedback.kind is FeedbackKind.UNSUBSCRIBE:
        return _by_unsubscribe_token(store, feedback.unsubscribe_token, signer=signer)
    if feedback.verp_token is not None:
        try:
            delivery_id = signer.verify_bounce(feedback.verp_token)
        except TokenError:
            return [], "a VERP token we did not sign (forged, or another sender's)"
        target = store.delivery_target(delivery_id)
        return ([target], None) if target else ([], "its VERP token names no row sent")
    named = {email_key(address) for address in feedback.recipients}
    if feedback.message_id is not None:
        target = store.delivery_by_message_id(feedback.message_id)
        if target is not None and (not named or email_key(target.email) in named):
            return [target], None
    if feedback.unsubscribe_token is not None:
        found, _ = _by_unsubscribe_token(store, feedback.unsubscribe_token, signer=signer)
        if found:
            return found, None
    if not authenticated:
        if feedback.message_id is not None:
            return [], "its Message-ID is not ours for the recipient it names"
        return [], "it names no message of ours (an address alone could be forged)"
    targets = [t for a in feedback.recipients if (t := store.last_delivery_to(a)) is not None]
    if targets:
        return targets, None
    if feedback.recipients:
        return [], "it names no address we sent to"
    return [], "it names neither a message nor an address of ours"


def _by_unsubscribe_token(
    store: Store, token: str | None, *, signer: TokenSigner
) -> tuple[list[FeedbackTarget], str | None]:
    if token is None:
        return [], "no unsubscribe token"
    try:
        claims = signer.verify(token)
    except TokenError:
        return [], "an unsubscribe token we did not sign"
    if claims.campaign_id is not None:
        row = store.delivery_for(claims.campaign_id, claims.subscriber_id)
        if row is not None:
            return [row], None
    target = store.unsubscribe_target(claims.subscriber_id, claims.list_id, claims.campaign_id)
    return ([target], None) if target else ([], "its token names nobody in the store")


# -- the mailbox ----------------------------------------------------------------------------


@dataclass(slots=True)
class FetchReport:
    """What one pass over the bounce mailbox did."""

    read: int = 0
    processed: int = 0
    left_alone: int = 0
    seen_before: int = 0
    """Handled by an earlier run that stopped before moving them: only moved now."""
    kinds: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)


def own_addresses(settings: Settings) -> OwnAddresses:
    return OwnAddresses(bounce=settings.bounce_address, unsubscribe=settings.unsubscribe_mailto)


def open_bounce_mailbox(settings: Settings) -> Mailbox:
    """The mailbox MAILER_BOUNCE_MAILBOX names, connected; ConfigError if none is set."""
    from mailer.errors import ConfigError

    if settings.bounce_mailbox is None:
        raise ConfigError(
            "MAILER_BOUNCE_MAILBOX is not set: there is no bounce mailbox to read",
            setting="MAILER_BOUNCE_MAILBOX",
            hint="e.g. imaps://bounces@mail.example.org/INBOX (see the README, Bounces).",
        )
    location = parse_mailbox(settings.bounce_mailbox, home=settings.home)
    password = settings.bounce_password.get_secret_value() if settings.bounce_password else None
    folders = Folders(
        processed=settings.bounce_processed_folder,
        unhandled=settings.bounce_unhandled_folder,
    )
    return open_mailbox(location, password=password, folders=folders)


def fetch_bounces(
    store: Store,
    mailbox: Mailbox,
    *,
    signer: TokenSigner,
    policy: BouncePolicy,
    own: OwnAddresses,
    source: str,
    clock: Callable[[], datetime] = utcnow,
    stop: Callable[[], bool] = lambda: False,
) -> FetchReport:
    """Read every message once: classify, record (committed), then move or delete it."""
    report = FetchReport()
    for message in mailbox.messages():
        if stop():
            break
        report.read += 1
        key = message_key(message.data)
        seen = store.feedback_seen(key)
        if seen is not None:
            # Recorded by a run that stopped before moving it (only the move is left), or
            # left for a person earlier (it stays where it is).
            report.seen_before += seen is Disposition.PROCESSED
            applied = Applied(FeedbackKind.OTHER, seen, duplicate=True)
        else:
            # classify never raises on bad input: hostile mail ends as OTHER, logged.
            feedback = classify(message.data, own=own, source=source, size=message.size)
            applied = apply_feedback(
                store, feedback, signer=signer, policy=policy, now=clock(), key=key
            )
            report.kinds[feedback.kind.value] += 1
            report.actions.update(action.value for action in applied.actions)
        if applied.disposition is Disposition.PROCESSED:
            report.processed += 1
        else:
            report.left_alone += 1
        mailbox.done(message, applied.disposition)
    return report


def fetch_once(
    settings: Settings,
    store: Store,
    *,
    signer: TokenSigner,
    stop: Callable[[], bool] = lambda: False,
) -> FetchReport:
    """`mailer bounces fetch` (and each poll): open the configured mailbox, read it all,
    close it (POP3 deletes at that close, never before)."""
    mailbox = open_bounce_mailbox(settings)
    try:
        return fetch_bounces(
            store,
            mailbox,
            signer=signer,
            policy=policy_from(settings),
            own=own_addresses(settings),
            source=_source(settings),
            stop=stop,
        )
    finally:
        mailbox.close()


def _source(settings: Settings) -> str:
    url = settings.bounce_mailbox or ""
    return url.split(":", 1)[0].rstrip("s") if not url.startswith("maildir:") else "maildir"


async def poll_bounces(
    settings: Settings, store: Store, *, signer: TokenSigner, stop: asyncio.Event
) -> None:
    """Read the bounce mailbox every MAILER_BOUNCE_POLL_INTERVAL until `stop` is set (the
    worker's and the server's loop). A mailbox that cannot be read is logged and tried
    again at the next interval; nothing else stops."""
    log.info(fields(event="bounce-polling", every=f"{settings.bounce_poll_interval:g}s"))
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(
                fetch_once, settings, store, signer=signer, stop=stop.is_set
            )
        except MailerError as exc:
            log.error(fields(event="bounce-fetch-failed", error=str(exc)))
        except Exception:  # a bug must not end the worker's other work
            log.exception(fields(event="bounce-fetch-crashed"))
        else:
            if report.read:
                log.info(
                    fields(
                        event="bounces-fetched",
                        read=report.read,
                        processed=report.processed,
                        left_alone=report.left_alone,
                        **{k.replace("-", "_"): v for k, v in sorted(report.actions.items())},
                    )
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.bounce_poll_interval)
