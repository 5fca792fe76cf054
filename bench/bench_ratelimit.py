"""Real-time check of the rate limiter: 20 tasks share one limiter for SECONDS (default 60).

Target (issue "Sending campaigns"): over 60 s the measured rate stays within 5% of the
setting, without bursts above the bucket size. Prints the measured rate, its error, and the
largest number of grants seen in any one-second window (allowed: rate + bucket).
This lives here, not in the tests, because its figures depend on the machine's load.
Run: .venv/bin/python bench/bench_ratelimit.py [SECONDS] [RATE]
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time

from mailer.sending.ratelimit import RateLimiter


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
    busiest = max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))
    return measured, busiest, limiter.burst


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    measured, busiest, burst = asyncio.run(measure(seconds, rate))
    error = (measured - rate) / rate * 100
    print(
        f"setting {rate:g}/s over {seconds:g} s, 20 tasks: measured {measured:.2f}/s "
        f"({error:+.2f}%, target within 5%)"
    )
    print(f"busiest one-second window: {busiest} grants (allowed {rate:g} + bucket {burst})")


if __name__ == "__main__":
    main()
