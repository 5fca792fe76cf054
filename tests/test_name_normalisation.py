"""Names at import: odd spaces become one space and format characters (bidi overrides,
zero-width spaces) are dropped before anything is stored, so neither the greeting nor the
To header ever carries them. Checked on the bytes of the file and of the message."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

from mailer.audience.importer import import_file
from mailer.models import Recipient
from mailer.safety import tidy_text
from mailer.store import Store
from test_compose import assert_well_formed, unsubscribe_url
from test_hostile import personal_builder

KEPT_JOINERS = {"\u200c", "\u200d"}  # ZWNJ and ZWJ spell Persian and Indic names


def test_every_format_character_goes_and_every_odd_space_becomes_a_space() -> None:
    """The character lists in safety.py match Python's Unicode tables exactly."""
    wrong: list[str] = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cf" and char not in KEPT_JOINERS:
            expected = "ab"
        elif category in ("Zs", "Zl", "Zp") or char in "\t\x85":
            expected = "a b"
        else:
            continue
        if tidy_text(f"a{char}b") != expected:
            wrong.append(f"U+{code:04X} {category}")
    assert wrong == []
    # And nothing else is touched: letters, marks, the kept joiners, line breaks (which
    # find_unsafe refuses, rather than quietly joining two header lines).
    for kept in ("Zoë", "علی\u200cرضا", "👩\u200d👩\u200d👧", "a\nb", "a\rb", "O'Brien"):
        assert tidy_text(kept) == kept


def test_a_name_of_odd_spaces_and_bidi_controls_is_stored_and_sent_plain(
    store: Store, tmp_path: Path
) -> None:
    """TAB, NBSP, U+2028/2029, NEL and bidi overrides in the file's bytes never reach the store
    or the message: "Dear \u202eevil" would read reversed in the greeting and the To header."""
    rows = [
        b"email,name,city\r\n",
        # Quoted TAB and NEL; NBSP; a paragraph separator; runs of spaces.
        b'ann@example.org,"Ann\tMarie\xc2\x85Smith","Stoke\xc2\xa0Newington"\r\n',
        b"bob@example.org,  Bob \xe2\x80\xa8 Jones  ,Hackney\xe2\x80\xa9Wick\r\n",
        # RIGHT-TO-LEFT OVERRIDE ... POP DIRECTIONAL FORMATTING; a ZERO WIDTH SPACE; LRI/PDI.
        b"eve@example.org,\xe2\x80\xaelive\xe2\x80\xac Eve\xe2\x80\x8b,"
        b"\xe2\x81\xa6Leeds\xe2\x81\xa9\r\n",
        # A Persian name keeps its zero-width non-joiner.
        b"ali@example.org,\xd8\xb9\xd9\x84\xdb\x8c\xe2\x80\x8c\xd8\xb1\xd8\xb6\xd8\xa7,Tehran\r\n",
    ]
    source = tmp_path / "odd.csv"
    source.write_bytes(b"".join(rows))
    report = import_file(store, source, list_name="members", rejects_path=tmp_path / "r.csv")
    assert report.counts.imported == 4, report
    stored = {
        email: (store.get_subscriber(email).name, store.get_subscriber(email).attributes["city"])
        for email in ("ann@example.org", "bob@example.org", "eve@example.org", "ali@example.org")
    }
    assert stored == {
        "ann@example.org": ("Ann Marie Smith", "Stoke Newington"),
        "bob@example.org": ("Bob Jones", "Hackney Wick"),
        "eve@example.org": ("live Eve", "Leeds"),
        "ali@example.org": ("علی\u200cرضا", "Tehran"),
    }

    eve = store.get_subscriber("eve@example.org")
    recipient = Recipient(
        subscriber_id=1, email=eve.email, name=eve.name, attributes=dict(eve.attributes)
    )
    builder = personal_builder(str(tmp_path))  # greets by name and city
    message = builder.build(recipient, unsubscribe_url=unsubscribe_url(recipient))
    parsed = assert_well_formed(message)
    assert parsed["To"].addresses[0].display_name == "live Eve"
    decoded = [str(value) for value in parsed.values()] + [
        part.get_content() for part in parsed.walk() if part.get_content_maintype() == "text"
    ]
    assert any("Hello live Eve of Leeds" in text for text in decoded)
    for text in decoded:
        assert not [char for char in text if unicodedata.category(char) == "Cf"], text[:200]


def test_subscribers_add_tidies_the_name_the_same_way(store: Store) -> None:
    """The one-by-one path stores what an import of the same name would."""
    store.create_list("members", title="Members")
    assert store.add_subscriber("zoe@example.org", "members", name="\u202eZoë\u00a0\u00a0Martin\t")
    assert store.get_subscriber("zoe@example.org").name == "Zoë Martin"
