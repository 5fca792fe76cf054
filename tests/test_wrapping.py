"""The text part's line filling (message/wrapping.py) gives exactly textwrap's lines."""

from __future__ import annotations

import re
import textwrap

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer.message.render import WIDTH, tidy_text
from mailer.message.wrapping import fill, fill_spaced

# Spaces in runs, words of every length (URLs longer than a line), the odd whitespace
# that sends fill() to textwrap, and characters textwrap does not count as whitespace
# but str.strip does (NBSP, U+2003, the separators U+001C-U+001F).
_PIECES = ["a", "b", "é", " ", " ", " ", "https://x.example/r/TOKEN?answer=yes"]
_ODD = list("\t\n\r\x0b\x0c\xa0\u2003\x1c\x1f")
_TEXT = st.lists(st.sampled_from(_PIECES) | st.sampled_from(_ODD), max_size=60).map("".join)
_PLAIN = st.lists(st.sampled_from(_PIECES), max_size=80).map("".join)
_INDENT = st.sampled_from(["", "  ", "* ", "> ", "> > ", "   1. ", " " * 80])


def _textwrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


@settings(max_examples=3000)
@given(text=_TEXT | _PLAIN, width=st.integers(1, 90), first=_INDENT, rest=_INDENT)
@example(
    text="I'll come:  https://lists.example.org/r/TOKEN?answer=yes", width=72, first="", rest=""
)
@example(text="   abcdefghij", width=10, first="", rest="")
@example(text="   ", width=72, first="", rest="")
@example(text="a  b", width=2, first="", rest="")
@example(text="ab \xa0 cd", width=3, first="", rest="")
def test_fill_is_textwraps_result(text: str, width: int, first: str, rest: str) -> None:
    """Any text, width and indents (wider than the line too): the same lines as textwrap
    with the text part's settings, whichever path fill() took."""
    assert fill(text, width, first=first, rest=rest) == _textwrap(text, width, first, rest)


@settings(max_examples=2000)
@given(text=_PLAIN, width=st.integers(1, 90), first=_INDENT, rest=_INDENT)
@example(
    text="Maybe:      https://lists.leftcom.example/r/BAAHdKh_Nxr5OWyhXM37WMRkdw",
    width=72,
    first="",
    rest="",
)
def test_the_fast_filler_alone_is_textwraps_result(
    text: str, width: int, first: str, rest: str
) -> None:
    """The filler fill() uses for text spaced with " " only, called directly (so the
    property above cannot pass merely because fill() handed the text to textwrap)."""
    assert fill_spaced(text, width, first=first, rest=rest) == _textwrap(text, width, first, rest)


def _tidy_text_before(text: str, cache: dict[str, str] | None = None) -> str:
    """render.tidy_text as it was before wrapping.fill (commit 1516757), the reference."""
    blank_runs = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
    prefix_re = re.compile(r"[ >]*(?:[*-] |\d+\. )?")

    def wrap(text: str, first: str, rest: str) -> str:
        lines: list[str] = []
        for n, segment in enumerate(text.split("\n")):
            lines += _textwrap(segment, WIDTH, first if n == 0 else rest, rest) or [rest.rstrip()]
        return "\n".join(lines)

    text = blank_runs.sub("\n\n", text).strip("\n") + "\n"
    lines = text.split("\n")
    for n, line in enumerate(lines):
        if len(line) > WIDTH + 6 and " " in line.strip():
            done = cache.get(line) if cache is not None else None
            if done is None:
                prefix = prefix_re.match(line)
                lead = prefix.group() if prefix else ""
                rest = lead if lead.strip(" ") == ">" * lead.count(">") else " " * len(lead)
                done = wrap(line[len(lead) :], lead, rest)
                if cache is not None and len(cache) < 1024:
                    cache[line] = done
            lines[n] = done
    return "\n".join(lines)


_LINE_PIECES = ["word", "é", " ", "  ", "\n", "\n\n\n", " \t\n", "> ", "* ", "1. ", "\r", "\xa0"]
_LONG = "https://lists.leftcom.example/r/BAAHdKh_Nxr5OWyhXM37WMRkdw?answer=maybe"
_BODY = st.lists(st.sampled_from([*_LINE_PIECES, _LONG, "x" * 70]), max_size=40).map("".join)


@settings(max_examples=1500)
@given(text=_BODY)
@example(text=f"I'll come:  {_LONG}\nMaybe:      {_LONG}\n\n\n\nx\n")
@example(text=f"> > * {_LONG} {_LONG}\n   1. {'word ' * 20}\n")
def test_tidy_text_is_what_it_was(text: str) -> None:
    """tidy_text (long lines found by a regex, filled by wrapping.fill) gives the text the
    line-by-line version with textwrap gave, with and without its cache of lines."""
    assert tidy_text(text) == _tidy_text_before(text)
    cache: dict[str, str] = {}
    assert tidy_text(text, cache) == tidy_text(text, cache) == _tidy_text_before(text)
