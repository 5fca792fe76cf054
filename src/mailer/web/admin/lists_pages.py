"""Lists: every list with its counts; one list's page (title, description, members found
by address or name, a page at a time); create, rename, describe, add a subscriber, and
export, through the very store functions and checks of `mailer lists` and `mailer
subscribers` (checked_list_name, checked_title, ... in store/lists.py).

Reading is for every signed-in user; changing, and the export (every member's address in
one file), for organisers only.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mailer.audience.export import export_csv
from mailer.errors import InputError, MailerError
from mailer.models import ListSummary
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.forms import field, notice, query_int, query_text
from mailer.web.admin.guard import SignedIn, guard
from mailer.web.admin.import_jobs import ENCODINGS
from mailer.web.admin.imports_pages import UPLOAD_LIMIT

_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ListPages:
    def __init__(self, admin: Admin, *, upload_limit: int) -> None:
        self.admin = admin
        self.store = admin.store
        self.upload_limit = upload_limit

    # -- reading ------------------------------------------------------------------------

    def index(self, request: Request, signed_in: SignedIn) -> Response:
        return self._index(signed_in, notice_text=notice(request))

    def _index(
        self,
        signed_in: SignedIn,
        *,
        notice_text: str | None = None,
        error: MailerError | None = None,
        entered: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        ids = {count.name: count.id for count in self.store.list_counts()}
        summaries = [(ids[s.name], s) for s in self.store.lists() if s.name in ids]
        return self.admin.page(
            signed_in,
            "lists.html.j2",
            title="Lists",
            section="lists",
            status_code=status_code,
            lists=summaries,
            notice=notice_text,
            error=error,
            entered=entered or {"name": "", "title": "", "description": ""},
        )

    def summary(self, list_id: int) -> ListSummary:
        (found,) = self.store.lists(self.store.list_name(list_id))
        return found

    def show(self, request: Request, signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        summary = self.summary(list_id)  # NotFoundError: the guard answers 404
        words = query_text(request, "q")
        after = query_int(request, "after") or 0
        found = self.store.search_subscribers(words, list_name=summary.name, after=after)
        return self.admin.page(
            signed_in,
            "list.html.j2",
            title=summary.title or summary.name,
            section="lists",
            list_id=list_id,
            summary=summary,
            words=words,
            after=after,
            found=found,
            notice=notice(request),
            encodings=ENCODINGS,
            upload_limit_mb=self.upload_limit // 1_000_000,
        )

    # -- changing -----------------------------------------------------------------------

    def create(self, _request: Request, signed_in: SignedIn) -> Response:
        form = signed_in.form
        entered = {key: field(form, key) for key in ("name", "title", "description")}
        try:
            # The title is what recipients read; the CLI defaults it to the name too.
            change = self.store.create_list(
                entered["name"],
                title=entered["title"].strip() or entered["name"],
                description=entered["description"] or None,
            )
        except MailerError as exc:
            return self._index(signed_in, error=exc, entered=entered, status_code=400)
        return self.admin.redirect(f"/admin/lists/{self.store.list_id(change.name)}?done=created")

    def describe(self, request: Request, signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        name = self.store.list_name(list_id)
        form = signed_in.form
        try:
            self.store.describe_list(
                name, title=field(form, "title"), description=field(form, "description")
            )
        except MailerError as exc:
            return self._refused(signed_in, exc, list_id, "The list was not changed")
        return self.admin.redirect(f"/admin/lists/{list_id}?done=described")

    def rename(self, request: Request, signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        name = self.store.list_name(list_id)
        try:
            self.store.rename_list(name, field(signed_in.form, "name"))
        except MailerError as exc:
            return self._refused(signed_in, exc, list_id, "The list was not renamed")
        return self.admin.redirect(f"/admin/lists/{list_id}?done=renamed")

    def add(self, request: Request, signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        name = self.store.list_name(list_id)
        form = signed_in.form
        try:
            added = self.store.add_subscriber(field(form, "email"), name, name=field(form, "name"))
        except MailerError as exc:
            return self._refused(signed_in, exc, list_id, "Not added")
        return self.admin.redirect(f"/admin/lists/{list_id}?done={'added' if added else 'already'}")

    def export(self, request: Request, _signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        name = self.store.list_name(list_id)
        filename = _FILENAME_UNSAFE.sub("_", name).strip("._")[:60] or "list"
        return StreamingResponse(
            export_csv(self.store, name),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )

    def _refused(
        self, signed_in: SignedIn, error: MailerError, list_id: int, title: str
    ) -> Response:
        status = 400 if isinstance(error, InputError) else 409
        return self.admin.refusal(
            signed_in,
            error,
            title=title,
            section="lists",
            status_code=status,
            back=f"/admin/lists/{list_id}",
        )


def routes(admin: Admin) -> list[Route]:
    pages = ListPages(admin, upload_limit=UPLOAD_LIMIT)
    # Addresses, names and personalised messages: organisers only (issue 13: a viewer
    # reads the overview and the reports).
    organiser = AdminRole.ORGANISER
    one = "/admin/lists/{list_id:id}"
    return [
        Route("/admin/lists", guard(admin, organiser, pages.index), methods=["GET"]),
        Route("/admin/lists", guard(admin, organiser, pages.create), methods=["POST"]),
        Route(one, guard(admin, organiser, pages.show), methods=["GET"]),
        Route(f"{one}/describe", guard(admin, organiser, pages.describe), methods=["POST"]),
        Route(f"{one}/rename", guard(admin, organiser, pages.rename), methods=["POST"]),
        Route(f"{one}/subscribers", guard(admin, organiser, pages.add), methods=["POST"]),
        Route(f"{one}/export.csv", guard(admin, organiser, pages.export), methods=["GET"]),
    ]
