"""Small readers shared by the Lists, Subscribers and Events pages: form fields, query
parameters, and the fixed sentences a redirect may ask a page to show.

A page shown after a POST says what was done through `?done=KEY`, a key from NOTICES:
never text from the request, so nothing a link carries is written into the page.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

NOTICES = {
    "created": "List created.",
    "described": "Title and description saved.",
    "renamed": "List renamed. Links in mail already sent keep working.",
    "added": "Subscriber added.",
    "already": "That address is on the list already; nothing changed.",
    "unsubscribed": "Unsubscribed.",
    "already-unsubscribed": "They were unsubscribed already; nothing changed.",
    "resubscribed": "Resubscribed, with the reason kept in their history.",
    "unchanged": "They are subscribed already; nothing changed.",
    "erased": "Erased: their details are deleted; their unsubscribes stay on record.",
}


def field(form: FormData, name: str) -> str:
    """A text field of a posted form ('' when absent, or when it is a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def query_text(request: Request, name: str, *, limit: int = 200) -> str:
    return request.query_params.get(name, "")[:limit]


def query_int(request: Request, name: str) -> int | None:
    """A whole number from the query string; None when absent or not a number."""
    value = request.query_params.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))
