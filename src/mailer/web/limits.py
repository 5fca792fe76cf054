"""The web app's default limits, kept apart so the CLI can show them without importing
Starlette (which costs ~0.3 s on every `mailer` command)."""

from __future__ import annotations

MAX_BODY_BYTES = 16 * 1024
"""A one-click body is 26 bytes and the page's own form posts nothing."""

POST_RATE_PER_MINUTE = 600.0
POST_BURST = 120
"""POSTs with an invalid link allowed per client address (valid links are never limited).
Generous on purpose: a mailbox provider relays many users' one-click POSTs from a handful
of addresses, and some of those links will be mangled or belong to erased subscribers."""
