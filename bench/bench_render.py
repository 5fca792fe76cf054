"""Render + compose the example invitation for N recipients; print µs/recipient and messages/s.

Target (issue "Event invitations"): at most 150 µs per recipient (>= 6,500 messages/s on
one core). The EmailMessage baseline (construct + serialise the same parts with the stdlib)
runs in the same process on a sample so the ratio is measured under the same conditions.
Run: .venv/bin/python bench/bench_render.py [RECIPIENTS] [RUNS]
"""

from __future__ import annotations

import email.policy
import random
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from mailer.message.calendar import CONTENT_TYPE
from mailer.message.compose import InvitationBuilder
from mailer.message.event import load_event
from mailer.models import Recipient, SenderIdentity

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


def recipients(count: int) -> list[Recipient]:
    rng = random.Random(42)
    return [
        Recipient(
            subscriber_id=i,
            email=f"user{i}@{rng.choice(DOMAINS)}",
            name=rng.choice(NAMES),
            attributes={"city": rng.choice(["London", "Leeds", "Glasgow"])},
        )
        for i in range(count)
    ]


def timed_run(builder: InvitationBuilder, people: list[Recipient]) -> float:
    """Seconds per recipient for render + compose of everyone in `people`."""
    base = SENDER.base_url
    start = time.perf_counter()
    for person in people:
        builder.build(person, unsubscribe_url=f"{base}/u/tok{person.subscriber_id:08d}")
    return (time.perf_counter() - start) / len(people)


def baseline_run(builder: InvitationBuilder, people: list[Recipient]) -> float:
    """Seconds per recipient when the same rendered parts go through EmailMessage."""
    base = SENDER.base_url
    ics = builder.ics
    start = time.perf_counter()
    for person in people:
        url = f"{base}/u/tok{person.subscriber_id:08d}"
        rendered = builder.render(person, unsubscribe_url=url)
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
    return (time.perf_counter() - start) / len(people)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    started = time.perf_counter()
    builder = InvitationBuilder(
        load_event(EVENT),
        sender=SENDER,
        campaign_id=1,
        list_name="CWO London",
        templates_dir=ROOT / "templates",
    )
    compile_ms = (time.perf_counter() - started) * 1000
    people = recipients(count)
    timed_run(builder, people[:500])  # warm caches (IDNA, QP lines) as a campaign would
    results = [timed_run(builder, people) for _ in range(runs)]
    median = statistics.median(results)
    sample = people[: max(count // 20, 200)]
    baseline = statistics.median(baseline_run(builder, sample) for _ in range(3))
    print(f"compile once per campaign: {compile_ms:.1f} ms ({CONTENT_TYPE.split(';')[0]} attached)")
    print(f"recipients per run: {count}, runs: {runs}")
    print(
        f"render+compose: {median * 1e6:.1f} µs/recipient (median; runs: "
        + ", ".join(f"{r * 1e6:.1f}" for r in results)
        + ")"
    )
    print(f"throughput: {1 / median:,.0f} messages/s on one core (target >= 6,500)")
    print(
        f"EmailMessage baseline: {baseline * 1e6:.1f} µs/recipient on {len(sample)} recipients; "
        f"hand-assembled is {baseline / median:.1f}x faster"
    )


if __name__ == "__main__":
    main()
