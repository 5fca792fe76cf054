"""Plain typed records passed between the pipeline's stages.

They hold data only; behaviour lives in the stage modules. Frozen and slotted because
the sender creates one per recipient on the hot path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime


class SubscriberStatus(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    MANUAL = "manual"
    # Not a suppression: the organiser lifted one (`subscribers resubscribe`). Recorded in
    # the same history, never in force, with the organiser's reason as its detail.
    RESUBSCRIBED = "resubscribed"


class UnsubscribeSource(enum.StrEnum):
    """How a recipient left: recorded with every suppression (Gmail/Yahoo audits ask)."""

    ONE_CLICK = "one-click"
    PAGE = "page"
    ADMIN = "admin"
    MAILTO = "mailto"
    BOUNCE = "bounce"
    FEEDBACK_LOOP = "feedback-loop"
    """A complaint: the reader marked a message as spam (an ARF report, a relay's webhook)."""
    IMPORT = "import"


class CampaignStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    MISSED = "missed"


class DeliveryStatus(enum.StrEnum):
    """One ledger row's state. Only `sent` means the relay accepted the message."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_DELIVERY_STATES


_FINAL_DELIVERY_STATES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED}
)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A validated subscriber as imported or stored. `email` is normalised (ASCII domain)."""

    email: str
    name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    status: SubscriberStatus = SubscriberStatus.SUBSCRIBED
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the renderer needs about one addressee of a campaign."""

    subscriber_id: int
    email: str
    name: str
    attributes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    """Who the mail is from and where recipients go to leave; derived from Settings."""

    from_address: str
    from_name: str
    base_url: str
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    # The organiser's postal address for the footer (bulk-mail rules, CAN-SPAM).
    postal_address: str | None = None
    # Gmail's Feedback-ID SenderId; None sends no Feedback-ID header.
    feedback_id_sender: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for the wire: envelope plus CRLF bytes."""

    sender: str
    recipient: str
    message_id: str
    data: bytes
    wire_ready: bool = False
    """True only where the maker guarantees `data` is already what SMTP's DATA carries:
    CRLF line ends only, ending in CRLF, and no line starting with "." (InvitationBuilder
    builds every piece that way). The transport then sends it as it is; otherwise it
    normalises line ends and doubles leading dots (RFC 5321 4.5.2), scans that cost ~46 µs
    a 13 KB message here."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the relay said about one message to one recipient."""

    status: DeliveryStatus
    code: int | None = None
    reply: str = ""
    relay: str | None = None
    """With MAILER_RELAYS: the name of the relay that said it (None: the single relay)."""

    @property
    def is_policy_rejection(self) -> bool:
        # RFC 3463 class 5.7.x: rejected for policy (SPF/DMARC/content), not a dead mailbox.
        return self.status is DeliveryStatus.FAILED and self.reply.lstrip().startswith("5.7.")


@dataclass(frozen=True, slots=True)
class Suppression:
    email: str
    reason: SuppressionReason
    source: UnsubscribeSource
    at: datetime
    campaign_id: int | None = None


# -- campaigns, the ledger and what the store reports ---------------------------------


class MessageKind(enum.StrEnum):
    """What a campaign of an event sends (issue 14): the invitation, or a follow-up."""

    INVITATION = "invitation"
    REMINDER = "reminder"  # the event file's `--- reminder ---` section
    UPDATE = "update"  # the `--- update ---` section; the invite's SEQUENCE is raised


class RsvpStatus(enum.StrEnum):
    """A guest's answer as stored: "yes" holds a place; "waiting" said yes when none was free."""

    YES = "yes"
    WAITING = "waiting"
    MAYBE = "maybe"
    NO = "no"


class RsvpChoice(enum.StrEnum):
    """What a guest presses on the RSVP page."""

    YES = "yes"
    MAYBE = "maybe"
    NO = "no"


class AudienceFilter(enum.StrEnum):
    """`mailer send --only ...`: a follow-up to those whose answer is one of these."""

    YES = "yes"
    WAITING = "waiting"
    MAYBE = "maybe"
    NO = "no"
    NO_ANSWER = "no-answer"


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    id: int
    event_path: str
    event_slug: str
    list_id: int
    list_name: str
    subject: str
    status: CampaignStatus
    scheduled_at: datetime | None
    snapshot_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    retry_at: datetime | None = None
    """Paused by the relay: when a worker takes it again by itself."""
    relay_pauses: int = 0
    """Relay pauses in a row (the cool-down doubles with each)."""
    schedule_key: str | None = None
    """The time and place its invite was sent for (message.calendar.schedule_key)."""
    list_title: str | None = None
    """What recipients read as the list's name; None: its name."""
    message: MessageKind = MessageKind.INVITATION
    """What it sends: the invitation, or a follow-up (reminder, update)."""
    audience_filter: frozenset[AudienceFilter] | None = None
    """Only those with these answers (`--only`); None: the whole list."""
    message_fingerprint: str | None = None
    """What its messages are made from, as the sender holding it built them (issue 15)."""
    mail_again: bool = False
    """--new: also to those who had its event's invitation through another campaign."""
    event_key: str | None = None
    """Its event's identity (Event.identity): the same for a copy of the file under
    another name. None for campaigns made before migration 0017."""


@dataclass(slots=True)
class DeliveryCounts:
    queued: int = 0
    sending: int = 0
    sent: int = 0
    deferred: int = 0
    bounced: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, status.value) for status in DeliveryStatus)

    @property
    def done(self) -> int:
        return self.sent + self.bounced + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {status.value: getattr(self, status.value) for status in DeliveryStatus}


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    subscriber_id: int
    email: str
    name: str
    attributes: Mapping[str, str]
    attempts: int
    status: DeliveryStatus = DeliveryStatus.QUEUED
    message_id: str | None = None
    """Given at the snapshot; None only for rows snapshotted before Message-IDs were."""


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    delivery_id: int
    subscriber_id: int
    status: DeliveryStatus
    attempts: int
    code: int | None = None
    reply: str = ""
    message_id: str | None = None
    next_attempt_at: datetime | None = None
    relay: str | None = None
    """With MAILER_RELAYS: the relay that gave this outcome (see Outcome.relay)."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    email: str
    status: DeliveryStatus
    attempts: int
    code: int | None
    reply: str
    message_id: str | None
    sent_at: datetime | None
    updated_at: datetime | None
    later: LaterOutcome | None = None
    """What came back after the relay accepted it (a bounce, a complaint); None: nothing."""
    relay: str | None = None
    """With MAILER_RELAYS: the relay that gave the row its last outcome."""


@dataclass(slots=True)
class ImportCounts:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    suppressed: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ListSummary:
    name: str
    subscribed: int
    unsubscribed: int
    created_at: datetime
    title: str | None = None
    """What recipients read (footer, unsubscribe page); None: the name."""
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PageRecipient:
    """The person a token names, as the unsubscribe page shows them."""

    email: str
    list_name: str
    unsubscribed: bool
    """True when they have left this list (membership or an unlifted list suppression)."""
    list_title: str | None = None
    """What the page calls the list; None: its name."""


@dataclass(frozen=True, slots=True)
class Membership:
    list_name: str
    status: SubscriberStatus
    since: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One suppression of an address (in force or lifted), or an organiser's resubscribe."""

    at: datetime
    reason: SuppressionReason
    source: UnsubscribeSource
    list_name: str | None
    """None: every list."""
    campaign_id: int | None = None
    detail: str | None = None
    lifted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SubscriberRecord:
    """Everything the store knows about one address, for `mailer subscribers show`."""

    email: str
    subscriber: Subscriber | None
    """None: erased (`subscribers remove`); its suppressions are still kept."""
    created_at: datetime | None
    memberships: list[Membership]
    history: list[HistoryEntry]


