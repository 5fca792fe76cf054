"""Reading and classifying returned mail from a Maildir, on one core (issue 12).

    .venv/bin/python bench/bench_bounces.py [--messages 10000] [--runs 5]

Builds `--messages` messages from the vendored samples (tests/data/bounces: flufl.bounce's
DSNs and non-standard bounces, the ARF reports, the auto-replies) taken in turn, plus our
own shapes in the same turn: a Postfix DSN back to a VERP address and a mailed unsubscribe.
Each message gets its own Delivered-To (a VERP address) and Message-ID, so no two are the
same bytes. They are written to a Maildir in a temporary folder (not timed).

Each run reads the Maildir with the bounce reader (`MaildirReader.messages()`: the file,
at most 4 MB, and its size) and classifies every message (`feedback.classify`), in this
process, on one thread; nothing is written to a store. It prints messages/s per run and
the median, by the wall clock and per second of this process's CPU time (what one core
does when the machine is shared: the other agents' work is not in it), the same for
classify alone on the bytes already in memory, and the kinds found, which must be the
same in every run. Target: >= 1,000 messages/s.
"""

from __future__ import annotations

import argparse
import logging
import mailbox
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from mailer.feedback.classify import OwnAddresses, classify
from mailer.feedback.mailbox import Folders, MaildirReader, parse_mailbox

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces"
OWN = OwnAddresses(bounce="bounces@lists.example.org", unsubscribe="unsubscribe@lists.example.org")
TOKEN = "k5ug3rjxbdmaqdw7c2iyqrlmvq"  # shaped like a VERP token (26 base32 characters)

POSTFIX_DSN = (
    "Return-Path: <>\r\n"
    "From: MAILER-DAEMON@relay.lists.example.org (Mail Delivery System)\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "To: bounces+{token}@lists.example.org\r\n"
    "Auto-Submitted: auto-replied\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
    "\r\n--B\r\nContent-Type: text/plain\r\n\r\n<x@dead.example.org>: unknown user\r\n"
    "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; relay.lists.example.org\r\n\r\n"
    "Final-Recipient: rfc822; x@dead.example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    'Diagnostic-Code: X-Postfix; unknown user: "x"\r\n\r\n'
    "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    "Message-ID: <1.campaign@lists.example.org>\r\nSubject: Invitation\r\n\r\n--B--\r\n"
)
MAILED_UNSUBSCRIBE = (
    "From: Ana <ana@example.org>\r\nTo: unsubscribe@lists.example.org\r\n"
    "Subject: unsubscribe AQEBAgMEBQYHCAkKCwwNDg8QERITFA\r\n\r\n"
)


def sample_messages() -> list[bytes]:
    found = sorted(p for p in SAMPLES.rglob("*") if p.suffix in (".txt", ".eml"))
    if not found:
        sys.exit(f"no samples under {SAMPLES}")
    return [p.read_bytes() for p in found] + [
        POSTFIX_DSN.format(token=TOKEN).encode(),
        MAILED_UNSUBSCRIBE.encode(),
    ]


def build_maildir(folder: Path, count: int) -> list[bytes]:
    """`count` distinct messages, the samples in turn, in a new Maildir at `folder`."""
    samples = sample_messages()
    box = mailbox.Maildir(folder, create=True)
    written = []
    for number in range(count):
        prefix = (
            f"Delivered-To: bounces+{TOKEN[:-6]}{number:06d}@lists.example.org\r\n"
            f"X-Bench-Message: {number}\r\n"
        ).encode()
        data = prefix + samples[number % len(samples)]
        box.add(data)
        written.append(data)
    box.close()
    return written


def read_and_classify(folder: Path) -> tuple[float, float, Counter[str]]:
    """(wall seconds, CPU seconds, kinds) of one pass over the Maildir."""
    location = parse_mailbox(f"maildir:{folder}", home=folder)
    reader = MaildirReader(location, Folders())
    kinds: Counter[str] = Counter()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        for message in reader.messages():
            feedback = classify(message.data, own=OWN, source="maildir", size=message.size)
            kinds[feedback.kind.value] += 1
    finally:
        reader.close()
    return time.perf_counter() - started, time.process_time() - cpu, kinds


def classify_only(messages: list[bytes]) -> float:
    """CPU seconds to classify `messages` already in memory."""
    cpu = time.process_time()
    for data in messages:
        classify(data, own=OWN, source="maildir")
    return time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    # One line per message left alone is the right amount for a mailbox, not for a bench.
    logging.basicConfig(level=logging.CRITICAL)

    with tempfile.TemporaryDirectory(prefix="bench-bounces-") as tmp:
        folder = Path(tmp) / "bounces"
        messages = build_maildir(folder, options.messages)
        size = sum(len(m) for m in messages)
        print(
            f"{options.messages:,} messages ({size / 1e6:.1f} MB, "
            f"{len(sample_messages())} distinct samples in turn) in a Maildir"
        )
        wall, cpu, alone, kinds_seen = [], [], [], []
        for run in range(1, options.runs + 1):
            seconds, cpu_seconds, kinds = read_and_classify(folder)
            wall.append(options.messages / seconds)
            cpu.append(options.messages / cpu_seconds)
            alone.append(options.messages / classify_only(messages))
            kinds_seen.append(kinds)
            print(
                f"run {run}: read + classified {wall[-1]:,.0f} messages/s wall, "
                f"{cpu[-1]:,.0f}/CPU-s; classify alone {alone[-1]:,.0f}/CPU-s"
            )
        if any(k != kinds_seen[0] for k in kinds_seen):
            sys.exit("the kinds found differ between runs")
        print("kinds: " + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds_seen[0].items())))
        median = statistics.median(cpu)
        print(
            f"median: read + classified {statistics.median(wall):,.0f} messages/s wall, "
            f"{median:,.0f}/CPU-s ({1e6 / median:,.0f} µs each); classify alone "
            f"{statistics.median(alone):,.0f}/CPU-s; "
            f"target >= 1,000/s on one core: {'met' if median >= 1000 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
