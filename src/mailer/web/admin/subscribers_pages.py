"""Subscribers: search every list by address or name; one subscriber's page (their lists,
status and history, as `mailer subscribers show` prints them); add them to another
list, unsubscribe, resubscribe with a reason, and erase after a confirmation page.

A subscriber is named in paths by id, never by address: paths reach logs and browser
history. Every change goes through the store function the CLI command uses, with its
checks: an import or an add never brings back someone who left; a complaint is lifted
only when the organiser ticks the box the CLI's --force stands for.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.audience.history import describe_change
from mailer.errors import InputError, MailerError
from mailer.models import (
    HistoryEntry,
    SubscriberRecord,
    SubscriberStatus,
    UnsubscribeSource,
)
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.forms import field, notice, query_int, query_text
from mailer.web.admin.guard import SignedIn, guard

EVERY_LIST = ""
"""The unsubscribe form's value for "from every list" (no list name is empty)."""


def history_text(entry: HistoryEntry) -> str:
    """What happened, where, how and from which campaign (the CLI's words, without the
    time, which the page shows in its own column)."""
    return describe_change(entry, list_label=f"list {entry.list_name}")


class SubscriberPages:
    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.store = admin.store

    def search(self, request: Request, signed_in: SignedIn) -> Response:
        words = query_text(request, "q")
        after = query_int(request, "after") or 0
        found = self.store.search_subscribers(words, after=after) if words else None
        return self.admin.page(
            signed_in,
            "subscribers.html.j2",
            title="Find a subscriber",
            section="lists",
            words=words,
            after=after,
            found=found,
            notice=notice(request),
        )

    def _record(self, request: Request) -> tuple[int, SubscriberRecord]:
        subscriber_id = int(request.path_params["subscriber_id"])
        subscriber = self.store.subscriber_by_id(subscriber_id)  # NotFoundError: 404
        return subscriber_id, self.store.subscriber_record(subscriber.email)

    def show(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        assert record.subscriber is not None
        on = {m.list_name for m in record.memberships}
        subscribed_on = [
            m.list_name for m in record.memberships if m.status is SubscriberStatus.SUBSCRIBED
        ]
        every_list = [summary.name for summary in self.store.lists()]
        return self.admin.page(
            signed_in,
            "subscriber.html.j2",
            title=record.subscriber.email,
            section="lists",
            subscriber_id=subscriber_id,
            record=record,
            subscriber=record.subscriber,
            history=[(entry, history_text(entry)) for entry in record.history],
            subscribed_on=subscribed_on,
            other_lists=[name for name in every_list if name not in on],
            every_list=every_list,
            list_ids={count.name: count.id for count in self.store.list_counts()},
            notice=notice(request),
            every_list_value=EVERY_LIST,
        )

    def _back(self, subscriber_id: int, done: str) -> Response:
        return self.admin.redirect(f"/admin/subscribers/{subscriber_id}?done={done}")

    def _refused(self, signed_in: SignedIn, error: MailerError, subscriber_id: int) -> Response:
        return self.admin.refusal(
            signed_in,
            error,
            title="Nothing was changed",
            section="lists",
            status_code=400 if isinstance(error, InputError) else 409,
            back=f"/admin/subscribers/{subscriber_id}",
        )

    def add(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        assert record.subscriber is not None
        try:
            added = self.store.add_subscriber(
                record.subscriber.email, field(signed_in.form, "list"), name=""
            )
        except MailerError as exc:
            return self._refused(signed_in, exc, subscriber_id)
        return self._back(subscriber_id, "added" if added else "already")

    def unsubscribe(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        chosen = field(signed_in.form, "list")
        try:
            changed = self.store.unsubscribe_email(
                record.email, chosen or None, source=UnsubscribeSource.ADMIN
            )
        except MailerError as exc:
            return self._refused(signed_in, exc, subscriber_id)
        return self._back(subscriber_id, "unsubscribed" if changed else "already-unsubscribed")

    def resubscribe(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        form = signed_in.form
        try:
            done = self.store.admin_resubscribe(
                record.email,
                field(form, "list"),
                reason=field(form, "reason"),
                force=field(form, "force") == "yes",
            )
        except MailerError as exc:
            return self._refused(signed_in, exc, subscriber_id)
        return self._back(subscriber_id, "resubscribed" if done.changed else "unchanged")

    def confirm_erase(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        return self.admin.page(
            signed_in,
            "erase.html.j2",
            title=f"Erase {record.email}?",
            section="lists",
            subscriber_id=subscriber_id,
            record=record,
        )

    def erase(self, request: Request, signed_in: SignedIn) -> Response:
        subscriber_id, record = self._record(request)
        if field(signed_in.form, "confirm") != "erase":
            return self.admin.redirect(f"/admin/subscribers/{subscriber_id}/erase")
        self.store.remove_subscriber(record.email)
        return self.admin.redirect("/admin/subscribers?done=erased")


def routes(admin: Admin) -> list[Route]:
    pages = SubscriberPages(admin)
    # Addresses, names and personalised messages: organisers only (issue 13: a viewer
    # reads the overview and the reports).
    organiser = AdminRole.ORGANISER
    one = "/admin/subscribers/{subscriber_id:id}"
    return [
        Route("/admin/subscribers", guard(admin, organiser, pages.search), methods=["GET"]),
        Route(one, guard(admin, organiser, pages.show), methods=["GET"]),
        Route(f"{one}/lists", guard(admin, organiser, pages.add), methods=["POST"]),
        Route(f"{one}/unsubscribe", guard(admin, organiser, pages.unsubscribe), methods=["POST"]),
        Route(f"{one}/resubscribe", guard(admin, organiser, pages.resubscribe), methods=["POST"]),
        Route(f"{one}/erase", guard(admin, organiser, pages.confirm_erase), methods=["GET"]),
        Route(f"{one}/erase", guard(admin, organiser, pages.erase), methods=["POST"]),
    ]
