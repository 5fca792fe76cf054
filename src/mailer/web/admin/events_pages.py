"""Events: the event files under MAILER_TEMPLATES_DIR/events, each with the problems
`mailer validate` finds (file and line), and what one member of a list would receive,
as `mailer preview --list` renders it: the HTML part in a sandboxed frame, the text
part, the calendar file; and a test message ([TEST]) to an address the organiser types,
through campaigns.trial.send_test as `mailer send --test-to` sends it.

The HTML part is the one page here made of text we did not write (an organiser's layout
and Markdown, a subscriber's name): it is served from its own route with its own CSP
(no script at all, styles inline only, `sandbox`) and framed in an <iframe sandbox>
without allow-scripts, so even a template that slipped a script past the sanitiser
could run nothing and reach neither the dashboard's cookies nor its pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mailer.campaigns.preview import (
    Preview,
    check_event,
    event_files,
    member_recipient,
    render_preview,
)
from mailer.campaigns.trial import send_test
from mailer.errors import InputError, MailerError, NotFoundError
from mailer.message.event import Event
from mailer.message.lint import LintReport
from mailer.models import Outcome, Recipient
from mailer.preflight import check_real_send
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.forms import field, query_int, query_text
from mailer.web.admin.guard import SignedIn, guard

PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'; form-action 'none'; base-uri 'none'; sandbox"
)
"""The framed HTML part: no script of any kind, its own inline styles (mail HTML is
styled inline), remote images as a mail program shows them; only we may frame it."""

SAMPLE = Recipient(0, "someone@example.org", "Sample Subscriber", {})
"""Who a preview is for when no list is chosen and no list has members."""

MEMBERS_OFFERED = 50


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of the checks, where it is: `where` is file:line under the templates."""

    where: str
    message: str
    hint: str | None


@dataclass(frozen=True, slots=True)
class Look:
    """What the event page shows for one choice of list and subscriber."""

    path: Path
    report: LintReport
    list_id: int | None
    list_name: str | None
    subscriber: str
    recipient: Recipient | None
    preview: Preview | None
    trouble: Problem | None