@dataclass(frozen=True, slots=True)
class Rsvp:
    """One guest's answer to one event."""

    status: RsvpStatus
    guests: int
    note: str
    answered_at: datetime
    promoted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RsvpCounts:
    """An event's answers among one list's audience (or everyone who answered)."""

    yes: int = 0
    waiting: int = 0
    maybe: int = 0
    no: int = 0
    no_answer: int = 0
    guests_yes: int = 0
    """Guests brought by those with a place ("yes"): places taken = yes + guests_yes."""
    guests_waiting: int = 0
    guests_maybe: int = 0
    untold: int = 0
    """Moved up from the waiting list, but the message telling them was not accepted."""

    @property
    def places_taken(self) -> int:
        return self.yes + self.guests_yes


@dataclass(frozen=True, slots=True)
class FollowUpAudience:
    """Whom a campaign of an event takes from its list (issue 14): those whose answer is in
    `only` (None: everyone), less, for a reminder, anyone already sent this event's reminder."""

    event_slug: str
    message: MessageKind
    only: frozenset[AudienceFilter] | None = None

    @property
    def once_per_person(self) -> bool:
        # Nobody gets the same reminder twice, whatever --only said each time; an update
        # can go again (each change of time or place is news).
        return self.message is MessageKind.REMINDER


