"""One campaign from 2 processes vs 1, end to end, into the minimal SMTP sink (issue 15).

Each run imports N subscribers into a fresh SQLite store (untimed), then times the
campaign of templates/events/london-public-meeting.md from the call to its return:

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

Run: .venv/bin/python bench/bench_processes.py [--recipients 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_send import CHILD_ENV, EVENT, Sink, _import, _settings, load

TARGET = 1.6


def child(port: int, count: int, processes: int) -> None:
    """Import `count` subscribers (untimed), then send with `processes` processes."""
    from mailer.campaigns.lifecycle import start_or_resume
    from mailer.campaigns.senders import Children, helper_main
    from mailer.message.event import load_event
    from mailer.sending.run import send_campaign_via_smtp
    from mailer.store.signer import load_signer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = _settings(tmp, port)
        store = _import(tmp, count)
        campaign = start_or_resume(
            store, event_path=EVENT, event=load_event(EVENT), list_name="members", new=True
        ).campaign
        signer = load_signer(settings)
        children = Children()
        started = time.perf_counter()
        children.start(helper_main, settings, campaign.id, count=processes - 1)
        result = asyncio.run(
            send_campaign_via_smtp(
                settings=settings, store=store, signer=signer, campaign_id=campaign.id
            )
        )
        elapsed = time.perf_counter() - started
        children.stop()
        children.join(timeout=60)
        counts = store.delivery_counts(campaign.id)
        assert counts.sent == count, f"ledger: {counts}"
        assert result.reason.value == "finished", result.message
        helped = count - result.progress.sent_this_run
        print(f"{counts.sent} {elapsed:.4f} {helped}")


def measure(processes: int, count: int) -> tuple[float, str]:
    sink = Sink("minimal")
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(sink.port), str(count), str(processes)],
            capture_output=True,
            text=True,
            env=CHILD_ENV,
            check=False,
        )
    finally:
        accepted = sink.stop()
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr}")
    sent, elapsed, helped = done.stdout.split()
    if int(sent) != count or accepted != count:
        raise SystemExit(f"{processes} process(es): sent {sent}, sink got {accepted} of {count}")
    return count / float(elapsed), f"{float(elapsed):6.2f} s, helper sent {int(helped):,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    count = args.recipients
    print(f"{count:,} recipients, minimal sink, {os.cpu_count()} cores, {load()}")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for run in range(args.runs):
        order = (1, 2) if run % 2 == 0 else (2, 1)  # load drifts: neither mode always first
        for processes in order:
            rate, detail = measure(processes, count)
            rates[processes].append(rate)
            print(f"run {run + 1} {processes} process(es): {rate:7,.0f} msg/s  {detail}  {load()}")
    paired = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    ratio = statistics.median(paired)
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print()
    print(
        f"1 process {statistics.median(rates[1]):,.0f} msg/s, 2 processes "
        f"{statistics.median(rates[2]):,.0f} msg/s: ratio {ratio:.2f} (per run: "
        f"{' '.join(f'{r:.2f}' for r in paired)}), target {TARGET}  {verdict}  {load()}"
    )


if __name__ == "__main__":
    main()