class EventPages:
    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.store = admin.store
        self.settings = admin.settings

    def _where(self, error: InputError) -> str:
        if error.path is None:
            return ""
        path = error.path
        with contextlib.suppress(ValueError):  # outside the templates folder: as it is
            path = path.resolve().relative_to(self.settings.templates_dir.resolve())
        return f"{path}:{error.line}" if error.line is not None else str(path)

    def problems(self, errors: list[InputError]) -> list[Problem]:
        return [Problem(self._where(e), e.message, e.hint) for e in errors]

    def _path(self, slug: str) -> Path:
        """The event file of this name: looked up among the files, never built from input."""
        for path in event_files(self.settings.templates_dir):
            if path.stem == slug:
                return path
        raise NotFoundError(f"no event file {slug!r}")

    def index(self, _request: Request, signed_in: SignedIn) -> Response:
        now = self.admin.now()
        rows = [
            (path, check_event(self.store, self.settings, path, list_name=None, now=now))
            for path in event_files(self.settings.templates_dir)
        ]
        return self.admin.page(
            signed_in,
            "events.html.j2",
            title="Events",
            section="events",
            rows=rows,
            folder=self.settings.templates_dir / "events",
        )

    def _look(self, request: Request, *, list_id: int | None, subscriber: str) -> Look:
        path = self._path(str(request.path_params["slug"]))
        list_name = None
        if list_id is None:  # the first list with members, as a preview needs someone
            for count in self.store.list_counts():
                if count.subscribed:
                    list_id, list_name = count.id, count.name
                    break
        else:
            list_name = self.store.list_name(list_id)
        report = check_event(
            self.store, self.settings, path, list_name=list_name, now=self.admin.now()
        )
        recipient, preview, trouble = None, None, None
        if report.event is not None and not report.errors:
            try:
                recipient = (
                    member_recipient(self.store, list_name, subscriber.strip() or None)
                    if list_name is not None
                    else SAMPLE
                )
                preview = render_preview(
                    self.settings, report.event, recipient, list_name=list_name
                )
            except InputError as exc:
                trouble = Problem(self._where(exc), exc.message, exc.hint)
            except MailerError as exc:
                trouble = Problem("", str(exc), exc.hint)
        return Look(path, report, list_id, list_name, subscriber, recipient, preview, trouble)

    def _chosen(self, request: Request) -> tuple[int | None, str]:
        return query_int(request, "list"), query_text(request, "subscriber", limit=320)

    def show(self, request: Request, signed_in: SignedIn) -> Response:
        list_id, subscriber = self._chosen(request)
        look = self._look(request, list_id=list_id, subscriber=subscriber)
        event = look.report.event
        members = (
            self.store.search_subscribers(
                list_name=look.list_name, only_subscribed=True, limit=MEMBERS_OFFERED
            ).subscribers
            if look.list_name is not None
            else []
        )
        return self.admin.page(
            signed_in,
            "event.html.j2",
            title=event.title if event is not None else look.path.name,
            section="events",
            look=look,
            event=event,
            slug=look.path.stem,
            errors=self.problems(look.report.errors),
            warnings=self.problems(look.report.warnings),
            lists=self.store.list_counts(),
            members=members,
            ics=look.preview.ics.decode("utf-8", "replace") if look.preview else "",
            sent=None,
        )

    def frame(self, request: Request, _signed_in: SignedIn) -> Response:
        """The HTML part alone, for the preview's <iframe sandbox>."""
        list_id, subscriber = self._chosen(request)
        look = self._look(request, list_id=list_id, subscriber=subscriber)
        html = look.preview.html if look.preview is not None else _NOTHING
        return HTMLResponse(
            html,
            headers={"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"},
        )

    def ics(self, request: Request, _signed_in: SignedIn) -> Response:
        list_id, subscriber = self._chosen(request)
        look = self._look(request, list_id=list_id, subscriber=subscriber)
        if look.preview is None:
            raise NotFoundError("the event has problems: no calendar file")
        return Response(
            look.preview.ics,
            media_type="text/calendar; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_ascii(look.path.stem)}.ics"'},
        )

    def send_test(self, request: Request, signed_in: SignedIn) -> Response:
        form = signed_in.form
        list_id = int(field(form, "list")) if field(form, "list").isdigit() else None
        personalise_as = field(form, "subscriber").strip()
        to = field(form, "to").strip()
        path = self._path(str(request.path_params["slug"]))
        back = f"/admin/events/{path.stem}"
        try:
            if list_id is None:
                raise InputError("choose the list the test is personalised from")
            list_name = self.store.list_name(list_id)
            if not to:
                raise InputError("type the address the test goes to")
            report = check_event(
                self.store, self.settings, path, list_name=list_name, now=self.admin.now()
            )
            if report.errors:
                raise report.errors[0]
            assert report.event is not None
            check_real_send(self.settings)  # before any connection, as the CLI's test send
            outcome = asyncio.run(
                self._send(report.event, list_name=list_name, to=to, sample=personalise_as)
            )
        except MailerError as exc:
            return self.admin.refusal(
                signed_in,
                exc,
                title="The test was not sent",
                section="events",
                status_code=400 if isinstance(exc, InputError) else 409,
                back=back,
            )
        return self.admin.page(
            signed_in,
            "event_test.html.j2",
            title="Test message",
            section="events",
            to=to,
            outcome=outcome,
            back=f"{back}?list={list_id}",
        )

    async def _send(self, event: Event, *, list_name: str, to: str, sample: str) -> Outcome:
        from mailer.sending.relays import transport_for

        # Through MAILER_RELAYS when set, as a campaign would go (issue 15).
        async with transport_for(self.settings, self.store) as transport:
            sent = await send_test(
                self.store,
                settings=self.settings,
                transport=transport,
                event=event,
                list_name=list_name,
                to=to,
                signer=self.admin.signer,
                personalise_as=sample or None,
            )
        return sent.outcome


_NOTHING = "<!doctype html><title>No preview</title><p>No preview: see the problems listed.</p>"


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)


def routes(admin: Admin) -> list[Route]:
    pages = EventPages(admin)
    # Addresses, names and personalised messages: organisers only (issue 13: a viewer
    # reads the overview and the reports).
    organiser = AdminRole.ORGANISER
    one = "/admin/events/{slug}"
    return [
        Route("/admin/events", guard(admin, organiser, pages.index), methods=["GET"]),
        Route(one, guard(admin, organiser, pages.show), methods=["GET"]),
        Route(f"{one}/preview.html", guard(admin, organiser, pages.frame), methods=["GET"]),
        Route(f"{one}/invite.ics", guard(admin, organiser, pages.ics), methods=["GET"]),
        Route(f"{one}/test", guard(admin, organiser, pages.send_test), methods=["POST"]),
    ]
