"""Where an end-to-end message's time goes (py-spy), and whether uvloop helps; print both.

Issue 15's moonshot (1,000,000 invitations end to end in under 4 minutes on 2 cores,
>= 4,200/s) starts from a measurement. This script:

1. `--profile`: samples one end-to-end run of bench_send.py (render, compose, journal,
   send, ledger; 16 connections into the minimal sink in its own process) with py-spy,
   every thread, and prints the event loop thread's time per message by stage, plus the
   store's threads. py-spy must be installed (`.venv/bin/pip install py-spy`).
2. `--uvloop`: alternates end-to-end runs on asyncio's own loop and on uvloop (installed
   as the event loop policy before bench_send.py runs; uvloop is a dev dependency), each
   against a fresh minimal sink whose count is checked, and prints the per-run ratios of
   messages/s and of the sender's CPU a message. `--raw` adds raw aiosmtplib runs on both
   loops (a client that waits for every reply). The sender's own loop stays asyncio's:
   bench/README.md says why (no gain measured, 2026-12-01).

Run: .venv/bin/python bench/bench_where.py --profile [--recipients 20000]
     .venv/bin/python bench/bench_where.py --uvloop [--raw] [--recipients 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SEND = BENCH / "bench_send.py"
PY_SPY = Path(sys.executable).parent / "py-spy"

# Stage of a sample: the first of these found in its stack, innermost first. Order
# matters: dot-stuffing runs inside the transport, rendering inside the builder.
STAGES = (
    ("socket write (send syscall)", ("_SelectorSocketTransport.write",)),
    ("dot-stuffing", ("_dot_stuff",)),
    ("aiosmtplib parsing/formatting", ("aiosmtplib/",)),
    ("our SMTP dialogue", ("mailer/delivery/smtp.py", "mailer/delivery/session.py")),
    ("render (Jinja2 templates)", ("Renderer.render", "mailer/message/render.py")),
    ("compose (MIME, quoted-printable)", ("InvitationBuilder", "mailer/message/")),
    ("tokens (HMAC)", ("mailer/tokens.py",)),
    ("journal", ("mailer/sending/journal.py",)),
    ("rate limiter", ("ratelimit.py", "shared_rate.py")),
    ("engine bookkeeping", ("mailer/sending/",)),
    ("event loop, socket reads", ("asyncio/",)),
)


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG_FILE"}


class Sink:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SEND), "--sink", "minimal"],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> int:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return int(out.split()[-1])


def e2e_command(port: int, count: int, *, uvloop: bool, mode: str = "e2e") -> list[str]:
    """bench_send.py's child for `mode` (e2e: the whole sender; raw: aiosmtplib alone)."""
    if not uvloop:
        return [sys.executable, str(SEND), f"--{mode}", str(port), str(count)]
    # uvloop as the policy, then bench_send.py exactly as it runs on asyncio's own loop.
    code = (
        "import runpy, sys, uvloop; uvloop.install(); "
        f"sys.argv = [{str(SEND)!r}, '--{mode}', '{port}', '{count}']; "
        f"runpy.run_path({str(SEND)!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def run_e2e(count: int, *, uvloop: bool, mode: str = "e2e") -> tuple[float, float]:
    """One run into a fresh sink: messages/s and the sender's CPU µs a message."""
    sink = Sink()
    try:
        done = subprocess.run(
            e2e_command(sink.port, count, uvloop=uvloop, mode=mode),
            capture_output=True,
            text=True,
            env=child_env(),
            check=False,
        )
    finally:
        accepted = sink.stop()
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    # e2e prints "SENT SECONDS DISPATCH CPU", raw "SENT SECONDS BYTES CPU".
    sent, elapsed, _, cpu = done.stdout.split()[:4]
    if int(sent) != count or accepted != count:
        raise SystemExit(f"{count} to send, the sender says {sent}, the sink counted {accepted}")
    return count / float(elapsed), float(cpu) * 1e6 / count


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def compare_uvloop(count: int, runs: int, *, modes: tuple[str, ...]) -> None:
    """Runs on both loops, alternating which goes first; per mode, the median of each run's
    own uvloop/asyncio ratio, for messages/s and for the sender's CPU a message."""
    print(f"{count:,} recipients into the minimal sink, {runs} runs, {load()}")
    rates: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpus: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for run in range(runs):
        order = ("asyncio", "uvloop") if run % 2 == 0 else ("uvloop", "asyncio")
        for mode in modes:
            for name in order:
                rate, cpu = run_e2e(count, uvloop=name == "uvloop", mode=mode)
                rates[mode, name].append(rate)
                cpus[mode, name].append(cpu)
                print(
                    f"run {run + 1} {mode:3} {name:8}: {rate:7,.0f} msg/s  "
                    f"sender CPU {cpu:6,.0f} µs/msg  {load()}",
                    flush=True,
                )
    for mode in modes:
        for what, figures in (("msg/s", rates), ("sender CPU µs/msg", cpus)):
            mine, theirs = figures[mode, "uvloop"], figures[mode, "asyncio"]
            paired = [u / a for u, a in zip(mine, theirs, strict=True)]
            print(
                f"{mode} {what}: asyncio median {statistics.median(theirs):,.0f}, "
                f"uvloop median {statistics.median(mine):,.0f}; uvloop/asyncio per run "
                f"{' '.join(f'{r:.2f}' for r in paired)}, median {statistics.median(paired):.2f}"
            )


def profile(count: int) -> None:
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy is not installed ({PY_SPY}): .venv/bin/pip install py-spy")
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "e2e.raw"
        try:
            spy = [
                str(PY_SPY),
                "record",
                "--threads",
                "--nonblocking",
                "--rate",
                "200",
                "--format",
                "raw",
            ]
            done = subprocess.run(
                [*spy, "--output", str(raw), "--", *e2e_command(sink.port, count, uvloop=False)],
                capture_output=True,
                text=True,
                env=child_env(),
                check=False,
            )
        finally:
            sink.stop()
        if done.returncode != 0:
            raise SystemExit(f"py-spy failed:\n{done.stderr}")
        # py-spy writes its own lines to stdout too: the child's is "SENT SECONDS DISPATCH
        # CPU" (bench_send.py's e2e child).
        found = re.search(r"^(\d+) ([\d.]+)(?: [\d.]+)+$", done.stdout, re.MULTILINE)
        if found is None:
            raise SystemExit(f"no result from the e2e child:\n{done.stdout}")
        report(raw, int(found[1]), float(found[2]))


def report(raw: Path, count: int, elapsed: float) -> None:
    """Samples of the send (the untimed import left out), per stage, as µs a message."""
    stages: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    loop_samples = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if any("import_file" in f or "_import (" in f for f in frames):
            continue
        samples = int(number)
        thread = re.sub(r"\(\d+\)", "", frames[0]).strip()
        if "MainThread" not in thread:
            # The store's calls run in asyncio.to_thread workers; idle ones wait in C.
            busy = not frames[-1].startswith("_worker (concurrent/futures/thread.py")
            threads["store threads, busy" if busy else "store threads, idle"] += samples
            continue
        loop_samples += samples
        inner_first = frames[::-1]
        stage = next(
            (
                name
                for frame in inner_first
                for name, marks in STAGES
                if any(mark in frame for mark in marks)
            ),
            "other",
        )
        stages[stage] += samples
    # py-spy samples at 200 Hz: each sample of the loop's thread is 5 ms of its time.
    per_sample_us = 1e6 / 200 / count
    print(f"{count:,} messages in {elapsed:.2f} s under py-spy ({count / elapsed:,.0f}/s)")
    print(f"event loop thread: {loop_samples * per_sample_us:7.1f} µs/message, by stage:")
    for name, samples in stages.most_common():
        share = samples / loop_samples
        print(f"  {samples * per_sample_us:7.1f} µs  {share:5.1%}  {name}")
    for name, samples in threads.most_common():
        print(f"  {samples * per_sample_us:7.1f} µs  {name} (all threads together)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--raw", action="store_true", help="--uvloop: raw aiosmtplib as well")
    args = parser.parse_args()
    if not (args.profile or args.uvloop):
        parser.error("say --profile, --uvloop or both")
    if args.profile:
        profile(args.recipients)
    if args.uvloop:
        compare_uvloop(args.recipients, args.runs, modes=("e2e", "raw") if args.raw else ("e2e",))


if __name__ == "__main__":
    main()
