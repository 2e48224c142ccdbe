"""Address normalisation and keyed household keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headcount.linkage.address import HOUSEHOLD_KEY_BYTES, household_keys, normalise_address

SECRET = b"s" * 32

# Street words with the long and short forms registers use for them.
_TYPES = [("Road", "Rd"), ("Street", "St"), ("Avenue", "Ave"), ("Close", "Cl"), ("Gardens", "Gdns")]
_NAMES = ["Whittaker", "Church", "Saint Mary's", "Stratford-upon-Avon", "Łódź", "Park View"]


def test_common_variants_normalise_alike() -> None:
    variants = [
        "Flat 7, 72 Whittaker Road",
        "flat 7 72 whittaker rd",
        "FLAT 7 , 72  Whittaker Rd.",
        "72 Whittaker Road, Flat 07",
        "Apartment 7, 72 Whittaker Rd",
        "7/72 Whittaker Road",
    ]
    assert {normalise_address(v) for v in variants} == {"7 72 whittaker rd"}
    assert normalise_address("12B Saint-Jérôme Street") == "12 b st jerome st"
    assert normalise_address("12b St. Jerome St") == "12 b st jerome st"
    assert normalise_address("Flat A, 3 High St") == normalise_address("3 High Street, flat a")
    assert normalise_address("") == ""
    assert normalise_address("Flat") == ""


def test_house_and_flat_numbers_stay_apart() -> None:
    # Flat 1 at number 12 is not flat 11 at number 2, nor number 112.
    seen = {normalise_address(a) for a in ("Flat 1, 12 X Rd", "Flat 11, 2 X Rd", "112 X Rd")}
    assert len(seen) == 3


@given(st.text(max_size=60))
def test_normalise_address_is_idempotent_and_ascii(raw: str) -> None:
    once = normalise_address(raw)
    assert normalise_address(once) == once
    assert all(ch.isascii() and (ch.isalnum() or ch == " ") for ch in once)


@st.composite
def _address_variants(draw: st.DrawFn) -> tuple[str, str]:
    """One address written two ways, with the formatting differences registers show."""
    number = draw(st.integers(1, 999))
    flat = draw(st.none() | st.integers(1, 99))
    name = draw(st.sampled_from(_NAMES))
    long_type, short_type = draw(st.sampled_from(_TYPES))

    def render() -> str:
        street = f"{name} {draw(st.sampled_from([long_type, short_type]))}"
        if draw(st.booleans()):
            street = street.upper() if draw(st.booleans()) else street.lower()
        if "-" in street and draw(st.booleans()):
            street = street.replace("-", " ")
        if draw(st.booleans()):
            street += "."
        house = f"{number} {street}"
        if flat is None:
            return house
        label = draw(st.sampled_from(["Flat", "flat", "FLAT", "Apartment", "Apt"]))
        digits = f"0{flat}" if draw(st.booleans()) else str(flat)
        sep = draw(st.sampled_from([", ", " ", " , ", ",  "]))
        if draw(st.booleans()):
            return f"{label} {digits}{sep}{house}"
        return f"{house}{sep}{label} {digits}"

    return render(), render()


@given(_address_variants())
def test_formatting_differences_normalise_alike(pair: tuple[str, str]) -> None:
    a, b = pair
    assert normalise_address(a) == normalise_address(b)


@given(
    st.tuples(st.none() | st.integers(1, 99), st.integers(1, 999)),
    st.tuples(st.none() | st.integers(1, 99), st.integers(1, 999)),
)
def test_different_flats_or_numbers_never_merge(
    a: tuple[int | None, int], b: tuple[int | None, int]
) -> None:
    def render(flat: int | None, number: int) -> str:
        return f"{number} Church Road" if flat is None else f"Flat {flat}, {number} Church Road"

    if a != b:
        assert normalise_address(render(*a)) != normalise_address(render(*b))


def test_household_keys_are_keyed_and_need_both_fields() -> None:
    keys = household_keys(
        ["72 Whittaker Road", "72 whittaker rd", "73 Whittaker Road", "", "74 Whittaker Road"],
        ["B11AA", "B11AA", "B11AA", "B11AA", ""],
        SECRET,
    )
    assert keys[0] == keys[1] and len(keys[0]) == HOUSEHOLD_KEY_BYTES
    assert keys[2] != keys[0]
    assert keys[3] == b"" and keys[4] == b""
    other = household_keys(["72 Whittaker Road"], ["B11AA"], b"t" * 32)
    assert other[0] != keys[0]


def test_missing_postcode_borrows_only_an_unambiguous_one_from_the_file() -> None:
    addresses = ["72 Whittaker Road", "72 Whittaker Rd", "1 High St", "1 High St", "1 High Street"]
    postcodes = ["B11AA", "", "B22BB", "LS11AA", ""]
    keys = household_keys(addresses, postcodes, SECRET)
    assert keys[1] == keys[0]  # the file knows one postcode at that address
    assert keys[4] == b""  # two: two households, so none is guessed
    # With localities, only records of the same place count.
    places = ["Leeds", "Kent", "Leeds", "Kent", "Kent"]
    keys = household_keys(addresses, postcodes, SECRET, places)
    assert keys[1] == b""
    assert keys[4] == keys[3]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1 High St", "2 High St", "Flat 1, 2 High St", ""]),
            st.sampled_from(["B11AA", "B22BB", ""]),
            st.sampled_from(["Kent", "Leeds"]),
        ),
        max_size=12,
    )
)
def test_the_fallback_leaves_every_postcoded_key_alone(rows: list[tuple[str, str, str]]) -> None:
    # A record with a postcode keeps the key it would have alone, whatever else
    # the file holds, and a borrowed key is always one some record has itself:
    # the fallback adds records to households and never creates or merges one.
    addresses, postcodes, places = ([r[i] for r in rows] for i in range(3))
    keys = household_keys(addresses, postcodes, SECRET, places)
    own = {k for k, p in zip(keys, postcodes, strict=True) if p and k}
    for (address, postcode, place), key in zip(rows, keys, strict=True):
        if postcode:
            assert key == household_keys([address], [postcode], SECRET, [place])[0]
        elif key:
            assert key in own
