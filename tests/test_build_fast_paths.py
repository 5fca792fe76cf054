"""The per-message fast paths give what the slow paths give, and nothing of anyone else's.

A builder keeps per-campaign caches keyed by content (quoted-printable lines, re-wrapped
text lines) and learns the lines its messages have in common (CommonLines); it encodes
lines of printable ASCII without b2a_qp; the sandbox short-cuts attribute lookups on plain
dicts; the signer keeps a keyed HMAC state per domain. Each must be invisible: the same
bytes as the path without it, for any recipient, in any order, in any campaign, and no
more reach into Python.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.errors import TemplateError
from mailer.message.compose import (
    InvitationBuilder,
    QuotedPrintable,
    _encode_line,
    _escape_line_starts,
    _wrap_printable,
)
from mailer.message.render import CommonLines, TextTidier, tidy_text
from mailer.message.templating import make_environment
from mailer.models import Recipient
from mailer.safety import find_unsafe
from mailer.tokens import RsvpClaims, TokenSigner, _tag, _varint
from test_compose import FRONT_FOR_TESTS, SENDER, TEMPLATES, make_builder

ONLINE = TEMPLATES / "events" / "online-reading-group.md"
_DATE = re.compile(rb"^Date: [^\r]*\r\n", re.MULTILINE)


def _bytes(builder: InvitationBuilder, person: Recipient, token: str) -> bytes:
    message = builder.build(
        person,
        unsubscribe_url=f"{SENDER.base_url}/u/{token}",
        rsvp_url=f"{SENDER.base_url}/r/{token}R" if builder.event.rsvp_enabled else None,
        message_id=f"<{person.subscriber_id:032x}@leftcom.example>",
    )
    # Date and the .ics (its DTSTAMP) hold the second they were made, not the builder's
    # work; everything personal comes before the .ics.
    head = message.data.partition(b'filename="invite.ics"')[0]
    return _DATE.sub(b"", head)


_NAME = (
    st.lists(st.sampled_from([*"Zoë MartinJosé ĆŁ'\"=.-", "From ", "x" * 40]), max_size=12)
    .map("".join)
    .filter(lambda name: find_unsafe(name) is None)
)
_PERSON = st.builds(
    Recipient,
    subscriber_id=st.integers(1, 10**9),
    email=st.sampled_from(["zoe@example.org", "jo@bücher.de", "a.b@example.com"]),
    name=_NAME,
    attributes=st.fixed_dictionaries({"city": st.sampled_from(["London", "Leeds", ""])}),
)
_TOKEN = st.text(alphabet="ABCxyz019_-", min_size=16, max_size=40)

# Built once and used for every example: their caches fill with earlier examples' lines.
_WARM = {"london": make_builder(), "online": make_builder(event_path=ONLINE)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(st.tuples(_PERSON, _TOKEN), min_size=1, max_size=4))
@example(people=[(Recipient(1, "zoe@example.org", "Zoë Martin", {}), "A" * 20)] * 2)
def test_warm_caches_give_a_fresh_builders_bytes(people: list[tuple[Recipient, str]]) -> None:
    """Recipients built by builders of two campaigns that have built many others before
    (their line caches full of other people's names and links) get byte for byte the
    message a brand-new builder of their own campaign makes for them, Date aside."""
    for kind, path in (
        ("london", TEMPLATES / "events" / "london-public-meeting.md"),
        ("online", ONLINE),
    ):
        fresh = make_builder(event_path=path)
        for person, token in people:
            warm = _bytes(_WARM[kind], person, token)
            assert warm == _bytes(fresh, person, token)
            assert token.encode() in warm.replace(b"=\r\n", b"")


def test_one_campaigns_lines_never_reach_another(tmp_path: Path) -> None:
    """Two campaigns whose templates differ only in a word, built in turns for the same
    people: each message holds its own campaign's word and never the other's, and the
    second person's message has nothing of the first person's."""
    builders = []
    for word in ("Tuesday", "Thursday"):
        folder = tmp_path / word
        folder.mkdir()
        path = folder / "event.md"
        path.write_text(FRONT_FOR_TESTS + f"See you on {word}, {{{{ subscriber.name }}}}.\n")
        builders.append(make_builder(event_path=path))
    ann = Recipient(1, "ann@example.org", "Ann Lee", {})
    bob = Recipient(2, "bob@example.org", "Bob Ray", {})
    for _ in range(2):
        for builder, word, other in zip(
            builders, ("Tuesday", "Thursday"), ("Thursday", "Tuesday"), strict=True
        ):
            for person, token, absent in (
                (ann, "annTOKEN" * 3, b"Bob"),
                (bob, "bobTOKEN" * 3, b"Ann"),
            ):
                data = _bytes(builder, person, token)
                assert f"See you on {word}, {person.name}.".encode() in data
                assert other.encode() not in data
                assert absent not in data
                assert (b"ann" if person is bob else b"bob") + b"TOKEN" not in data


# -- the sandbox's attribute lookup -------------------------------------------------------

_PLAIN = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
_OURS = make_environment(html=True)
_NAMES = (
    st.sampled_from(sorted(dir(dict)))
    | st.text(max_size=12)
    | st.sampled_from(
        ["title", "city", "__class__", "__init__", "_private", "update", "pop", "items", "mro"]
    )
)


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, jinja2.Undefined):
        return (
            type(ours) is type(theirs)
            and ours._undefined_name == theirs._undefined_name
            and ours._undefined_obj is theirs._undefined_obj
            and ours._undefined_hint == theirs._undefined_hint
        )
    return bool(ours == theirs) if callable(theirs) else ours is theirs


@settings(max_examples=1000)
@given(keys=st.lists(_NAMES, max_size=6), name=_NAMES)
@example(keys=["items"], name="items")
@example(keys=["__class__"], name="__class__")
@example(keys=["title"], name="title")
@example(keys=[], name="title")
def test_dict_attribute_lookup_is_the_sandboxes(keys: list[str], name: str) -> None:
    """`obj.name` on a plain dict, with any keys (dict method and dunder names included):
    what Jinja's immutable sandbox returns, the same value or the same Undefined (unsafe
    ones included), so the short cut grants nothing the sandbox refuses."""
    obj = {key: object() for key in keys}
    assert _same(_OURS.getattr(obj, name), _PLAIN.getattr(obj, name))


@pytest.mark.parametrize(
    "expression",
    [
        "event.__class__.__mro__",
        "subscriber.attributes.__class__.__base__.__subclasses__()",
        "event.items.__self__.__class__",
        "event.__init__.__globals__",
        "subscriber.attributes.update({'x': 1})",
        "subscriber.attributes.pop('city', 1)",
        "subscriber.__getitem__('name').__class__",
    ],
)
def test_dicts_give_no_way_out_of_the_sandbox(tmp_path: Path, expression: str) -> None:
    """The context's dicts (event, subscriber, attributes) through the short cut still
    give nothing of Python's internals and cannot be changed: a TemplateError."""
    path = tmp_path / "event.md"
    path.write_text(FRONT_FOR_TESTS + f"{{{{ {expression} }}}}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"unsafe|not allowed|undefined"):
        make_builder(event_path=path)


def test_dict_items_still_read_through_the_short_cut(tmp_path: Path) -> None:
    """Keys that are also dict method names stay methods (as in Jinja); ordinary keys
    read as items, a missing one as StrictUndefined's error."""
    path = tmp_path / "event.md"
    body = "{{ event.title }}|{{ subscriber.attributes.city }}|{{ event.items is callable }}\n"
    path.write_text(FRONT_FOR_TESTS + body, encoding="utf-8")
    builder = make_builder(event_path=path)
    person = Recipient(1, "a@example.org", "A", {"city": "Leeds", "items": "x"})
    text = builder.render(person, unsubscribe_url=f"{SENDER.base_url}/u/t").text
    assert "Test meeting|Leeds|True" in text
    with pytest.raises(TemplateError, match="city"):
        builder.render(
            Recipient(2, "b@example.org", "B", {}), unsubscribe_url="https://x.example/u/t"
        )


# -- tokens ---------------------------------------------------------------------------

_DOMAINS = [b"mailer/unsubscribe\x00", b"mailer/rsvp\x00", b"mailer/bounce\x00", b"x\x00"]


@settings(max_examples=300)
@given(
    key=st.binary(min_size=1, max_size=80), payloads=st.lists(st.binary(max_size=40), max_size=4)
)
def test_signing_state_gives_the_plain_hmac(key: bytes, payloads: list[bytes]) -> None:
    """The signer's kept HMAC state per domain gives HMAC-SHA256(key, DOMAIN | payload),
    whatever was signed before it (a copy is taken; the state is never fed)."""
    signer = TokenSigner(key)
    for payload in payloads * 2:
        for domain in _DOMAINS:
            expected = hmac.new(key, domain + payload, hashlib.sha256).digest()[:16]
            assert signer._tag(payload, domain) == expected == _tag(key, payload, domain=domain)


@given(value=st.integers(0, 2**63 - 1))
@example(value=127)
@example(value=128)
def test_varint_short_cut_is_leb128(value: int) -> None:
    """One-byte values from the table, the rest from the loop: unsigned LEB128 either way."""
    out, rest = bytearray(), value
    while True:
        low, rest = rest & 0x7F, rest >> 7
        out.append(low | 0x80 if rest else low)
        if not rest:
            break
    assert _varint(value) == bytes(out)


def test_tokens_of_the_engine_verify() -> None:
    """What the engine signs per message (unsubscribe, RSVP, bounce) verifies as itself,
    after many signings from the kept states."""
    signer = TokenSigner(b"0123456789abcdef", fallbacks=[b"old"])
    for n in (0, 1, 127, 128, 10**12):
        for _ in range(2):
            claims = signer.verify(signer.sign(subscriber_id=n, list_id=3, campaign_id=n))
            assert (claims.subscriber_id, claims.list_id, claims.campaign_id) == (n, 3, n)
            rsvp = signer.verify_rsvp(signer.sign_rsvp(subscriber_id=n, campaign_id=5))
            assert rsvp == RsvpClaims(subscriber_id=n, campaign_id=5)
            assert signer.verify_bounce(signer.sign_bounce(delivery_id=n)) == n


def test_a_signer_whose_key_changes_signs_with_the_new_key() -> None:
    """The kept states are per key: a signer (or subclass) whose signing key is replaced
    signs with the new key from then on, never from the old key's state."""
    signer = TokenSigner(b"first key")
    signer.sign(subscriber_id=1, list_id=1)
    signer._keys = (b"second key",)
    assert TokenSigner(b"second key").verify(signer.sign(subscriber_id=1, list_id=1))


# -- quoted-printable: lines of printable ASCII without b2a_qp ----------------------------

_MBOX_FROM = re.compile(rb">*From ")


def _escape_line_starts_before(encoded: bytes) -> bytes:
    """compose._escape_line_starts as it was in 04c2910 (a method call and a regex per
    physical line), the reference."""
    flat = encoded.replace(b"=\r\n", b"")
    out: list[bytes] = []
    start, end_of_line = 0, len(flat)
    while True:
        first = b""
        if flat.startswith(b".", start) or _MBOX_FROM.match(flat, start):
            first = b"=%02X" % flat[start]
            start += 1
        if len(first) + end_of_line - start <= 76:
            out.append(first + flat[start:])
            return b"\r\n".join(out)
        cut = start + 76 - 1 - len(first)
        equals = flat.rfind(b"=", cut - 2, cut)
        if equals != -1:
            cut = equals
        out.append(first + flat[start:cut] + b"=")
        start = cut


def _line_before(line: str) -> bytes:
    """One line as QuotedPrintable encoded it in 04c2910: b2a_qp, then the re-wrap."""
    encoded = binascii.b2a_qp(line.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if b"From " in encoded or b"\n." in encoded or encoded.startswith(b"."):
        encoded = _escape_line_starts_before(encoded)
    return encoded


def _text_before(text: str) -> bytes:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return b"\r\n".join(_line_before(line) for line in text.split("\n"))


_RSVP_LINE = (
    '<p style="margin: 0 0 14px 0;">'
    + " ".join(
        f'<a class="button" href="https://mailer.example.org/r/BAcB9YLzezhFwkbe_o2F8iXqzQ'
        f'?answer={answer}" style="color: #ffffff;text-decoration: none;">{label}</a>'
        for answer, label in (("yes", "I'll come"), ("maybe", "Maybe"), ("no", "Can't come"))
    )
    + "</p>"
)
# Pieces that put "=" escapes, dots and blanks where b2a_qp breaks lines (every 75).
_ASCII = st.lists(
    st.sampled_from(["x", "=", ".", " ", ">", "F", "rom ", "ab", "x" * 37, "y" * 72, "\t"]),
    max_size=60,
).map("".join)
_ANY_LINE = _ASCII | st.text(
    alphabet=st.sampled_from([*"x=. >F\t\x00\x7fé€"])
    | st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=200,
)


@settings(max_examples=1500, deadline=None)
@given(line=_ASCII | _ANY_LINE)
@example(line="x" * 73 + "=")  # b2a_qp breaks before the last escape; the re-wrap did not
@example(line="x" * 72 + "=")
@example(line="x" * 74 + "=")
@example(line="x" * 75 + ".y")  # "." after a soft break
@example(line="x" * 75 + "." + "x" * 72 + "=")  # both: the re-wrap's end rule wins
@example(line="x" * 75 + "." + "x" * 74 + ".")
@example(line="." + "x" * 76)
@example(line=".")
@example(line="x" * 75 + "From the floor" + "=" * 30)
@example(line="x" * 80 + " ")
@example(line=_RSVP_LINE)
@example(line=_RSVP_LINE.replace("mailer.example.org", "lists.leftcom.example"))
def test_a_line_is_encoded_as_it_was(line: str) -> None:
    """Any line (printable ASCII, which skips b2a_qp, or not) is encoded byte for byte
    as b2a_qp and the re-wrap encoded it, and the re-wrap alone gives what it gave."""
    assert _encode_line(line) == _line_before(line)
    printable = line.isascii() and line.isprintable() and not line.endswith(" ")
    if printable and line != "." and "From " not in line:  # the fast path, called directly
        assert _wrap_printable(line.encode().replace(b"=", b"=3D")) == _line_before(line)
    b2a = binascii.b2a_qp(line.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    assert _escape_line_starts(b2a) == _escape_line_starts_before(b2a)


def test_unencodable_lines_still_raise_by_shape_and_line_by_line() -> None:
    """A lone surrogate (broken input) raises UnicodeEncodeError, which build() turns
    into UnsafeValueError, whether its line is met line by line or as a personal line of
    a learnt shape."""
    encoder = QuotedPrintable()
    for name in ("ann", "bob", "cy"):
        encoder.encode("\n".join(["head", *"abcdefgh", f"Dear {name}", "tail"]))
    assert encoder._common._runs
    for text in ("\n".join(["head", *"abcdefgh", "Dear \ud800", "tail"]), "\ud800"):
        with pytest.raises(UnicodeEncodeError):
            encoder.encode(text)


# -- what a campaign's messages have in common ----------------------------------------------

_STATIC = st.sampled_from(
    ["", "<p>Static text.</p>", "x" * 80, ".", "From here", "   ", _RSVP_LINE[:200], "é" * 5]
)
_VALUE = st.sampled_from(
    ["", "Zoë", "Łukasz", "From me", ".", "a\nb", "\n", "x" * 90, "=", " ", _RSVP_LINE]
) | st.text(alphabet=st.sampled_from([*"ab.=\n \r"]), max_size=8)
_SHAPE = st.lists(st.one_of(st.none(), _STATIC), min_size=1, max_size=24)


def _fill_in(shape: list[str | None], values: list[str]) -> str:
    it = iter(values)
    return "\n".join(next(it, "") if part is None else part for part in shape)


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(_SHAPE, min_size=1, max_size=3),
    messages=st.lists(
        st.tuples(st.integers(0, 2), st.lists(_VALUE, max_size=6)), min_size=1, max_size=12
    ),
)
def test_messages_of_one_or_several_shapes_are_encoded_as_before(
    shapes: list[list[str | None]], messages: list[tuple[int, list[str]]]
) -> None:
    """Messages made from a few templates (personal values, some holding line breaks,
    at the start, middle and end), in any order, are encoded as b2a_qp and the re-wrap
    encoded each line, whether the encoder takes them by a learnt shape or line by line,
    and again when they come a second time (caches warm)."""
    encoder = QuotedPrintable()
    texts = [_fill_in(shapes[kind % len(shapes)], values) for kind, values in messages]
    for text in texts * 2:
        assert encoder.encode(text) == _text_before(text)


def test_new_lines_at_the_start_middle_and_end_are_encoded_in_place() -> None:
    """With most lines known, the ones not seen before (first, middle and last, several
    in a row) are encoded where they stand, by shape and line by line alike."""
    static = [f"line {n} " + "y" * n for n in range(30)]
    encoder = QuotedPrintable()
    for n in range(4):
        lines = static.copy()
        for at in (0, 1, 14, 15, 16, 29):
            lines[at] = f"new {n} at {at} " + "z." * (n * 20)
        text = "\n".join(lines)
        assert encoder.encode(text) == _text_before(text)
    assert encoder._common._runs  # the last messages went by shape


def test_common_lines_take_runs_whole_and_personal_lines_anew() -> None:
    """Two messages with as many lines teach the shape; a third of that shape has only
    its personal lines made anew, and a message of any other shape (a line more or less,
    a changed run, a run not ending where a line does) is left to the caller."""
    common: CommonLines[str] = CommonLines("\n")
    made: list[str] = []

    def line(text: str) -> str:
        made.append(text)
        return text.upper()

    def message(name: str, tail: str = "tail") -> str:
        return f"head\nDear {name}\nbody\ntwo\nthree\nfour\nlink/{name}\nfive\nsix\n{tail}"

    first, second = message("ann").split("\n"), message("bob").split("\n")
    assert common.apply(message("cy"), line) is None  # nothing learnt yet
    common.learn(first, [ln.upper() for ln in first])
    common.learn(second, [ln.upper() for ln in second])
    assert common.apply(message("cy"), line) == message("cy").upper()
    assert made == ["Dear cy", "link/cy"]
    made.clear()
    assert common.apply(message("cy") + "\nmore", line) is None
    assert common.apply(message("cy", tail="tail2"), line) is None
    assert common.apply(message("cy").replace("two\n", ""), line) is None
    assert common.apply(message("cy").replace("head", "hea"), line) is None
    assert common.apply(message("cy").replace("three\nfour", "threefour"), line) is None
    assert common.apply(message("cy").replace("\nfive", "five"), line) is None
    assert common.apply(message("cy").replace("four", "four and more"), line) is None


def test_a_shape_mostly_personal_is_not_learnt() -> None:
    """Messages with more personal parts than half their lines are left line by line
    (the shape would cost as much as the lines)."""
    common: CommonLines[str] = CommonLines("\n")
    for name in ("ann", "bob", "cy"):
        lines = ["head", f"a {name}", f"b {name}", "mid", f"c {name}", "tail"]
        common.learn(lines, lines)
    assert common.apply("head\na x\nb x\nmid\nc x\ntail", str.upper) is None


# -- the text part's tidying --------------------------------------------------------------

_RAW_STATIC = st.sampled_from(
    ["", " ", "\t", "Dear", "word " * 20, "> quoted " * 10, "* item " * 12, "1. one " * 15]
)
_RAW_VALUE = st.sampled_from(
    ["", "Zoë", "x" * 90, "https://x.example/r/" + "T" * 60 + "?answer=maybe", "a b " * 30]
) | st.text(alphabet=st.sampled_from([*"ab \n\t"]), max_size=10)


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(st.lists(st.one_of(st.none(), _RAW_STATIC), max_size=20), min_size=1),
    messages=st.lists(
        st.tuples(st.integers(0, 3), st.lists(_RAW_VALUE, max_size=5)), min_size=1, max_size=10
    ),
)
def test_a_renderers_tidier_gives_tidy_text(
    shapes: list[list[str | None]], messages: list[tuple[int, list[str]]]
) -> None:
    """The text parts of a campaign (blank lines and long lines from values, at the
    start, middle and end, in any order) are tidied as tidy_text tidies each alone."""
    tidier = TextTidier()
    texts = [_fill_in(shapes[kind % len(shapes)], values) for kind, values in messages]
    for text in texts * 2:
        assert tidier(text) == tidy_text(text)


@pytest.mark.parametrize("name", ["range", "dict", "namespace", "cycler", "joiner", "lipsum"])
def test_templates_still_see_no_globals(tmp_path: Path, name: str) -> None:
    """Jinja's globals (`range`, `namespace`, ...) stay out of the templates now that a
    template keeps its globals in a dict: using one is an undefined-name TemplateError."""
    path = tmp_path / "event.md"
    path.write_text(FRONT_FOR_TESTS + f"{{{{ {name} }}}}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="undefined"):
        make_builder(event_path=path)
