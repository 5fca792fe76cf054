"""The bounce policy: which reports act on a recipient, what becomes of the message, and
when a campaign's rates call for a warning. Pure: numbers and records in, decisions out.

What the store then does with a report (models.FeedbackAction): a hard bounce suppresses
at once; a soft bounce is counted and suppresses once `soft_bounce_limit` of them arrived
within `soft_bounce_days`; a complaint suppresses from every list for good (a resubscribe
click never lifts it); a mailed unsubscribe takes the person off the list its token names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.models import Disposition, FeedbackCounts, FeedbackKind

# Gmail and Yahoo throttle, then junk, senders above these (their bulk-sender rules ask
# for complaints under 0.3%; a list should stay well under). Warnings, not stops.
BOUNCE_RATE_WARNING = 0.02
COMPLAINT_RATE_WARNING = 0.001

ACTS_ON_RECIPIENTS = frozenset(
    {
        FeedbackKind.HARD_BOUNCE,
        FeedbackKind.SOFT_BOUNCE,
        FeedbackKind.COMPLAINT,
        FeedbackKind.UNSUBSCRIBE,
    }
)


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    soft_bounce_limit: int = 3
    soft_bounce_days: float = 30.0

    def soft_bounces_since(self, now: datetime) -> datetime:
        """Soft bounces from this moment on count towards the limit."""
        return now - timedelta(days=self.soft_bounce_days)


def disposition(kind: FeedbackKind, *, attributed: bool) -> Disposition:
    """A report we acted on is processed; anything else (an auto-reply, a person's mail,
    a report about no message of ours, a forged token) is left for a person to read."""
    if kind in ACTS_ON_RECIPIENTS and attributed:
        return Disposition.PROCESSED
    return Disposition.LEFT_ALONE


@dataclass(frozen=True, slots=True)
class Rates:
    bounce: float
    """Bounced at the relay or after it, over the messages that reached the relay."""
    complaint: float
    """Complaints over the messages the relay accepted."""

    def warnings(self) -> list[str]:
        found = []
        if self.bounce > BOUNCE_RATE_WARNING:
            found.append(
                f"bounce rate {self.bounce:.1%} is above {BOUNCE_RATE_WARNING:.0%}: "
                "clean the list before the next send (receivers throttle and junk such senders)"
            )
        if self.complaint > COMPLAINT_RATE_WARNING:
            found.append(
                f"complaint rate {self.complaint:.2%} is above {COMPLAINT_RATE_WARNING:.1%}: "
                "Gmail and Yahoo junk senders near 0.3%; check consent and the unsubscribe link"
            )
        return found


def rates(*, sent: int, bounced_at_relay: int, later: FeedbackCounts) -> Rates:
    """A campaign's rates: `sent` rows (accepted, whatever came back later), rows the
    relay refused (`bounced_at_relay`), and what came back after acceptance."""
    reached = sent + bounced_at_relay
    return Rates(
        bounce=(bounced_at_relay + later.bounced) / reached if reached else 0.0,
        complaint=later.complained / sent if sent else 0.0,
    )
