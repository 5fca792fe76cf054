"""Names and subjects -> header values that every reader decodes the same way.

Two kinds of value reach a header with free text in them: a display name (`To`, `From`:
an RFC 5322 phrase before the address) and the `Subject` (unstructured text). Both are
built from whole words:

- Words in printable ASCII go out as they are: in a display name inside quoted-strings
  (`"Communist Workers' Organisation"`), in a Subject bare. Base64 of plain ASCII makes
  SpamAssassin's FROM_EXCESS_BASE64 fire and helps no reader.
- Other words (non-ASCII, or text that looks like an encoded-word) become RFC 2047
  encoded-words: Q or B, whichever is shorter (always Q for ASCII), whole characters each,
  a run of such words joined into as few words as fit.
- Every line holding an encoded-word is at most 76 characters, its header's name included
  (RFC 2047 §2); an encoded-word is split at a space when it must be split, never inside a
  word unless the word alone is longer than a line. Between two adjacent encoded-words
  the space is inside the first one: RFC 2047 §6.2 readers drop the folding whitespace
  between encoded-words. (Python's `policy.default` keeps it in a display name, so there a
  name too long for one line shows one extra space where it was split; inside a word
  that would have read "Alexa ndra".)

A display name is also stripped of anything that looks like an address (`<x@y>`,
`x@y`): a reader that decodes the header before parsing it would otherwise show a second
address, or a name that pretends to be one.
"""

from __future__ import annotations

import base64
import functools
import re

LINE = 76
"""RFC 2047 §2: a header line holding an encoded-word, its header's name included."""
_WORD = 75  # RFC 2047 §2: one encoded-word, "=?utf-8?q?" and "?=" included
_OVERHEAD = len("=?utf-8?q?") + len("?=")
_LONGEST_PLAIN = 900  # a longer unbreakable plain word is encoded (lines stay < 998)
# RFC 2047 §5(3): the only characters Q may leave as they are in a phrase; valid anywhere.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTES = [chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)]

# What a reader could take for an address: <...> groups (any bracket lookalike), words
# with an at sign (or a lookalike) inside, and stray brackets.
_BRACKETS = "<>\uff1c\uff1e\u2039\u203a\u3008\u3009\u27e8\u27e9\ufe64\ufe65"
_AT_SIGNS = "@\uff20\ufe6b"
_BRACKETED = re.compile(f"[{_BRACKETS}][^{_BRACKETS}]*[{_BRACKETS}]")
_AT_WORD = re.compile(rf"\S*[^\s{_AT_SIGNS}][{_AT_SIGNS}]+[^\s{_AT_SIGNS}]\S*")
_STRAY = re.compile(f"[{_BRACKETS}]")
_ADDRESS_HINTS = frozenset(_BRACKETS + _AT_SIGNS)


def display_name(name: str) -> str:
    """The name as it will be shown: address-like parts dropped, whitespace collapsed.

    `Zoë "Z" O'Brien <x@y>` -> `Zoë "Z" O'Brien`; `support@bank.example` -> ``.
    """
    if not _ADDRESS_HINTS.isdisjoint(name):
        name = _STRAY.sub(" ", _AT_WORD.sub(" ", _BRACKETED.sub(" ", name)))
    return " ".join(name.split())


def _plain(word: str) -> bool:
    # Printable ASCII that no reader would mistake for (part of) an encoded-word.
    return word.isascii() and word.isprintable() and "=?" not in word


class _Lines:
    """A header value being folded: units placed on lines of at most LINE characters."""

    def __init__(self, field: str) -> None:
        self.lines = [f"{field}:"]
        self.fresh = True  # nothing placed on the current line yet

    def room(self) -> int:
        """Characters a unit may have on the current line (after its separating space)."""
        return LINE - len(self.lines[-1]) - 1

    def put(self, unit: str) -> None:
        """Place `unit` after one space, on a new line if it does not fit this one."""
        if not self.fresh and len(unit) > self.room():
            self.fold()
        self.lines[-1] += f" {unit}"
        self.fresh = False

    def fold(self) -> None:
        self.lines.append("")
        self.fresh = True

    def value(self) -> str:
        """Everything after `Field: `, folded with CRLF + space."""
        first, *rest = self.lines
        return "\r\n".join([first.partition(": ")[2], *rest])


def _encoded_word(data: bytes, use_q: bool) -> str:
    if use_q:
        return "=?utf-8?q?" + "".join([_Q_BYTES[b] for b in data]) + "?="
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


