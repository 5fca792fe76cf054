"""One-click unsubscribe throughput of `mailer serve` on SQLite, and proof that none is lost.

    .venv/bin/python bench/bench_unsubscribe.py [--subscribers 5000] [--clients 50]
                                                 [--seconds 10] [--runs 3]

Each run: a fresh SQLite database (copied from one seeded through the store API), a
`mailer serve` subprocess on a free loopback port with the POST rate limit off, then
`--clients` concurrent httpx clients (one keep-alive connection each) POSTing RFC 8058
one-click bodies for distinct subscribers for `--seconds`. Afterwards the store must hold
exactly one suppression row, and an unsubscribed membership, for every POST answered 200.

A baseline in the same run (GET /healthz: HTTP + one SELECT) shows how much of the figure
is the HTTP stack and the client rather than the unsubscribe itself. Prints the median of
the runs; exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

from mailer.models import Subscriber
from mailer.store import Store
from mailer.store.imports import ImportRow
from mailer.store.schema import memberships, subscribers, suppressions
from mailer.tokens import TokenSigner

SECRET = "bench-secret-key-0123456789abcdef"
LIST = "bench"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class RunResult:
    seconds: float
    ok_ids: list[int] = field(default_factory=list)
    failures: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.ok_ids) / self.seconds


def seed(database: Path, count: int) -> list[int]:
    rows = (ImportRow(Subscriber(email=f"reader{i}@example.org")) for i in range(count))
    with Store.open(f"sqlite:///{database}") as store:
        store.import_subscribers(LIST, rows, source="bench")
        with store.engine.connect() as connection:
            return list(connection.execute(select(subscribers.c.id).order_by("id")).scalars())


class Server:
    """`python -m mailer serve --port 0` on `database`, its port read from a port file."""

    def __init__(self, database: Path, workdir: Path) -> None:
        port_file = workdir / "port"
        port_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "MAILER_DATABASE_URL": f"sqlite:///{database}",
            "MAILER_SECRET_KEY": SECRET,
            "MAILER_VAR_DIR": str(workdir / "var"),
        }
        self.log = (workdir / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailer",
                "serve",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--post-rate-limit",
                "0",
            ],
            env=env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mailer serve did not start; see {workdir / 'serve.log'}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        self.log.close()


async def hammer(
    url: str, paths: list[list[str]], ids: list[list[int]], seconds: float, *, post: bool
) -> RunResult:
    """One task per client, each with its own connection, until time or its ids run out."""
    started = time.perf_counter()
    deadline = started + seconds
    result = RunResult(seconds=0.0)

    async def client(mine: list[str], my_ids: list[int]) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            if not post:  # the baseline: as many health checks as fit in the time
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    response = await http.get("/healthz")
                    result.latencies.append(time.perf_counter() - sent)
                    if response.status_code == 200:
                        result.ok_ids.append(0)
                return
            for path, subscriber_id in zip(mine, my_ids, strict=True):
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                response = await http.post(path, content=ONE_CLICK, headers=FORM)
                result.latencies.append(time.perf_counter() - sent)
                if response.status_code == 200:
                    result.ok_ids.append(subscriber_id)
                else:
                    result.failures += 1

    await asyncio.gather(*(client(p, i) for p, i in zip(paths, ids, strict=True)))
    result.seconds = time.perf_counter() - started
    return result


def verify(database: Path, ok_ids: list[int]) -> str | None:
    """None if the store holds exactly one suppression and an unsubscribe per 200."""
    with Store.open(f"sqlite:///{database}") as store, store.engine.connect() as connection:
        suppressed = set(
            connection.execute(
                select(subscribers.c.id).join(
                    suppressions, suppressions.c.email_key == subscribers.c.email_key
                )
            ).scalars()
        )
        rows = connection.execute(select(func.count()).select_from(suppressions)).scalar_one()
        left = connection.execute(
            select(func.count())
            .select_from(memberships)
            .where(memberships.c.status == "unsubscribed")
        ).scalar_one()
    answered = set(ok_ids)
    if len(answered) != len(ok_ids):
        return "a subscriber was POSTed twice (the benchmark's own bug)"
    if suppressed != answered or rows != len(answered) or left != len(answered):
        return (
            f"{len(answered)} answered 200, but {rows} suppression rows "
            f"({len(answered - suppressed)} missing) and {left} memberships unsubscribed"
        )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    signer = TokenSigner(SECRET.encode())
    with tempfile.TemporaryDirectory(prefix="bench-unsubscribe-") as tmp:
        workdir = Path(tmp)
        template = workdir / "seeded.db"
        ids = seed(template, args.subscribers)
        with Store.open(f"sqlite:///{template}") as store:
            list_id = store.list_id(LIST)
        paths = [f"/u/{signer.sign(subscriber_id=i, list_id=list_id, campaign_id=1)}" for i in ids]
        by_client = [paths[k :: args.clients] for k in range(args.clients)]
        ids_by_client = [ids[k :: args.clients] for k in range(args.clients)]
        print(
            f"{args.subscribers} subscribers, {args.clients} clients, {args.seconds:g} s per "
            f"run, {args.runs} runs; SQLite, one `mailer serve` process"
        )

        post_rates, base_rates, lost = [], [], False
        for run in range(1, args.runs + 1):
            database = workdir / f"run{run}.db"
            shutil.copyfile(template, database)
            server = Server(database, workdir)
            try:
                baseline = asyncio.run(
                    hammer(server.url, by_client, ids_by_client, args.seconds / 2, post=False)
                )
                result = asyncio.run(
                    hammer(server.url, by_client, ids_by_client, args.seconds, post=True)
                )
            finally:
                server.stop()
            problem = verify(database, result.ok_ids)
            lost |= problem is not None or result.failures > 0
            latencies = sorted(result.latencies)
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            exhausted = " (ran out of subscribers)" if len(result.ok_ids) == len(ids) else ""
            print(
                f"run {run}: {result.rate:7.0f} POST/s{exhausted}  ({len(result.ok_ids)} in "
                f"{result.seconds:.1f} s, {result.failures} non-200, p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms)   baseline GET /healthz {baseline.rate:7.0f} req/s   "
                f"{'verified: none lost' if problem is None else 'LOST: ' + problem}"
            )
            post_rates.append(result.rate)
            base_rates.append(baseline.rate)

        post, base = statistics.median(post_rates), statistics.median(base_rates)
        print(
            f"median: {post:.0f} one-click POST/s; baseline GET /healthz {base:.0f} req/s; "
            f"ratio {post / base:.2f}"
        )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
