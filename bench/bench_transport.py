"""SmtpTransport alone against raw aiosmtplib, same sink, same run; print the ratio.

bench_send.py times the whole campaign (render, journal, ledger, send); this one isolates
the delivery layer: `SmtpTransport.send` over 16 pooled connections (MAIL, RCPT, DATA,
the body written and drained by hand, the reply) against 16 `aiosmtplib.SMTP` clients
calling `sendmail`, both to the minimal sink of bench_send.py in its own process (a fresh
one per measurement, whose count is checked against N). Raw and transport runs alternate.

Besides messages/s it prints the sender's user CPU time per message: the Python work,
which other load on this 2-core machine disturbs far less than the wall clock. (System
time is left out: on loopback the kernel charges the receiving side's packet processing
to whichever process happens to run, so it swings with unrelated load.)

`--variant NAME=SRC` (repeatable) also times SmtpTransport imported from another source
tree, in the same runs: how a change to src/mailer/delivery was measured before/after,
e.g. with a copy of src/ holding the old smtp.py:

    .venv/bin/python bench/bench_transport.py --variant before=/tmp/before/src

Run: .venv/bin/python bench/bench_transport.py [--messages N] [--runs 5] [--size BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CONNECTIONS = 16
TASKS = 64  # more senders than connections, as the engine's workers are
SENDER = "invitations@cwo.example.org"


def message_bytes(size: int) -> bytes:
    """A CRLF message of about `size` bytes with no line starting with a dot (as ours are)."""
    head = b"From: invitations@cwo.example.org\r\nSubject: Bench\r\nMessage-ID: <b@x>\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


class Stopwatch:
    """Prints wall, user CPU and system CPU seconds of the block, for the parent to read."""

    def __enter__(self) -> None:
        self.wall, self.times = time.perf_counter(), os.times()

    def __exit__(self, *exc_info: object) -> None:
        wall, times = time.perf_counter() - self.wall, os.times()
        user, system = times.user - self.times.user, times.system - self.times.system
        print(f"{wall:.4f} {user:.4f} {system:.4f}")


def child_raw(port: int, count: int, size: int) -> None:
    import aiosmtplib

    data = message_bytes(size)

    async def one_connection(first: int, stop: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench")
        await smtp.connect()
        for i in range(first, stop):
            errors, _ = await smtp.sendmail(SENDER, [f"person{i:07d}@example.org"], data)
            assert not errors, errors
        await smtp.quit()

    async def main() -> None:
        share = -(-count // CONNECTIONS)
        with Stopwatch():
            await asyncio.gather(
                *(
                    one_connection(first, min(first + share, count))
                    for first in range(0, count, share)
                )
            )

    asyncio.run(main())


def child_transport(port: int, count: int, size: int) -> None:
    from mailer.config import SmtpSecurity
    from mailer.delivery.smtp import SmtpTransport
    from mailer.models import DeliveryStatus, OutgoingMessage

    data = message_bytes(size)
    pending = [
        OutgoingMessage(SENDER, f"person{i:07d}@example.org", f"<{i}@bench>", data)
        for i in range(count)
    ]
    pending.reverse()

    async def main() -> None:
        smtp = SmtpTransport(
            host="127.0.0.1",
            port=port,
            security=SmtpSecurity.NONE,
            connections=CONNECTIONS,
            local_hostname="bench",
        )

        async def worker() -> None:
            while pending:
                outcome = await smtp.send(pending.pop(), on_body=lambda: None)
                assert outcome.status is DeliveryStatus.SENT, outcome

        with Stopwatch():
            async with smtp:
                await asyncio.gather(*(worker() for _ in range(TASKS)))

    asyncio.run(main())


def measure(mode: str, count: int, size: int, src: Path | None) -> tuple[float, float]:
    """Messages/s and user CPU µs per message of one child against a fresh minimal sink
    (whose count is checked)."""
    sink = subprocess.Popen(
        [sys.executable, str(BENCH / "bench_send.py"), "--sink", "minimal"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    port = int(sink.stdout.readline())
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    try:
        done = subprocess.run(
            [sys.executable, __file__, f"--{mode}", str(port), str(count), str(size)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    finally:
        sink.terminate()
        out, _ = sink.communicate(timeout=30)
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    accepted = int(out.split()[-1])
    if accepted != count:
        raise SystemExit(f"{mode}: {count} sent, the sink counted {accepted}")
    wall, user = (float(x) for x in done.stdout.split()[:2])
    return count / wall, user / count * 1e6


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=13_446, help="bytes (the example invite)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SRC")
    args = parser.parse_args()
    variants: dict[str, Path | None] = {"transport": None}
    for given in args.variant:
        name, _, src = given.partition("=")
        variants[name] = Path(src).resolve()
    count, size = args.messages, args.size
    print(f"{count:,} messages of {size:,} B, {CONNECTIONS} connections, {load()}")

    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for run in range(args.runs):
        # Rotate the order so drifting load does not favour one mode.
        modes = ["raw", *variants]
        modes = modes[run % len(modes) :] + modes[: run % len(modes)]
        for mode in modes:
            if mode == "raw":
                rate, micros = measure("raw", count, size, None)
            else:
                rate, micros = measure("transport", count, size, variants[mode])
            rates.setdefault(mode, []).append(rate)
            cpu.setdefault(mode, []).append(micros)
            detail = f"{rate:7,.0f} msg/s {micros:6.1f} µs user CPU/msg"
            print(f"run {run + 1} {mode:10}: {detail}  {load()}", flush=True)

    print()
    raw, raw_cpu = rates["raw"], cpu["raw"]
    for name in variants:
        paired = [v / r for v, r in zip(rates[name], raw, strict=True)]
        shown = " ".join(f"{x:.2f}" for x in paired)
        cpu_paired = [v / r for v, r in zip(cpu[name], raw_cpu, strict=True)]
        cpu_shown = " ".join(f"{x:.2f}" for x in cpu_paired)
        print(
            f"{name:10} median {statistics.median(rates[name]):7,.0f} msg/s, x raw: median "
            f"{statistics.median(paired):.2f} (per run {shown}); "
            f"{statistics.median(cpu[name]):.1f} µs user CPU/msg, x raw: median "
            f"{statistics.median(cpu_paired):.2f} (per run {cpu_shown})"
        )
    print(
        f"raw        median {statistics.median(raw):7,.0f} msg/s, "
        f"{statistics.median(raw_cpu):.1f} µs user CPU/msg  ({load()})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in {"--raw", "--transport"}:
        port, count, size = (int(x) for x in sys.argv[2:5])
        if sys.argv[1] == "--raw":
            child_raw(port, count, size)
        else:
            child_transport(port, count, size)
    else:
        main()
