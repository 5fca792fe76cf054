"""Our cached-domain validator must agree with email-validator's own `validate_email`."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.addresses import InvalidAddress, normalise

local_parts = st.text(
    alphabet=st.sampled_from("abcXYZ019.+-_!#$%&'*/=?^`{|}~é\u00df\u0130 \"@\\"),
    min_size=0,
    max_size=20,
)
domains = st.sampled_from(
    [
        "example.org",
        "EXAMPLE.org",
        "bücher.de",
        "xn--bcher-kva.de",
        "x",
        "a..b.org",
        "-a.org",
        "localhost",
        "example.invalid",
        "ex_ample.org",
        "münchen.example.com",
        "[127.0.0.1]",
    ]
)


@settings(max_examples=400, deadline=None)
@given(local=local_parts, domain=domains)
def test_agrees_with_validate_email(local: str, domain: str) -> None:
    """Valid for us iff valid for email-validator, with the same ASCII wire form.

    (We strip surrounding spaces first, as spreadsheets leave them in cells.)
    """
    raw = f"{local}@{domain}"
    try:
        reference = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        with pytest.raises(InvalidAddress):
            normalise(raw)
        return
    ours = normalise(raw)
    expected = reference.ascii_email or f"{reference.local_part}@{reference.ascii_domain}"
    assert ours.email == expected
    assert ours.smtputf8 == (reference.ascii_email is None)


def test_case_variants_share_one_key() -> None:
    """Alice@Example.org and alice@example.ORG are the same subscriber."""
    assert normalise("Alice@Example.org").key == normalise("alice@example.ORG").key


def test_idn_domain_goes_out_in_ascii() -> None:
    assert normalise("anna@bücher.de").email == "anna@xn--bcher-kva.de"
