"""One log format for every process (`mailer worker`, `mailer serve`, `mailer send`):

    2026-11-30 12:00:00,000 INFO mailer.worker campaign=3 event=progress sent=120 rate=49.8/s

A timestamp, the level, the logger, then `key=value` fields that a person can read and
`grep`/`awk` can split. Values with spaces are repr()-quoted. Secrets never go in a field.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def fields(**values: object) -> str:
    """`key=value` pairs in the order given (None left out); strings with spaces or quotes
    are quoted."""
    return " ".join(f"{k}={_value(v)}" for k, v in values.items() if v is not None)


def _value(value: object) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in "\"'=" for c in text):
        return repr(text)
    return text


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations say enough on error
    # flufl.bounce logs each of its 17 detectors at INFO for every message it scans.
    logging.getLogger("flufl.bounce").setLevel(logging.WARNING)
