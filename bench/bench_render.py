"""Render + compose the example invitation for N recipients; print µs/recipient and messages/s.

Target (issue "Event invitations"): at most 150 µs per recipient (>= 6,500 messages/s on
one core). Each recipient is built as the engine builds it (sending/engine.py): the
unsubscribe and RSVP tokens signed, the guest's RSVP links in the message, the ledger's
Message-ID. The EmailMessage baseline (construct + serialise the same parts with the
stdlib) runs in the same process on a sample so the ratio is measured under the same
conditions; `--stages` also times the steps one by one (tokens, Jinja, compose). Times are
the process's CPU time (time.process_time), which other work on this shared machine
disturbs far less than the wall clock.

`--variant NAME=SRC` (repeatable) times the same build with `mailer` imported from another
source tree (e.g. `git archive HEAD src | tar -x -C /tmp/before`), each measurement in a
child process, the trees alternating run by run, and prints each run's ratio to this tree.

`--wire` also times what the SMTP transport does to the bytes before they go (its
dot-stuffing pass, skipped for a message built wire-ready); `--base-url` sets the links'
base: the end-to-end benchmarks' `https://mailer.example.org` puts a "." right after a
quoted-printable soft break in the RSVP line, which the default base never does.

Run: .venv/bin/python bench/bench_render.py [--recipients N] [--runs R] [--stages]
     .venv/bin/python bench/bench_render.py --variant before=/tmp/before/src
     .venv/bin/python bench/bench_render.py --variant before=/tmp/before/src --wire \
         --base-url https://mailer.example.org
"""

from __future__ import annotations

import argparse
import email.policy
import json
import os
import random
import statistics
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from mailer.delivery.smtp import _dot_stuff
from mailer.message.calendar import CONTENT_TYPE
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import Recipient, SenderIdentity
from mailer.tokens import TokenSigner, rsvp_url, unsubscribe_url

