"""Greedy line filling for the plain-text part: textwrap's result, without textwrap's cost.

The text part re-wraps, per recipient, every line a value made long (the RSVP links are
three such lines in the example invitation). `textwrap.wrap` costs ~10 µs a line here
(a TextWrapper per call, a regex split into chunks, a Python loop over them); `fill`
gives the same lines with a few C-level string searches, for text whose only whitespace
is the space character. Anything else (tabs, other line or Unicode spaces, whose
treatment by textwrap differs in small ways) goes to textwrap itself, so the output is
textwrap's in every case (tests/test_wrapping.py checks that with hypothesis).

The settings are fixed to what the text part uses: break_long_words and
break_on_hyphens off (a URL must stay on one line to stay clickable), whitespace dropped
at line ends, no tab expansion needed.
"""

from __future__ import annotations

import re
import textwrap

# Whitespace other than " " (str.isspace's set, which str.strip and textwrap's line-end
# test use): present, textwrap decides.
_OTHER_SPACE = re.compile(r"[^\S ]")


def fill(text: str, width: int, *, first: str = "", rest: str = "") -> list[str]:
    """`textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
    break_long_words=False, break_on_hyphens=False)`, faster for text spaced with " "."""
    if _OTHER_SPACE.search(text) is not None:
        return textwrap.wrap(
            text,
            width,
            initial_indent=first,
            subsequent_indent=rest,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return fill_spaced(text, width, first=first, rest=rest)


def fill_spaced(text: str, width: int, *, first: str = "", rest: str = "") -> list[str]:
    """`fill` for text whose only whitespace is " " (the caller has checked)."""
    # textwrap's chunks are the runs of spaces and the words between them; a line takes
    # whole chunks while they fit, a chunk too long for any line goes alone on one, and
    # a run of spaces is dropped where it ends a line or starts one (except the first).
    lines: list[str] = []
    size = len(text)
    start = 0
    while start < size:
        if lines and text[start] == " ":
            start = size - len(text[start:].lstrip(" "))
            if start == size:
                break
        indent = rest if lines else first
        edge = start + width - len(indent)  # the first position that does not fit
        if edge >= size:
            end = size
        elif edge > start and (text[edge - 1] == " ") != (text[edge] == " "):
            end = edge  # a chunk ends exactly at the edge
        else:
            end = -1
            if edge > start:  # the last chunk boundary before the edge, if any
                if text[edge] == " ":
                    boundary = start + len(text[start:edge].rstrip(" "))
                else:
                    boundary = text.rfind(" ", start, edge) + 1
                if boundary > start:
                    end = boundary
            if end == -1:  # not even the first chunk fits: it goes alone
                if text[start] == " ":
                    end = size - len(text[start:].lstrip(" "))
                else:
                    end = text.find(" ", start)
                    end = size if end == -1 else end
        line = text[start:end].rstrip(" ")
        if line:
            lines.append(indent + line)
        start = end
    return lines
