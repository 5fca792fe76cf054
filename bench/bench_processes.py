"""One campaign from 2 processes vs 1, end to end, into the minimal SMTP sink (issue 15).

Each run imports N subscribers into a fresh store (untimed): a SQLite file, or with
`--database postgresql` a database of its own on the local PostgreSQL
(MAILER_BENCH_POSTGRES, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres),
dropped afterwards. Then it times the campaign of templates/events/london-public-meeting.md
from the call to its return:

- 1 process: `send_campaign_via_smtp` alone (what `mailer send --processes 1` runs);
- 2 processes: the same coordinator plus one helper process started as `mailer send
  --processes 2` starts it (mailer.campaigns.senders: spawn, claim batches, shared
  rate), its start-up included; the coordinator returns once the helper's batches are
  recorded.

The sink is bench_send.py's minimal one (a hand-written asyncio ESMTP responder in its own
process): aiosmtplib, not the sink, is the bottleneck, so the sender's own cost shows.
Both modes run in the same invocation, interleaved, a fresh sink each; the ratio is the
median of the per-run ratios (target >= 1.6). The ledger must say N sent and the sink must
have accepted N, else the run is refused (a lost message would flatter the rate).

Each run also prints every sender process's peak RSS and how much of the run its database
statements took: the time inside the driver's execute calls (SQLAlchemy's cursor events),
summed per process, as a share of the run's wall clock: claiming batches, marking rows
`sending`, recording outcomes, booking rate slots, renewing leases, everything.

On PostgreSQL, `--server-time` also gives the server's own time for the run's statements
(what pg_stat_statements would sum, without preloading it into the shared server): the
run's database gets `log_min_duration_statement = 0` (and no parameters logged), and the
server log's `duration:` lines for that database inside the timed window are added up,
by statement kind. This leaves out what the client-side figure counts on top (the round
trip, the driver, and a store thread's wait for the GIL behind a busy event loop).
It needs the server log readable here (`--server-log`, Debian's path by default) with the
database name in `log_line_prefix` (Debian's default `%m [%p] %q%u@%d `).

The moonshot (issue 15): 1,000,000 invitations with 2 processes in under 4 minutes
(>= 4,200/s), RSS per process under 200 MB; on PostgreSQL the database statements under
15% of the run:

    .venv/bin/python bench/bench_processes.py --recipients 1000000 --runs 1 --only 2
    .venv/bin/python bench/bench_processes.py --recipients 1000000 --runs 1 --only 2 \
        --database postgresql

Run: .venv/bin/python bench/bench_processes.py [--recipients 20000] [--runs 3]
     [--database sqlite|postgresql] [--only 1|2] [--statements] [--server-time]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_send import CHILD_ENV, EVENT, Sink, _settings, _write_csv, load

TARGET = 1.6
MOONSHOT_RATE = 4200.0
RSS_TARGET_MB = 200.0
STATEMENTS_TARGET = 0.15
POSTGRES = os.environ.get(
    "MAILER_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SERVER_LOG = "/var/log/postgresql/postgresql-15-main.log"
# Where a helper process writes its figures when it ends (set by the child before spawn,
# inherited by the helper).
_FIGURES_ENV = "MAILER_BENCH_FIGURES"
_FIRST_SEND_ENV = "MAILER_BENCH_FIRST_SEND"


# -- database statements' time, per process ---------------------------------------------


class StatementClock:
    """Seconds spent inside the driver's execute calls, from SQLAlchemy's documented
    before/after_cursor_execute events on every engine of this process (all threads)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.statements = 0
        self.by_kind: dict[str, float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        spent = time.perf_counter() - conn.info["bench_started"].pop()
        kind = " ".join(statement.split()[:5])[:70]
        with self._lock:
            self.seconds += spent
            self.statements += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0.0) + spent

    def figures(self, wall: float, cpu: float) -> dict[str, Any]:
        top = sorted(self.by_kind.items(), key=lambda item: -item[1])[:6]
        return {
            "cpu": cpu,
            "statements": self.seconds,
            "count": self.statements,
            "wall": wall,
            "rss": _peak_rss_mb(),
            "top": top,
        }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """This process's user + system CPU time, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_helper(settings: Any, campaign_id: int, parent: int) -> None:
    """The helper process (spawn target): mailer's own helper_main, its statements timed,
    its figures written to a file when it ends."""
    from mailer.campaigns.senders import helper_main

    clock = StatementClock()
    clock.install()
    started = time.perf_counter()
    cpu = _cpu_seconds()
    try:
        helper_main(settings, campaign_id, parent)
    finally:
        figures = clock.figures(time.perf_counter() - started, _cpu_seconds() - cpu)
        Path(os.environ[_FIGURES_ENV]).write_text(json.dumps(figures))


# -- one run (a child process) ----------------------------------------------------------


@contextmanager
def fresh_database(database: str, tmp: Path, *, log_statements: bool = False) -> Iterator[str]:
    """The run's store: a SQLite file in `tmp`, or a PostgreSQL database of its own (every
    statement on it logged with its duration if `log_statements`)."""
    if database == "sqlite":
        yield f"sqlite:///{tmp / 'mailer.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"mailer_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        if log_statements:  # for this database's new sessions only
            connection.execute(text(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0'))
            connection.execute(text(f'ALTER DATABASE "{name}" SET log_parameter_max_length = 0'))
    try:
        yield make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def child(port: int, count: int, processes: int, database: str, log_statements: bool) -> None:
    """Import `count` subscribers (untimed), then send with `processes` processes; print
    the figures as one JSON line."""
    from mailer.audience.importer import import_file
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.campaigns.senders import Children
    from mailer.message.event import load_event
    from mailer.sending.run import send_campaign_via_smtp
    from mailer.store import Store
    from mailer.store.signer import load_signer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with fresh_database(database, tmp, log_statements=log_statements) as url:
            settings = _settings(tmp, port).model_copy(update={"database_url": url})
            store = Store.open(url)
            csv_path = tmp / "members.csv"
            _write_csv(csv_path, count)
            report = import_file(
                store, csv_path, list_name="members", rejects_path=tmp / "rejects.csv"
            )
            assert report.counts.imported == count, report.counts
            csv_path.unlink()
            # --new as the earlier sessions' figures were made; --first-send: a plain
            # invitation, whose marking also looks for the event's other campaigns.
            first_send = os.environ.get(_FIRST_SEND_ENV) == "1"
            campaign = start_or_resume(
                store,
                event_path=EVENT,
                event=load_event(EVENT),
                list_name="members",
                new=not first_send,
            ).campaign
            signer = load_signer(settings)
            clock = StatementClock()
            clock.install()
            figures_file = tmp / "helper.json"
            os.environ[_FIGURES_ENV] = str(figures_file)
            children = Children()
            window_start = time.time()
            started = time.perf_counter()
            cpu = _cpu_seconds()
            children.start(timed_helper, settings, campaign.id, count=processes - 1)
            result = asyncio.run(
                send_campaign_via_smtp(
                    settings=settings, store=store, signer=signer, campaign_id=campaign.id
                )
            )
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu
            window_end = time.time()
            children.stop()
            children.join(timeout=60)
            counts = store.delivery_counts(campaign.id)
            store.close()
            assert counts.sent == count, f"ledger: {counts}"
            assert result.reason.value == "finished", result.message
            senders = [clock.figures(elapsed, cpu)]
            if processes > 1:
                senders.append(json.loads(figures_file.read_text()))
            figures = {
                "sent": counts.sent,
                "elapsed": elapsed,
                "helped": count - result.progress.sent_this_run,
                "senders": senders,
                "database": make_url_database(url),
                "window": [window_start, window_end],
            }
            print(json.dumps(figures))


def make_url_database(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


_LOGGED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] \S*@(\S+) LOG:  "
    r"duration: ([\d.]+) ms  (?:(?:parse|bind|execute) [^:]*|statement): (.*)$"
)


def server_time(log: Path, database: str, window: list[float]) -> tuple[float, dict[str, float]]:
    """Seconds the server spent on `database`'s statements inside `window` (epoch seconds),
    in all and by kind (the statement's first words), from its log's `duration:` lines."""
    total = 0.0
    kinds: dict[str, float] = {}
    start, end = window
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            found = _LOGGED.match(line)
            if found is None or found.group(2) != database:
                continue
            stamp = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f")
            at = stamp.replace(tzinfo=UTC).timestamp()
            if not start <= at <= end:
                continue
            seconds = float(found.group(3)) / 1000
            kind = " ".join(found.group(4).split()[:5])[:70]
            total += seconds
            kinds[kind] = kinds.get(kind, 0.0) + seconds
    return total, kinds


def measure(
    processes: int,
    count: int,
    database: str,
    *,
    statements: bool = False,
    server_log: Path | None = None,
    first_send: bool = False,
) -> tuple[float, str]:
    sink = Sink("minimal")
    sink_cpu = 0.0
    try:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(sink.port),
                str(count),
                str(processes),
                database,
                "1" if server_log is not None else "0",
            ],
            capture_output=True,
            text=True,
            env={**CHILD_ENV, _FIRST_SEND_ENV: "1" if first_send else "0"},
            check=False,
        )
        sink_cpu = sink.cpu_seconds()  # from its start: setting up costs next to nothing
    finally:
        accepted = sink.stop()
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr}")
    figures = json.loads(done.stdout.splitlines()[-1])
    if figures["sent"] != count or accepted != count:
        raise SystemExit(
            f"{processes} process(es): sent {figures['sent']}, sink got {accepted} of {count}"
        )
    elapsed = figures["elapsed"]
    shares = " ".join(
        f"{s['statements'] / s['wall']:.0%} of {s['wall']:.0f} s ({s['count']:,} statements)"
        for s in figures["senders"]
    )
    peaks = [s["rss"] for s in figures["senders"]]
    over = "" if max(peaks) < RSS_TARGET_MB else f" (over {RSS_TARGET_MB:.0f})"
    # CPU time per message: what other work on the machine disturbs least (compare runs
    # of two trees by this as much as by messages/s).
    cpu = " + ".join(f"{s['cpu'] / count * 1e6:.0f}" for s in figures["senders"])
    detail = (
        f"{elapsed:7.2f} s, CPU µs/msg senders {cpu}, sink {sink_cpu / count * 1e6:.0f}; "
        f"helper sent {figures['helped']:,}; peak RSS per process "
        f"{' / '.join(f'{peak:.0f}' for peak in peaks)} MB{over}; "
        f"database statements {shares}"
    )
    if server_log is not None:
        spent, kinds = server_time(server_log, figures["database"], figures["window"])
        detail += (
            f"; server time {spent:.1f} s, {spent / elapsed / processes:.0%} of each "
            f"process's run on average ({spent / elapsed:.0%} of the run in all)"
        )
        for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1])[:6]:
            detail += f"\n    server: {seconds:6.2f} s  {kind}"
    if statements:  # where the database time went, per process: the costliest kinds
        for n, sender in enumerate(figures["senders"]):
            for kind, seconds in sender["top"]:
                detail += f"\n    process {n + 1}: {seconds:6.2f} s  {kind}"
    return count / elapsed, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--only", type=int, choices=(1, 2), help="run one mode, no ratio")
    parser.add_argument(
        "--statements", action="store_true", help="print each process's costliest statements"
    )
    parser.add_argument(
        "--server-time",
        action="store_true",
        help="PostgreSQL: also the server's own time for the statements, from its log",
    )
    parser.add_argument("--server-log", type=Path, default=Path(SERVER_LOG))
    parser.add_argument(
        "--first-send",
        action="store_true",
        help="the campaign as a plain first invitation, not --new (its marking looks for "
        "the event's other campaigns under the event's lock)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        port, count, processes, database, log_statements = args.child
        child(int(port), int(count), int(processes), database, log_statements == "1")
        return
    server_log: Path | None = None
    if args.server_time:
        if args.database != "postgresql":
            parser.error("--server-time needs --database postgresql")
        if not os.access(args.server_log, os.R_OK):
            parser.error(f"--server-log {args.server_log}: not readable here")
        server_log = args.server_log
    count = args.recipients
    kind = "a first send" if args.first_send else "--new"
    print(
        f"{count:,} recipients ({kind}), minimal sink, {args.database}, "
        f"{os.cpu_count()} cores, {load()}"
    )
    modes = (args.only,) if args.only else (1, 2)
    rates: dict[int, list[float]] = {mode: [] for mode in modes}
    for run in range(args.runs):
        order = modes if run % 2 == 0 else modes[::-1]  # load drifts: neither always first
        for processes in order:
            rate, detail = measure(
                processes,
                count,
                args.database,
                statements=args.statements,
                server_log=server_log,
                first_send=args.first_send,
            )
            rates[processes].append(rate)
            print(f"run {run + 1} {processes} process(es): {rate:7,.0f} msg/s  {detail}  {load()}")
    print()
    if 2 in rates:
        best = statistics.median(rates[2])
        verdict = "ok" if best >= MOONSHOT_RATE else "MISSED"
        print(
            f"2 processes: {best:,.0f} msg/s median, {1_000_000 / best / 60:.1f} min a "
            f"million at that rate (moonshot: >= {MOONSHOT_RATE:,.0f}/s, under 4 min: {verdict})"
        )
    if len(modes) == 2:
        paired = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
        ratio = statistics.median(paired)
        verdict = "ok" if ratio >= TARGET else "MISSED"
        print(
            f"1 process {statistics.median(rates[1]):,.0f} msg/s, 2 processes "
            f"{statistics.median(rates[2]):,.0f} msg/s: ratio {ratio:.2f} (per run: "
            f"{' '.join(f'{r:.2f}' for r in paired)}), target {TARGET}  {verdict}  {load()}"
        )


if __name__ == "__main__":
    main()