ROOT = Path(__file__).resolve().parent.parent
EVENT = ROOT / "templates" / "events" / "london-public-meeting.md"
SENDER = SenderIdentity(
    from_address="invitations@leftcom.example",
    from_name="Communist Workers' Organisation",
    base_url="https://lists.leftcom.example",
    unsubscribe_mailto="unsubscribe@leftcom.example",
)
NAMES = ["Zoë Martin", "José García", "Łukasz Nowak", "Amira Haddad", "Seán Ó Briain", "Priya Shah"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.uk", "posteo.de", "example.org", "bücher.de"]
CAMPAIGN_ID, LIST_ID = 1, 1
SIGNER = TokenSigner(b"bench-render-key-0123456789abcdef")


def recipients(count: int) -> list[Recipient]:
    rng = random.Random(42)
    return [
        Recipient(
            subscriber_id=i,
            email=f"user{i}@{rng.choice(DOMAINS)}",
            name=f"{rng.choice(NAMES)}{'' if i % 7 else f' {i}'}",  # some names never repeat
            attributes={"city": rng.choice(["London", "Leeds", "Glasgow"])},
        )
        for i in range(count)
    ]


def new_builder() -> InvitationBuilder:
    return InvitationBuilder(
        load_event(EVENT),
        sender=SENDER,
        campaign_id=CAMPAIGN_ID,
        list_name="CWO London",
        templates_dir=ROOT / "templates",
    )


class Options:
    """--wire and --base-url, for the parent and the --variant children alike."""

    wire = False
    base_url = SENDER.base_url


def links(person: Recipient) -> tuple[str, str]:
    """The unsubscribe and RSVP links, signed as the engine signs them."""
    base = Options.base_url
    token = SIGNER.sign(
        subscriber_id=person.subscriber_id, list_id=LIST_ID, campaign_id=CAMPAIGN_ID
    )
    rsvp = SIGNER.sign_rsvp(subscriber_id=person.subscriber_id, campaign_id=CAMPAIGN_ID)
    return unsubscribe_url(base, token), rsvp_url(base, rsvp)


def timed_run(builder: InvitationBuilder, people: list[Recipient]) -> float:
    """Seconds per recipient for tokens + render + compose of everyone in `people` (and
    with --wire the transport's pass over the bytes)."""
    wire = Options.wire
    start = time.process_time()
    for person in people:
        unsubscribe, rsvp = links(person)
        message = builder.build(
            person,
            unsubscribe_url=unsubscribe,
            rsvp_url=rsvp,
            message_id=f"<{person.subscriber_id:032x}@leftcom.example>",
        )
        if wire and not getattr(message, "wire_ready", False):  # a tree before fe98b94
            _dot_stuff(message.data)
    return (time.process_time() - start) / len(people)


def stage_runs(builder: InvitationBuilder, people: list[Recipient]) -> dict[str, float]:
    """Seconds per recipient of each step alone (each loop over `people` keeps caches warm
    as a campaign would; the whole build is timed as the sum's check)."""
    out: dict[str, float] = {}
    start = time.process_time()
    urls = [links(person) for person in people]
    out["tokens (2 HMACs)"] = time.process_time() - start
    start = time.process_time()
    for person, (unsubscribe, rsvp) in zip(people, urls, strict=True):
        builder.render(person, unsubscribe_url=unsubscribe, rsvp_url=rsvp)
    out["render (Jinja, text tidy)"] = time.process_time() - start
    start = time.process_time()
    for person, (unsubscribe, rsvp) in zip(people, urls, strict=True):
        builder.build(
            person, unsubscribe_url=unsubscribe, rsvp_url=rsvp, message_id="<a@b.example>"
        )
    out["build (render + compose)"] = time.process_time() - start
    return {name: seconds / len(people) for name, seconds in out.items()}


def baseline_run(builder: InvitationBuilder, people: list[Recipient]) -> float:
    """Seconds per recipient when the same rendered parts go through EmailMessage."""
    ics = builder.ics
    start = time.process_time()
    for person in people:
        url, rsvp = links(person)
        rendered = builder.render(person, unsubscribe_url=url, rsvp_url=rsvp)
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = f'"{SENDER.from_name}" <{SENDER.from_address}>'
        msg["To"] = f"{person.name} <{person.email}>"
        msg["Subject"] = rendered.subject
        msg["List-Unsubscribe"] = f"<{url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        msg.add_attachment(ics, maintype="text", subtype="calendar", filename="invite.ics")
        msg.as_bytes()
    return (time.process_time() - start) / len(people)


def child(count: int) -> None:
    """One measurement (for --variant): warm up, one timed run, µs per recipient as JSON."""
    builder = new_builder()
    people = recipients(count)
    timed_run(builder, people[:500])
    print(json.dumps({"us": timed_run(builder, people) * 1e6, "bytes": _size(builder)}))


def _size(builder: InvitationBuilder) -> int:
    person = recipients(1)[0]
    unsubscribe, rsvp = links(person)
    message = builder.build(
        person, unsubscribe_url=unsubscribe, rsvp_url=rsvp, message_id="<a@b.c>"
    )
    return len(message.data)


def measure_in_child(src: Path | None, count: int) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    flags = ["--base-url", Options.base_url, *(["--wire"] if Options.wire else [])]
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--recipients", str(count), *flags],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.splitlines()[-1]))


def compare(variants: dict[str, Path | None], count: int, runs: int) -> None:
    results: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, float] = {}
    order = list(variants.items())
    for _ in range(runs):
        for name, src in order:
            got = measure_in_child(src, count)
            results[name].append(got["us"])
            sizes[name] = got["bytes"]
        order.reverse()  # ABBA: neither tree always runs first
    here = results["this tree"]
    print(f"recipients per run: {count}, runs: {runs} (each a child process, trees alternating)")
    for name, values in results.items():
        ratios = [v / h for v, h in zip(values, here, strict=True)]
        print(
            f"{name:>12}: median {statistics.median(values):6.1f} µs/recipient (runs "
            + " ".join(f"{v:.1f}" for v in values)
            + "); x this tree per run: "
            + " ".join(f"{r:.2f}" for r in ratios)
            + f", median {statistics.median(ratios):.2f}; message {sizes[name]:.0f} B"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="also time each step alone")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SRC")
    parser.add_argument("--wire", action="store_true", help="add the transport's dot-stuffing")
    parser.add_argument("--base-url", default=SENDER.base_url, help="the links' base")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Options.wire, Options.base_url = args.wire, args.base_url
    if args.child:
        child(args.recipients)
        return
    if args.variant:
        variants: dict[str, Path | None] = {"this tree": None}
        for given in args.variant:
            name, _, src = given.partition("=")
            variants[name] = Path(src).resolve()
        compare(variants, args.recipients, args.runs)
        return
    started = time.process_time()
    builder = new_builder()
    compile_ms = (time.process_time() - started) * 1000
    people = recipients(args.recipients)
    timed_run(builder, people[:500])  # warm caches (IDNA, QP lines) as a campaign would
    results = [timed_run(builder, people) for _ in range(args.runs)]
    median = statistics.median(results)
    sample = people[: max(args.recipients // 20, 200)]
    baseline = statistics.median(baseline_run(builder, sample) for _ in range(3))
    print(f"compile once per campaign: {compile_ms:.1f} ms ({CONTENT_TYPE.split(';')[0]} attached)")
    print(f"recipients per run: {args.recipients}, runs: {args.runs}; {_size(builder)} B a message")
    print(
        f"tokens+render+compose: {median * 1e6:.1f} µs/recipient (median; runs: "
        + ", ".join(f"{r * 1e6:.1f}" for r in results)
        + ")"
    )
    print(f"throughput: {1 / median:,.0f} messages/s on one core (target >= 6,500)")
    print(
        f"EmailMessage baseline: {baseline * 1e6:.1f} µs/recipient on {len(sample)} recipients; "
        f"hand-assembled is {baseline / median:.1f}x faster"
    )
    if args.stages:
        stages = [stage_runs(builder, people) for _ in range(args.runs)]
        for name in stages[0]:
            values = [s[name] * 1e6 for s in stages]
            print(f"  {name}: {statistics.median(values):.1f} µs (median of {len(values)})")


if __name__ == "__main__":
    main()
