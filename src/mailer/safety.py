"""Guards for text that may end up in a mail header.

CPython 3.11.7 (on these machines) still lets an encoded newline in a header value add a
header (CVE-2024-6923), and a bare CR or LF splits a header anywhere. So every value that
can reach a header is checked here, at the edge, before it is stored or composed.
"""

from __future__ import annotations

import re

from mailer.errors import UnsafeValueError

# C0 controls except TAB, DEL, C1 controls, and the Unicode line/paragraph separators that
# some mail software treats as line breaks.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")

MAX_FIELD_LENGTH = 1000
"""Longest value accepted in any subscriber field; RFC 5322 caps a line at 998 octets."""


def find_unsafe(value: str) -> str | None:
    """Return a description of the first unsafe character in `value`, or None."""
    match = _UNSAFE.search(value)
    if match is None:
        return None
    return f"control character U+{ord(match.group()):04X} at position {match.start() + 1}"


def ensure_header_safe(value: str, *, field: str, max_length: int = MAX_FIELD_LENGTH) -> str:
    """Return `value` unchanged if it can safely reach a header; raise UnsafeValueError if not."""
    problem = find_unsafe(value)
    if problem is not None:
        raise UnsafeValueError(f"{field}: {problem} is not allowed", field=field)
    if len(value) > max_length:
        raise UnsafeValueError(
            f"{field}: {len(value)} characters is longer than the {max_length} allowed",
            field=field,
        )
    return value


# OWASP "CSV Injection": Excel, LibreOffice and Google Sheets run a cell that starts with
# = + - or @ as a formula (=HYPERLINK, DDE payloads), and may drop a leading TAB or CR
# first. Leading apostrophes are included so that the escape below is exactly reversible.
_FORMULA_START = re.compile(r"'*[=+\-@\t\r]")


def spreadsheet_safe(value: str) -> str:
    """`value` as a CSV cell that no spreadsheet runs as a formula.

    As OWASP advises, such a cell gets a leading `'`, which spreadsheets read as "this is
    text". A value that already starts with apostrophes before such a character gets one
    more, so `undo_spreadsheet_safe` gives back every value exactly.
    """
    if _FORMULA_START.match(value):
        return "'" + value
    return value


def undo_spreadsheet_safe(cell: str) -> str:
    """The value `spreadsheet_safe` made `cell` from: drop the one `'` it adds, nothing else."""
    if cell.startswith("'") and _FORMULA_START.match(cell, 1):
        return cell[1:]
    return cell


# Whitespace that looks like a space to a reader but is not one: TAB, NEL (U+0085), NBSP,
# the Unicode spaces (U+2000-200A, U+202F, U+205F, U+3000, ...) and the line and paragraph
# separators (U+2028/2029), which some mail software breaks a line at.
_ODD_SPACE = "\t\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Format characters (Unicode category Cf) render as nothing, or reorder what follows: the
# bidi overrides and isolates (U+202A-202E, U+2066-2069) make "Dear \u202elive," read
# "Dear evil,". ZWNJ and ZWJ (U+200C, U+200D) are kept: Persian and Indic names are spelt
# with them, and emoji sequences use ZWJ. tests/test_name_normalisation.py checks this
# list against unicodedata, so it cannot drift from Python's Unicode tables.
_FORMAT = (
    "\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_UNTIDY = re.compile(f"[{_ODD_SPACE}{_FORMAT}]|  ")
_ODD_SPACES = re.compile(f"[ {_ODD_SPACE}]+")
_FORMATS = re.compile(f"[{_FORMAT}]+")


def tidy_text(value: str) -> str:
    """`value` as one plain line for a name: every kind of space one ASCII space, format
    characters (bidi overrides, zero-width spaces, soft hyphens) gone, no edge spaces.

    Line breaks and other controls are left for `find_unsafe` to refuse: a CR or LF in a
    name is an attempt on a header, not a typing slip.
    """
    if _UNTIDY.search(value) is None:  # the hot path of an import: one scan, no copy
        return value.strip()
    return _ODD_SPACES.sub(" ", _FORMATS.sub("", value)).strip()
