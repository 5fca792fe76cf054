"""GET /c/{token}.ics: a campaign's calendar invite, the short "add to calendar" link.

The token names the campaign only (tokens.sign_calendar), so it is the same in every
recipient's message and says nothing about who opened it. The invite is rebuilt from the
campaign's event file on each request, with the UID the mailed invite had, so opening
the link adds (or updates) the same calendar entry as the attachment. GET changes
nothing; a bad token, a campaign that does not exist and an event file that can no
longer be read all get the app's plain 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mailer.config import Settings
from mailer.errors import InputError, NotFoundError, TokenError
from mailer.message.calendar import MEDIA_TYPE, build_ics
from mailer.message.compose import ascii_address
from mailer.message.event import Event, load_event
from mailer.models import CampaignRecord
from mailer.store import Store
from mailer.tokens import TokenSigner
from mailer.web.store_threads import StoreThreads

logger = logging.getLogger("mailer.web")

SequenceOf = Callable[[CampaignRecord, Event], int]


def no_revision(_campaign: CampaignRecord, _event: Event) -> int:
    """SEQUENCE 0, what every invite carried before SEQUENCE was computed."""
    return 0


class CalendarFeed:
    """Serves the .ics of the campaign a calendar token names.

    `sequence_of`: the SEQUENCE to write for this campaign's event as its file reads now;
    it must agree with what the sender put in the mailed invite (calendar.revision).
    """

    def __init__(
        self,
        *,
        store: Store,
        signer: TokenSigner,
        settings: Settings,
        sequence_of: SequenceOf = no_revision,
        threads: StoreThreads | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.sequence_of = sequence_of
        # The UID's domain and the URL fallback are the sender's, as in compose.py.
        self.domain = ascii_address(settings.from_address, field="from_address").rpartition("@")[2]
        self.base_url = settings.base_url
        self._threads = threads or StoreThreads()

    async def ics(self, request: Request) -> Response:
        try:
            campaign_id = self.signer.verify_calendar(str(request.path_params["token"]))
        except TokenError:
            raise HTTPException(status_code=404) from None
        # Reading the store and the event file, and building, all block: one thread hop.
        data = await self._threads.run(self._build, campaign_id)
        if data is None:
            raise HTTPException(status_code=404)
        return Response(
            data,
            media_type=MEDIA_TYPE,
            headers={
                "Content-Disposition": 'attachment; filename="invite.ics"',
                # Rebuilt from the event file each time: a corrected event shows at once.
                "Cache-Control": "no-cache",
            },
        )

    def _build(self, campaign_id: int) -> bytes | None:
        try:
            campaign = self.store.get_campaign(campaign_id)
        except NotFoundError:
            return None
        try:
            event = load_event(Path(campaign.event_path))
        except InputError as exc:
            # The organiser moved or broke the file since; the link cannot be served.
            logger.warning("calendar link of campaign %d: %s", campaign_id, exc)
            return None
        return build_ics(
            event,
            domain=self.domain,
            url=event.url or event.map_url or self.base_url,
            sequence=self.sequence_of(campaign, event),
        )
