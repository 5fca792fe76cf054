"""Progress while sending: a Rich bar in a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from mailer.cli import common

if TYPE_CHECKING:
    from mailer.models import DeliveryCounts
    from mailer.sending.engine import Progress as SendProgress

PLAIN_EVERY = 5.0


def describe(counts: DeliveryCounts) -> str:
    parts = [
        f"{counts.sent} sent",
        f"{counts.deferred} deferred",
        f"{counts.bounced} bounced",
        f"{counts.failed} failed",
        f"{counts.skipped} skipped",
    ]
    if counts.unknown:
        parts.append(f"{counts.unknown} unknown")
    return ", ".join(parts)


class ProgressDisplay:
    def __init__(self, total: int, *, label: str) -> None:
        self.total = total
        self.interactive = common.console.is_terminal
        self._last_plain = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self.label = label

    def __enter__(self) -> ProgressDisplay:
        if self.interactive:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=common.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, detail="", rate="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)

    def update(self, progress: SendProgress) -> None:
        counts = progress.counts
        rate = f"{progress.rate:.1f}/s"
        # Done of all the campaign's rows, once they are known: `done` counts rows done
        # in earlier runs and rows skipped at the snapshot, which the total planned
        # beforehand (what was left to send) did not (a resume read 267/240).
        total = counts.total or self.total
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                total=total,
                completed=counts.done,
                detail=describe(counts),
                rate=rate,
            )
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY:
            self._last_plain = now
            common.console.print(
                f"progress: {counts.done}/{total} done ({describe(counts)}), {rate}",
                markup=False,
            )
