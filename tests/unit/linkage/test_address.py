"""Address normalisation and keyed household keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headcount.linkage.address import HOUSEHOLD_KEY_BYTES, household_keys, normalise_address

SECRET = b"s" * 32


def test_common_variants_normalise_alike() -> None:
    variants = ["Flat 7, 72 Whittaker Road", "flat 7 72 whittaker rd", "FLAT 7 , 72  Whittaker Rd."]
    assert {normalise_address(v) for v in variants} == {"7 72 whittaker rd"}
    assert normalise_address("12B Saint-Jérôme Street") == "12 b saintjerome st"
    assert normalise_address("") == ""


@given(st.text(max_size=60))
def test_normalise_address_is_idempotent_and_ascii(raw: str) -> None:
    once = normalise_address(raw)
    assert normalise_address(once) == once
    assert all(ch.isascii() and (ch.isalnum() or ch == " ") for ch in once)


def test_household_keys_are_keyed_and_need_both_fields() -> None:
    keys = household_keys(
        ["72 Whittaker Road", "72 whittaker rd", "73 Whittaker Road", "", "72 Whittaker Road"],
        ["B11AA", "B11AA", "B11AA", "B11AA", ""],
        SECRET,
    )
    assert keys[0] == keys[1] and len(keys[0]) == HOUSEHOLD_KEY_BYTES
    assert keys[2] != keys[0]
    assert keys[3] == b"" and keys[4] == b""
    other = household_keys(["72 Whittaker Road"], ["B11AA"], b"t" * 32)
    assert other[0] != keys[0]