def _encoded_run(text: str, lines: _Lines) -> None:
    """`text` as encoded-words on `lines`, each filling the room its line has left."""
    data = text.encode("utf-8")
    q_size = sum(len(_Q_BYTES[b]) for b in data)
    b_size = 4 * -(-len(data) // 3)
    use_q = text.isascii() or q_size <= b_size
    if min(_WORD, lines.room()) - _OVERHEAD >= (q_size if use_q else b_size):
        # The usual case (a name, a short subject): one encoded-word on this line.
        lines.put(_encoded_word(data, use_q))
        return
    chars = [char.encode("utf-8") for char in text]
    q_cost = [sum(len(_Q_BYTES[b]) for b in char) for char in chars]

    def fits(start: int, budget: int) -> int:
        """The largest end such that text[start:end] encodes within `budget` characters."""
        used = 0
        for end in range(start, len(chars)):
            used += q_cost[end] if use_q else len(chars[end])
            if (used if use_q else 4 * -(-used // 3)) > budget:
                return end
        return len(chars)

    start = 0
    while start < len(chars):
        budget = min(_WORD, lines.room()) - _OVERHEAD
        end = fits(start, budget)
        if end < len(chars):
            space = text.rfind(" ", start, end)
            word_end = text.find(" ", start)
            word_end = len(chars) if word_end < 0 else word_end
            if space >= start:
                end = space + 1  # split between words, the space inside this one
            elif not lines.fresh and fits(start, _WORD - _OVERHEAD) >= word_end:
                lines.fold()  # the word fits whole on a line of its own
                continue
            if end == start:
                if lines.fresh:  # cannot happen: every character fits an empty line
                    raise AssertionError("encoded-word budget below one character")
                lines.fold()
                continue
        lines.put(_encoded_word(text[start:end].encode("utf-8"), use_q))
        start = end
        if start < len(chars):
            lines.fold()


def _runs(words: list[str]) -> list[tuple[bool, list[str]]]:
    """Consecutive words grouped by whether they can go out plain."""
    runs: list[tuple[bool, list[str]]] = []
    for word in words:
        plain = _plain(word) and len(word) <= _LONGEST_PLAIN
        if runs and runs[-1][0] == plain:
            runs[-1][1].append(word)
        else:
            runs.append((plain, [word]))
    return runs


def _quoted_run(words: list[str], lines: _Lines) -> None:
    """Plain words as quoted-strings, as many per line as fit (RFC 5322 phrase)."""
    escaped = [word.replace("\\", "\\\\").replace('"', '\\"') for word in words]
    start = 0
    while start < len(escaped):
        end, width = start, 1  # the opening quote
        while end < len(escaped) and width + (end > start) + len(escaped[end]) + 1 <= (
            lines.room()
        ):
            width += (end > start) + len(escaped[end])
            end += 1
        if end == start:
            if not lines.fresh:
                lines.fold()
                continue
            end = start + 1  # one word longer than a line: it has a line of its own
        lines.put('"' + " ".join(escaped[start:end]) + '"')
        start = end


@functools.lru_cache(maxsize=4096)
def _phrase(name: str, field: str) -> tuple[tuple[str, ...], bool]:
    """The folded lines of a display name, and whether the last line has any unit."""
    lines = _Lines(field)
    for plain, words in _runs(name.split(" ")):
        if plain:
            _quoted_run(words, lines)
        else:
            _encoded_run(" ".join(words), lines)
    return tuple(lines.lines), lines.fresh


def _single_line(name: str, address: str, *, room: int) -> str | None:
    """`name <address>` when it fits `room` with each run of words whole (most names):
    the same units the folding path would make, ~3x faster."""
    units: list[str] = []
    for plain, words in _runs(name.split(" ")):
        text = " ".join(words)
        if plain:
            units.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
            continue
        data = text.encode("utf-8")
        q_size = sum(len(_Q_BYTES[b]) for b in data)
        use_q = text.isascii() or q_size <= 4 * -(-len(data) // 3)
        units.append(_encoded_word(data, use_q))
    units.append(f"<{address}>")
    value = " ".join(units)
    return value if len(value) <= room else None


def mailbox(name: str, address: str, *, field: str) -> str:
    """`Name <address>` for the `field` header (To, From), folded; `address` is ASCII.

    Address-like parts of the name are dropped first (see display_name); a name left
    empty gives the bare address.
    """
    name = display_name(name)
    if not name:
        return address
    if _plain(name) and len(field) + len(name) + len(address) + 7 <= LINE:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        if len(field) + len(quoted) + len(address) + 7 <= LINE:
            return f'"{quoted}" <{address}>'
    if (short := _single_line(name, address, room=LINE - len(field) - 2)) is not None:
        return short
    phrase, fresh = _phrase(name, field)
    lines = _Lines(field)
    lines.lines, lines.fresh = list(phrase), fresh
    lines.put(f"<{address}>")
    return lines.value()


@functools.lru_cache(maxsize=256)
def unstructured(text: str, *, field: str = "Subject") -> str:
    """A Subject value: plain words as they are, the others encoded; folded (see above).

    Runs of whitespace become one space (they carry no meaning in a subject line).
    """
    lines = _Lines(field)
    for plain, words in _runs(text.split()):
        if plain:
            for word in words:
                lines.put(word)
        else:
            _encoded_run(" ".join(words), lines)
    return lines.value()


def encoded_words(text: str, *, field: str) -> str:
    """All of `text` as RFC 2047 encoded-words for the `field` header, folded."""
    lines = _Lines(field)
    _encoded_run(text, lines)
    return lines.value()
