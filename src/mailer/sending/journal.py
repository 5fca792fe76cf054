"""A local append-only journal that makes a campaign's in-flight state survive kill -9.

The ledger in the database is written in batches (one transaction per few hundred
outcomes), so on its own a crash would lose the outcomes of the last batch and could not
tell a message that never left from one the relay accepted. The journal closes that gap:
one unbuffered `write()` per event lands in the OS page cache at once, which survives the
death of the process (not of the machine; the ledger's `unknown` state covers that).

Lines (JSON): {"b": id} when a message's body starts to go to the relay; after that the
relay may have it. {"o": id, ...} with the outcome. Only the LAST line about a row counts
(a row deferred once and retried has an old outcome followed by a new "b"). On resume, rows
left `sending` are settled from it: an outcome is applied, a started body becomes
`unknown`, anything else never left and is queued again.

Each sender (host:pid) has its own file, and a resume reads only the file of the sender
that held the campaign: a journal on this host says nothing about rows another machine,
or another process, had in flight. Without that sender's file every such row is `unknown`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mailer.clock import as_utc
from mailer.models import DeliveryStatus, RecordedOutcome


@dataclass(slots=True)
class JournalState:
    exists: bool
    started: set[int] = field(default_factory=set)
    outcomes: dict[int, RecordedOutcome] = field(default_factory=dict)


def journal_path(var_dir: Path, database_url: str, campaign_id: int, owner: str) -> Path:
    """One file per (database, campaign, sender): stores and senders never share one."""
    from sqlalchemy.engine import make_url

    identity = make_url(database_url).render_as_string(hide_password=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    sender = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)
    return var_dir / "journal" / f"{digest}-campaign-{campaign_id}-{sender}.jsonl"


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def body_started(self, delivery_id: int) -> None:
        os.write(self._fd, b'{"b":%d}\n' % delivery_id)

    def outcome(self, outcome: RecordedOutcome) -> None:
        record = {
            "o": outcome.delivery_id,
            "s": outcome.subscriber_id,
            "st": outcome.status.value,
            "a": outcome.attempts,
            "c": outcome.code,
            "r": outcome.reply,
            "m": outcome.message_id,
            "n": outcome.next_attempt_at.isoformat() if outcome.next_attempt_at else None,
        }
        if outcome.relay is not None:  # MAILER_RELAYS only: single-relay lines stay as they were
            record["rl"] = outcome.relay
        os.write(self._fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def close(self, *, remove: bool = False) -> None:
        """Close; `remove` once the ledger holds everything the journal knew."""
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> JournalState:
        from datetime import datetime

        if not path.exists():
            return JournalState(exists=False)
        state = JournalState(exists=True)
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash mid-write: that event never happened
                if "b" in record:
                    delivery_id = int(record["b"])
                    state.started.add(delivery_id)
                    state.outcomes.pop(delivery_id, None)  # an older attempt's outcome
                elif "o" in record:
                    state.started.discard(int(record["o"]))
                    next_at = record.get("n")
                    state.outcomes[int(record["o"])] = RecordedOutcome(
                        delivery_id=int(record["o"]),
                        subscriber_id=int(record["s"]),
                        status=DeliveryStatus(record["st"]),
                        attempts=int(record["a"]),
                        code=record.get("c"),
                        reply=record.get("r") or "",
                        message_id=record.get("m"),
                        next_attempt_at=as_utc(datetime.fromisoformat(next_at))
                        if next_at
                        else None,
                        relay=record.get("rl"),
                    )
        return state
