"""A campaign's subject as an organiser reads it in a list: personal fields as stand-ins.

A campaign stores its subject as written, `Invitation for {{ subscriber.first_name }}`. Shown
raw in `campaign list` or the dashboard, the braces read as a fault. Rendered for one
member, every listing would show one person's name for a message sent to hundreds (and
cost a store query and the event's templates per campaign). So the subject is rendered
once, alone, with stand-ins: `Invitation for [first name]`.

Cheap by construction: a subject without `{` is returned as it is (no Jinja at all), and
the rendering of each distinct subject is cached, so a listing of many campaigns of a few
events compiles a few templates. Anything else the subject uses (`event.title`, dates)
is not known without reading the event file, so such a subject, or one that no longer
renders (a sandbox limit, an error in the template), is shown as written: a listing never
fails for one campaign's template.
"""

from __future__ import annotations

from functools import lru_cache

from mailer.message.sandbox import RENDER_FAILURES, BoundedSandbox
from mailer.message.sandbox import render as render_bounded
from mailer.message.templating import make_environment
from mailer.models import CampaignRecord

STAND_INS = {"name": "[name]", "first_name": "[first name]", "email": "[email]"}
"""What the subscriber's own fields read as; a column of the list reads as `[column]`."""


class _ColumnStandIns(dict[str, str]):
    """`subscriber.attributes.city` -> `[city]`: every column reads as its own name."""

    def __missing__(self, key: str) -> str:
        return f"[{key}]"


def readable_subject(subject: str, *, list_name: str = "") -> str:
    """`subject` with personal fields as stand-ins, or as written if it cannot be shown so."""
    if "{" not in subject:
        return subject
    return _rendered(subject, list_name)


def campaign_subject(campaign: CampaignRecord) -> str:
    """The campaign's subject as listings show it; `list_name` is what its messages say
    (the list's title, else its name, as compose.InvitationBuilder gives the templates)."""
    return readable_subject(campaign.subject, list_name=campaign.list_title or campaign.list_name)


@lru_cache(maxsize=512)
def _rendered(subject: str, list_name: str) -> str:
    try:
        template = _environment().compile_template(subject)
        text = render_bounded(
            template,
            subscriber={**STAND_INS, "attributes": _ColumnStandIns()},
            list_name=list_name,
        )
    except RENDER_FAILURES:  # from the template's own doing: shown as written
        return subject
    # As the sender does (render.Renderer.render): runs of white space become one space.
    return " ".join(text.split()) or subject


@lru_cache(maxsize=1)
def _environment() -> BoundedSandbox:
    return make_environment(html=False)
