"""Importing a CSV into a list from the browser: the upload, the import's page with its
progress (polled by /static/admin-import.js), its report, and its reject file.

The upload is parsed by Starlette (spooled to the system's temporary folder), copied to
`VAR_DIR/uploads/` with its lines counted, and handed to ImportJobs, which runs the same
importer as `mailer subscribers import` in its own thread; the POST answers at once with
a redirect to the job's page. Nothing uploaded is ever in a folder the server serves: the
reject file is sent by the job's id, from the path the job recorded.

Size: an upload may be UPLOAD_LIMIT bytes. A larger Content-Length is answered with a
page saying so before the body is read (once the session is known to be good); a body
without a length is checked after it arrives; the route's own body limit, twice that,
is the backstop that stops anything larger from being read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mailer.errors import InputError, MailerError, NotFoundError
from mailer.store.admin import AdminRole
from mailer.web.admin.context import Admin
from mailer.web.admin.forms import field
from mailer.web.admin.guard import Endpoint, SignedIn, guard
from mailer.web.admin.import_jobs import ENCODINGS, ImportJob, ImportJobs, safe_stem

UPLOAD_LIMIT = 50_000_000
"""Bytes an uploaded subscriber file may have: about a million rows of address and name."""

_CHUNK = 1 << 20


class FileTooLarge(InputError):
    """An upload over UPLOAD_LIMIT."""


def too_large(size: int | None = None) -> FileTooLarge:
    what = f"The file is {size / 1e6:.1f} MB" if size is not None else "The file is too large"
    return FileTooLarge(
        f"{what}; an upload may be {UPLOAD_LIMIT // 1_000_000} MB at most.",
        hint="Split it into several files (each with the header row) and import them one "
        "after the other, or import it with `mailer subscribers import FILE --list NAME`.",
    )


def copy_counting_lines(source: BinaryIO, target: Path, *, limit: int) -> tuple[int, int]:
    """Copy `source` to a new file `target`: (bytes, lines). FileTooLarge past `limit`
    (and `target` removed)."""
    size = lines = 0
    last = b"\n"
    try:
        with target.open("xb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large(size)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, lines + (0 if last == b"\n" else 1)


class ImportPages:
    def __init__(self, admin: Admin, jobs: ImportJobs) -> None:
        self.admin = admin
        self.jobs = jobs

    def upload(self, request: Request, signed_in: SignedIn) -> Response:
        list_id = int(request.path_params["list_id"])
        list_name = self.admin.store.list_name(list_id)  # NotFoundError: 404
        upload = signed_in.form.get("file")
        encoding = field(signed_in.form, "encoding") or ENCODINGS[0]
        try:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise InputError(
                    "no file was chosen", hint="Choose a CSV file with an `email` column."
                )
            if encoding not in ENCODINGS:
                raise InputError(f"unknown encoding {encoding!r}")
            target = self.jobs.new_upload_path()
            _size, lines = copy_counting_lines(upload.file, target, limit=UPLOAD_LIMIT)
        except MailerError as exc:
            return self.refusal(signed_in, exc, list_id)
        job = self.jobs.submit(
            list_name=list_name,
            filename=upload.filename,
            upload=target,
            rows=max(lines - 1, 0),
            encoding=encoding,
        )
        return self.admin.redirect(f"/admin/imports/{job.id}")

    def refusal(self, signed_in: SignedIn, error: MailerError, list_id: int) -> Response:
        return self.admin.refusal(
            signed_in,
            error,
            title="Nothing was imported",
            section="lists",
            status_code=413 if isinstance(error, FileTooLarge) else 400,
            back=f"/admin/lists/{list_id}",
        )

    def _job(self, request: Request) -> ImportJob:
        job = self.jobs.get(str(request.path_params["job_id"]))
        if job is None:
            raise NotFoundError("no such import (the server may have restarted)")
        return job

    def show(self, request: Request, signed_in: SignedIn) -> Response:
        job = self._job(request)
        try:
            list_id: int | None = self.admin.store.list_id(job.list_name)
        except NotFoundError:  # renamed or deleted since: no link back
            list_id = None
        return self.admin.page(
            signed_in,
            "import.html.j2",
            title=f"Import into {job.list_name}",
            section="lists",
            job=job,
            list_id=list_id,
        )

    def progress(self, request: Request, _signed_in: SignedIn) -> Response:
        job = self._job(request)
        return JSONResponse(
            {
                "state": job.state.value,
                "finished": job.finished,
                "percent": job.percent,
                "line": job.line,
                "rows": job.rows,
            }
        )

    def rejects(self, request: Request, _signed_in: SignedIn) -> Response:
        job = self._job(request)
        path = job.report.rejects_path if job.report is not None else None
        if path is None or not path.is_file():
            raise NotFoundError("this import has no reject file")
        return FileResponse(
            path,
            media_type="text/csv; charset=utf-8",
            filename=f"{safe_stem(job.filename)}-rejects.csv",
        )


def size_checked(admin: Admin, guarded: Endpoint, pages: ImportPages) -> Endpoint:
    """The upload's endpoint: a signed-in organiser's too-large upload is told so from
    its Content-Length, before a byte of it is read; everything else goes to the guard
    (which answers 401/403 without a session, before reading the body too)."""

    async def endpoint(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > UPLOAD_LIMIT:
            session = await run_in_threadpool(admin.sessions.current, request)
            if session is not None and session.user.role.may(AdminRole.ORGANISER):
                signed_in = SignedIn(session=session, form=FormData())
                list_id = int(request.path_params["list_id"])
                error = too_large(int(declared))
                return await run_in_threadpool(pages.refusal, signed_in, error, list_id)
        return await guarded(request)

    endpoint.__name__ = guarded.__name__
    endpoint.required_role = AdminRole.ORGANISER  # type: ignore[attr-defined]
    return endpoint


def routes(admin: Admin) -> list[Route]:
    pages = ImportPages(admin, ImportJobs(admin.store, var_dir=admin.settings.var_dir))
    organiser = AdminRole.ORGANISER
    job = "/admin/imports/{job_id}"
    upload = size_checked(admin, guard(admin, organiser, pages.upload), pages)
    return [
        Route(
            "/admin/lists/{list_id:id}/import",
            upload,
            methods=["POST"],
            max_body_size=2 * UPLOAD_LIMIT,
        ),
        Route(job, guard(admin, organiser, pages.show), methods=["GET"]),
        Route(f"{job}/progress", guard(admin, organiser, pages.progress), methods=["GET"]),
        Route(f"{job}/rejects.csv", guard(admin, organiser, pages.rejects), methods=["GET"]),
    ]
