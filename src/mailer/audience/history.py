"""A subscriber's history in words: one sentence per change, for `mailer subscribers show`
and the dashboard's subscriber page alike."""

from __future__ import annotations

from mailer.models import HistoryEntry, SuppressionReason, UnsubscribeSource

_HOW = {
    UnsubscribeSource.ONE_CLICK: "one-click button in the mail program",
    UnsubscribeSource.PAGE: "unsubscribe page",
    UnsubscribeSource.ADMIN: "by the organiser",
    UnsubscribeSource.MAILTO: "by email",
    UnsubscribeSource.BOUNCE: "the address bounced",
    UnsubscribeSource.FEEDBACK_LOOP: "marked a message as spam",
    UnsubscribeSource.IMPORT: "import",
}


def describe_change(entry: HistoryEntry, *, list_label: str) -> str:
    """What happened, where, how and from which campaign, without the time: `list_label`
    names the list as the caller shows names (the CLI quotes them, a page does not)."""
    where = list_label if entry.list_name else "every list"
    if entry.reason is SuppressionReason.RESUBSCRIBED:
        return f"resubscribed to {where} by the organiser: {entry.detail}"
    what = {
        SuppressionReason.UNSUBSCRIBED: f"unsubscribed from {where}",
        SuppressionReason.BOUNCED: f"bounced (off {where})",
        SuppressionReason.COMPLAINED: f"complained, marked as spam (off {where})",
        SuppressionReason.MANUAL: f"suppressed from {where}",
    }[entry.reason]
    how = _HOW.get(entry.source, entry.source.value)
    if entry.campaign_id is not None:
        how += f", campaign {entry.campaign_id}"
    text = f"{what} ({how})"
    if entry.detail:
        text += f": {entry.detail}"
    return text
