"""Subscriber files uploaded in the dashboard, imported in the background.

An upload is saved under `VAR_DIR/uploads/` (never a folder the web server serves), then
imported by `audience.importer.import_file`, the very importer of `mailer subscribers
import`, in one worker thread: a 100,000-row file takes seconds, and the server keeps
answering meanwhile (the page polls the job's progress). Jobs run one at a time, in the
order they came: SQLite has one writer, and an import is one transaction.

A job lives in memory: a restart forgets it, and the import it was running, being one
uncommitted transaction, changes nothing. Its reject file stays under `VAR_DIR/rejects/`.
The uploaded copy is deleted once the import is over, whatever its end.
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mailer.audience.importer import ImportReport, default_rejects_path, import_file
from mailer.clock import utcnow
from mailer.errors import MailerError
from mailer.logs import fields
from mailer.store import Store

log = logging.getLogger("mailer.web.imports")

KEPT_JOBS = 100
"""Finished jobs remembered (their reports and reject files downloadable), oldest dropped."""

ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
"""What the upload form offers: UTF-8 with or without BOM (the default), Windows, ISO."""

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class JobState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class ImportJob:
    """One upload being imported; the worker thread writes, the pages read."""

    id: str
    list_name: str
    filename: str
    """The name the browser gave the file: shown, never used as a path."""
    upload: Path
    rows: int
    """Rows in the file (its lines less the header; a quoted line break counts twice)."""
    started_at: datetime
    state: JobState = JobState.WAITING
    line: int = 0
    report: ImportReport | None = None
    error: str | None = None
    finished_at: datetime | None = field(default=None)

    @property
    def percent(self) -> int:
        if self.state is JobState.DONE:
            return 100
        if self.rows <= 0:
            return 0
        return min(99, (max(self.line - 1, 0) * 100) // self.rows)

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)


def safe_stem(filename: str) -> str:
    """A browser's file name as a file-name stem of our own: `../../x y.csv` -> `x_y`."""
    stem = Path(filename.replace("\\", "/")).stem
    return _UNSAFE_NAME.sub("_", stem).strip("._")[:60] or "upload"


class ImportJobs:
    """The queue of imports: `submit` an upload, `get` a job to show it."""

    def __init__(self, store: Store, *, var_dir: Path) -> None:
        self.store = store
        self.var_dir = var_dir
        self.uploads = var_dir / "uploads"
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-import")

    def new_upload_path(self) -> Path:
        """Where the next upload is written: a fresh name in a folder only we can read."""
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.uploads / f"{secrets.token_hex(16)}.csv"

    def submit(
        self, *, list_name: str, filename: str, upload: Path, rows: int, encoding: str
    ) -> ImportJob:
        job = ImportJob(
            id=secrets.token_urlsafe(16),
            list_name=list_name,
            filename=filename,
            upload=upload,
            rows=rows,
            started_at=utcnow(),
        )
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._executor.submit(self._run, job, encoding)
        return job

    def get(self, job_id: str) -> ImportJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        """Stop taking jobs; wait for the one running (tests: no thread left behind)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.finished]
        for job_id in finished[: max(0, len(self._jobs) - KEPT_JOBS)]:
            del self._jobs[job_id]

    def _run(self, job: ImportJob, encoding: str) -> None:
        job.state = JobState.RUNNING

        def seen(line: int) -> None:
            job.line = line

        rejects = default_rejects_path(Path(safe_stem(job.filename)), self.var_dir)
        try:
            job.report = import_file(
                self.store,
                job.upload,
                list_name=job.list_name,
                rejects_path=rejects,
                encoding=encoding,
                on_line=seen,
            )
            job.state = JobState.DONE
            log.info(
                fields(event="import-finished", list=job.list_name, **job.report.counts.as_dict())
            )
        except MailerError as exc:
            # The organiser's mistake (no email column, a wrong encoding): said on the page,
            # with the browser's file name in place of our copy's.
            job.error = str(exc).replace(str(job.upload), job.filename)
            if exc.hint:
                job.error += f" {exc.hint}"
            job.state = JobState.FAILED
        except Exception:
            log.exception(fields(event="import-crashed", list=job.list_name))
            job.error = "the import stopped on an unexpected error (see the server's log)"
            job.state = JobState.FAILED
        finally:
            job.finished_at = utcnow()
            job.upload.unlink(missing_ok=True)
