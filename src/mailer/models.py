"""Plain typed records passed between the pipeline's stages.

They hold data only; behaviour lives in the stage modules. Frozen and slotted because
the sender creates one per recipient on the hot path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class UnsubscribeSource(enum.StrEnum):
    """How a recipient left: recorded with every suppression (Gmail/Yahoo audits ask)."""

    ONE_CLICK = "one-click"
    PAGE = "page"
    ADMIN = "admin"
    MAILTO = "mailto"
    BOUNCE = "bounce"
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the relay said about one message to one recipient."""

    status: DeliveryStatus
    code: int | None = None
    reply: str = ""

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
