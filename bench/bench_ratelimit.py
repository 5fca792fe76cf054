"""Real-time check of the rate limiter: 20 tasks share one limiter for SECONDS (default 60).

Target (issue "Sending campaigns"): over 60 s the measured rate stays within 5% of the
setting, without bursts above the bucket size. Prints the measured rate, its error, and the
largest number of grants seen in any one-second window (allowed: rate + bucket).
This lives here, not in the tests, because its figures depend on the machine's load.

With `--senders N` (issue 15, the global rate): N processes, each its own
SharedRateLimiter (as each sender process of `mailer send --processes` or `mailer worker`
has) with 5 tasks taking slots as fast as they are given, share one budget in a real
store (a SQLite file, or with `--database postgresql` a database of its own on the local
PostgreSQL, see bench_processes.py), in real time; the grants of all of them together
are measured: within 5% of the setting, no one-second window above setting + bucket.
The issue's check: `--senders 4 60 200`.

Run: .venv/bin/python bench/bench_ratelimit.py [SECONDS] [RATE] [--senders N]
     [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import tempfile
import time
from pathlib import Path

from mailer.sending.ratelimit import RateLimiter

TASKS_PER_SENDER = 5


async def measure(seconds: float, rate: float) -> tuple[float, int, int]:
    limiter = RateLimiter(per_second=rate)
    stamps: list[float] = []
    target = int(seconds * rate) + 1

    async def worker() -> None:
        while len(stamps) < target:
            await limiter.acquire()
            stamps.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(20)))
    stamps.sort()
    stamps = stamps[:target]
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return measured, busiest_second(stamps), limiter.burst


def busiest_second(stamps: list[float]) -> int:
    """The most grants in any window [t, t + 1 s) of the sorted `stamps`."""
    return max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))


async def take_slots(url: str, rate: float, start: float, end: float) -> list[float]:
    """One sender: its own limiter over the shared budget, tasks taking slots until `end`
    (epoch seconds, the budget's clock); the times of its grants."""
    from mailer.sending.shared_rate import SharedRateLimiter
    from mailer.store import Store

    store = Store.open(url, migrate=False)
    limiter = SharedRateLimiter(store, per_second=rate)
    stamps: list[float] = []

    async def task() -> None:
        while True:
            await limiter.acquire()
            now = time.time()
            if now >= end:
                return
            stamps.append(now)

    await asyncio.sleep(max(0.0, start - time.time()))
    try:
        await asyncio.gather(*(task() for _ in range(TASKS_PER_SENDER)))
    finally:
        await limiter.close()
        store.close()
    return stamps


def sender(url: str, rate: float, start: float, end: float, out: str) -> None:
    """A sender process (spawn target): its grants' times to `out`, one a line."""
    stamps = asyncio.run(take_slots(url, rate, start, end))
    Path(out).write_text("".join(f"{t!r}\n" for t in stamps), encoding="utf-8")


def measure_shared(senders: int, seconds: float, rate: float, database: str) -> None:
    from bench_processes import fresh_database

    from mailer.store import Store

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with fresh_database(database, tmp) as url:
            Store.open(url).close()  # migrated once, before the senders start
            start = time.time() + 3.0  # every process started and its imports done
            end = start + seconds
            context = multiprocessing.get_context("spawn")
            outs = [str(tmp / f"sender{i}.txt") for i in range(senders)]
            processes = [
                context.Process(target=sender, args=(url, rate, start, end, out)) for out in outs
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join()
                if process.exitcode != 0:
                    raise SystemExit(f"a sender process failed (exit code {process.exitcode})")
            each = [[float(line) for line in Path(out).read_text().split()] for out in outs]
    stamps = sorted(t for mine in each for t in mine)
    measured = len(stamps) / seconds
    error = (measured - rate) / rate * 100
    shares = " ".join(f"{len(mine):,}" for mine in each)
    print(
        f"setting {rate:g}/s over {seconds:g} s, {senders} sender processes x "
        f"{TASKS_PER_SENDER} tasks, one budget in {database}: measured {measured:.2f}/s "
        f"({error:+.2f}%, target within 5%); grants per sender {shares}"
    )
    busiest = busiest_second(stamps)
    print(f"busiest one-second window: {busiest} grants (allowed {rate:g} + bucket 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=60.0)
    parser.add_argument("rate", nargs="?", type=float, default=100.0)
    parser.add_argument("--senders", type=int, default=0, help="processes sharing one budget")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    if args.senders:
        measure_shared(args.senders, args.seconds, args.rate, args.database)
        return
    measured, busiest, burst = asyncio.run(measure(args.seconds, args.rate))
    error = (measured - args.rate) / args.rate * 100
    print(
        f"setting {args.rate:g}/s over {args.seconds:g} s, 20 tasks: measured {measured:.2f}/s "
        f"({error:+.2f}%, target within 5%)"
    )
    print(f"busiest one-second window: {busiest} grants (allowed {args.rate:g} + bucket {burst})")


if __name__ == "__main__":
    main()