@dataclass(frozen=True, slots=True)
class RsvpOutcome:
    """What recording one answer did."""

    rsvp: Rsvp
    changed: bool
    """False: the same answer again (a second click), nothing written."""
    promoted: tuple[int, ...] = ()
    """Subscribers moved up from the waiting list by this change (to be told by mail)."""
    refused_guests: bool = False
    """A guest with a place asked for more guests than places are left: kept as before."""


@dataclass(frozen=True, slots=True)
class Attendee:
    """A row of `mailer rsvps --csv`."""

    name: str
    email: str
    status: RsvpStatus | None
    """None: no answer yet."""
    guests: int
    note: str
    answered_at: datetime | None


class FeedbackKind(enum.StrEnum):
    """What a message mailed back to us (or a relay's webhook) says about a recipient."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto_reply"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Feedback:
    """One classified bounce, complaint, mailed unsubscribe or other returned message.

    Built by `feedback.classify` from raw bytes (or by a webhook handler) and applied to the
    store by the feedback use case; it names addresses and tokens only, never store ids.
    """

    kind: FeedbackKind
    recipients: tuple[str, ...]
    """The addresses the report is about (Final-Recipient, the ARF's Original-Rcpt-To)."""
    verp_token: str | None
    """TOKEN of `bounces+TOKEN@domain` when the message came back to a VERP address."""
    message_id: str | None
    """The Message-ID of the message we sent, when the report quotes it."""
    status: str | None
    """RFC 3463 status code, e.g. `5.1.1`."""
    diagnostic: str | None
    unsubscribe_token: str | None
    """The token of a mailed unsubscribe (from the subject or the `+TOKEN` local part)."""
    source: str
    """Where it came from: `imap`, `pop3`, `maildir`, `ses`, `webhook`, ... (for the log)."""


class LaterOutcome(enum.StrEnum):
    """What a `sent` ledger row learnt after the relay accepted it (`deliveries.feedback`)."""

    SOFT_BOUNCED = "soft-bounced"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class FeedbackAction(enum.StrEnum):
    """What the bounce policy did about one recipient of a report."""

    SUPPRESSED = "suppressed"
    """A hard bounce, or the soft bounce that reached the limit: off every list."""
    COUNTED = "counted"
    """A soft bounce below the limit: remembered, nothing else."""
    COMPLAINED = "complained"
    """Off every list, for good (a resubscribe click never lifts it)."""
    UNSUBSCRIBED = "unsubscribed"
    """A mailed unsubscribe: off the list, recorded as `mailto`."""
    ALREADY = "already"
    """Already suppressed for this: recorded, nothing changed."""


class Disposition(enum.StrEnum):
    """What becomes of a message in the bounce mailbox once its outcome is committed."""

    PROCESSED = "processed"
    """Moved to the processed folder (or deleted): the store holds all it said."""
    LEFT_ALONE = "left-alone"
    """Not ours to act on (an auto-reply, a person's mail, a report we could not tie to a
    message we sent): left for a person, or moved to the folder for them."""


@dataclass(frozen=True, slots=True)
class FeedbackTarget:
    """Whom a report is about: the ledger row it was tied to (by VERP token, Message-ID or
    address), or the person and list a mailed unsubscribe names."""

    delivery_id: int | None
    """None for a mailed unsubscribe: its token names the person and list, not a row."""
    campaign_id: int | None
    subscriber_id: int
    list_id: int
    email: str


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One recipient of one report as `mailer bounces list` shows it."""

    at: datetime
    email: str
    kind: FeedbackKind
    action: FeedbackAction
    campaign_id: int | None
    status: str | None
    diagnostic: str | None
    source: str


@dataclass(slots=True)
class FeedbackCounts:
    """A campaign's later outcomes, for `campaign show` / `campaign report`."""

    bounced: int = 0
    """Sent rows that bounced after the relay accepted them (hard, or soft past the limit)."""
    soft_bounced: int = 0
    complained: int = 0
