"""Tests for headcount.linkage.normalise.

Expected outputs are written out by hand from the documented rules, never read
back from the module under test.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headcount.errors import InvalidInput
from headcount.linkage.normalise import (
    Identity,
    canonical_first_name,
    name_variants,
    normalise_date,
    normalise_identity,
    normalise_name,
    normalise_postcode,
    normalise_sex,
)

NAME_RE = re.compile(r"(?:[a-z]+(?: [a-z]+)*)?")
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d %b %Y", "%d %B %Y", "%Y%m%d")
POSTCODE_RE = r"[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("O'Brien", "obrien"),
        ("O’Brien", "obrien"),
        ("Mary-Jane", "mary jane"),
        ("  JOHN   smith ", "john smith"),
        ("Zoë", "zoe"),
        ("José", "jose"),
        ("Łukasz", "lukasz"),
        ("ŁUKASZ", "lukasz"),
        ("Strauß", "strauss"),
        ("Øyvind", "oyvind"),
        ("Đorđe", "dorde"),
        ("Æthelred", "aethelred"),
        ("Œuvre", "oeuvre"),
        ("Yıldız", "yildiz"),
        ("Þóra", "thora"),
        ("Nguyễn", "nguyen"),
        ("Mr John Smith", "john smith"),
        ("Mrs. Smith", "smith"),
        ("Miss Ada", "ada"),
        ("Dr. Who", "who"),
        ("Ms Jones", "jones"),
        ("Mrsmith", "mrsmith"),  # only whole-word titles are dropped
        ("St. John", "st john"),
        ("Smith/Jones", "smith jones"),
        ("Anne–Marie", "anne marie"),  # en dash
        ("J.R.", "jr"),
        ("Leo2", "leo"),
        ("", ""),
        ("   ", ""),
        ("Mr", ""),
    ],
)
def test_normalise_name_examples(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


@given(st.text())
def test_normalised_names_are_lowercase_words_and_a_fixed_point(raw: str) -> None:
    once = normalise_name(raw)
    assert NAME_RE.fullmatch(once), once
    assert normalise_name(once) == once


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz -'", max_size=30))
def test_ascii_names_keep_their_letters_in_order(raw: str) -> None:
    # Only case, separators, apostrophes and titles may change: letters survive.
    words = [w for w in raw.replace("-", " ").replace("'", "").split()]
    kept = [w for w in words if w not in {"mr", "mrs", "ms", "miss", "dr"}]
    assert normalise_name(raw) == " ".join(kept)


@given(st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)))
def test_every_accepted_date_format_round_trips(day: date) -> None:
    for fmt in DATE_FORMATS:
        text = day.strftime(fmt)
        assert normalise_date(text) == day.isoformat(), fmt
        assert normalise_date(f"  {text}\t") == day.isoformat(), fmt
    assert normalise_date(day.isoformat()) == day.isoformat()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2011-03-07", "2011-03-07"),
        ("07/03/2011", "2011-03-07"),  # day first, as in UK data
        ("07-03-2011", "2011-03-07"),
        ("07 Mar 2011", "2011-03-07"),
        ("07 mar 2011", "2011-03-07"),
        ("7 March 2011", "2011-03-07"),
        ("20110307", "2011-03-07"),
        ("29/02/2012", "2012-02-29"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalise_date_examples(raw: str, expected: str) -> None:
    assert normalise_date(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2011-02-30",
        "31/04/2011",
        "29 Feb 2011",
        "20111301",
        "2011111",  # seven digits: ambiguous, not guessed
        "2011/13/07",
        "03/07/11",
        "7 March",
        "yesterday",
        "2011-03-07T00:00",
    ],
)
def test_normalise_date_rejects_bad_dates_quoting_them(raw: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(repr(raw))):
        normalise_date(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("F", "f"),
        ("f", "f"),
        ("Female", "f"),
        (" FEMALE ", "f"),
        ("W", "f"),
        ("woman", "f"),
        ("2", "f"),
        ("M", "m"),
        ("male", "m"),
        ("1", "m"),
        ("", ""),
        ("  ", ""),
        ("U", ""),
        ("Unknown", ""),
        ("not known", ""),
        ("0", ""),
        ("9", ""),
    ],
)
def test_normalise_sex_examples(raw: str, expected: str) -> None:
    assert normalise_sex(raw) == expected
    assert normalise_sex(expected) == expected


@pytest.mark.parametrize("raw", ["Q", "femal", "3", "yes", "F M"])
def test_normalise_sex_rejects_unknown_codes(raw: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(repr(raw))):
        normalise_sex(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sw1a 1aa", "SW1A1AA"),
        ("SW1A1AA", "SW1A1AA"),
        (" M1 1AE ", "M11AE"),
        ("b33 8th", "B338TH"),
        ("CR2 6XH", "CR26XH"),
        ("DN55 1PT", "DN551PT"),
        ("EC1A-1BB", "EC1A1BB"),
        ("w1a.0ax", "W1A0AX"),
        ("GIR 0AA", "GIR0AA"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalise_postcode_examples(raw: str, expected: str) -> None:
    assert normalise_postcode(raw) == expected


@pytest.mark.parametrize(
    "raw", ["12345", "SW1A", "NOT A POSTCODE", "SW1A 1A", "N/A", "-", "1AA 1AA"]
)
def test_normalise_postcode_rejects_non_postcodes(raw: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(repr(raw))):
        normalise_postcode(raw)


@given(st.from_regex(POSTCODE_RE, fullmatch=True), st.sampled_from(["", " ", "  "]))
def test_postcodes_survive_spacing_and_case_and_are_a_fixed_point(postcode: str, gap: str) -> None:
    spaced = postcode[:-3] + gap + postcode[-3:]
    assert normalise_postcode(spaced.lower()) == postcode
    assert normalise_postcode(postcode) == postcode


def test_normalise_identity_normalises_every_field() -> None:
    identity = normalise_identity("Mr Seán", "O'Brien-Kelly", "07/03/2011", "Male", "sw1a 1aa")
    assert identity == Identity("sean", "obrien kelly", "2011-03-07", "m", "SW1A1AA")


def test_normalise_identity_allows_missing_fields() -> None:
    assert normalise_identity("", "", "", "", "") == Identity("", "", "", "", "")


def test_normalise_identity_raises_on_bad_field() -> None:
    with pytest.raises(InvalidInput, match="31/02/2011"):
        normalise_identity("Ann", "Lee", "31/02/2011", "F", "M1 1AE")


@pytest.mark.parametrize(
    "fields",
    [
        ("Ann", "lee", "", "", ""),
        ("ann", "lee ", "", "", ""),
        ("ann", "lee", "07/03/2011", "", ""),
        ("ann", "lee", "2011-02-30", "", ""),
        ("ann", "lee", "", "F", ""),
        ("ann", "lee", "", "", "sw1a 1aa"),
    ],
)
def test_identity_rejects_unnormalised_fields(fields: tuple[str, str, str, str, str]) -> None:
    with pytest.raises(ValueError):
        Identity(*fields)


# --- name variants ------------------------------------------------------------------

# Pairs a clerk would write for one child; the nickname table comes from the
# `nicknames` package, so these check the folding, not a hand-typed list.
NICKNAME_GROUPS = [
    ("Tom", "Tommy", "Thomas"),
    ("Bob", "Bobby", "Robert"),
    ("Peggy", "Maggie", "Margaret"),
    ("Liz", "Beth", "Elizabeth"),
    ("Jim", "Jimmy", "James"),
    ("Kate", "Katherine"),
    ("Harry", "Henry"),
]


@pytest.mark.parametrize("group", NICKNAME_GROUPS)
def test_nicknames_share_a_canonical_first_name(group: tuple[str, ...]) -> None:
    canonical = {canonical_first_name(name) for name in group}
    assert len(canonical) == 1, canonical
    for name in group:
        assert normalise_name(name) in name_variants(name)
        assert set(name_variants(name)) == set(name_variants(group[0]))


def test_canonical_first_name_keeps_distinct_formal_names_apart() -> None:
    formal = ["thomas", "robert", "margaret", "elizabeth", "james", "henry", "william"]
    assert len({canonical_first_name(n) for n in formal}) == len(formal)


def test_canonical_first_name_examples() -> None:
    assert canonical_first_name("  TOMMY ") == "thomas"
    assert canonical_first_name("Xyzzy") == "xyzzy"  # unknown names are kept
    assert canonical_first_name("Mr Bob") == "robert"  # normalised first
    assert canonical_first_name("Bob Tom") == "robert thomas"  # word by word
    assert canonical_first_name("") == ""
    assert canonical_first_name("Łukasz") == "lukasz"


def test_name_variants_examples() -> None:
    assert name_variants("") == ()
    assert name_variants("Xyzzy") == ("xyzzy",)
    assert name_variants("Mary Ann") == ("mary ann",)
    tom = name_variants("tom")
    assert {"tom", "tommy", "thomas"} <= set(tom)
    assert list(tom) == sorted(set(tom))


@given(st.text())
def test_canonical_first_name_never_raises_and_is_idempotent(raw: str) -> None:
    once = canonical_first_name(raw)
    assert NAME_RE.fullmatch(once), once
    assert canonical_first_name(once) == once
    # As many words as the normalised name: folding never merges or splits words.
    assert len(once.split()) == len(normalise_name(raw).split())


@given(st.text())
def test_name_variants_share_the_canonical_form(raw: str) -> None:
    variants = name_variants(raw)
    assert list(variants) == sorted(set(variants))
    if not normalise_name(raw):
        assert variants == ()
        return
    assert normalise_name(raw) in variants
    canonical = canonical_first_name(raw)
    for variant in variants:
        assert NAME_RE.fullmatch(variant)
        assert canonical_first_name(variant) == canonical


@given(st.sampled_from([v for group in NICKNAME_GROUPS for v in group]))
def test_every_variant_of_a_known_name_is_in_its_own_group(name: str) -> None:
    for variant in name_variants(name):
        assert name_variants(variant) == name_variants(name)


# --- every normaliser: total on arbitrary text, idempotent, canonical alphabet -----


@given(st.text())
def test_normalise_date_only_raises_invalid_input_and_is_idempotent(raw: str) -> None:
    try:
        once = normalise_date(raw)
    except InvalidInput:
        return
    assert once == "" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", once)
    assert normalise_date(once) == once


@given(st.text())
def test_normalise_sex_only_raises_invalid_input_and_is_idempotent(raw: str) -> None:
    try:
        once = normalise_sex(raw)
    except InvalidInput:
        return
    assert once in ("", "f", "m")
    assert normalise_sex(once) == once


@given(st.text())
def test_normalise_postcode_only_raises_invalid_input_and_is_idempotent(raw: str) -> None:
    try:
        once = normalise_postcode(raw)
    except InvalidInput:
        return
    assert once == "" or re.fullmatch(r"[A-Z0-9]{5,7}", once)
    assert normalise_postcode(once) == once


@given(st.text(), st.text(), st.text(), st.text(), st.text())
def test_normalise_identity_returns_an_identity_or_raises_invalid_input(
    first: str, last: str, dob: str, sex: str, postcode: str
) -> None:
    try:
        identity = normalise_identity(first, last, dob, sex, postcode)
    except InvalidInput:
        return
    assert isinstance(identity, Identity)
    again = normalise_identity(
        identity.first_name,
        identity.last_name,
        identity.date_of_birth,
        identity.sex,
        identity.postcode,
    )
    assert again == identity


@pytest.mark.parametrize(
    ("raw", "order", "expected"),
    [
        ("2011/03/07", "day-first", "2011-03-07"),
        ("2011.03.07", "month-first", "2011-03-07"),
        ("07.03.2011", "day-first", "2011-03-07"),
        ("03/07/2011", "month-first", "2011-03-07"),
        ("03-07-2011", "month-first", "2011-03-07"),
        ("March 7 2011", "day-first", "2011-03-07"),
        ("Mar 7 2011", "month-first", "2011-03-07"),
    ],
)
def test_dates_in_other_styles(raw: str, order: str, expected: str) -> None:
    assert normalise_date(raw, order) == expected


def test_a_refused_date_lists_the_accepted_styles() -> None:
    with pytest.raises(InvalidInput, match=r"accepted: YYYY-MM-DD.*MM/DD/YYYY"):
        normalise_date("19450493", "month-first")
    with pytest.raises(InvalidInput, match=r"DD/MM/YYYY"):
        normalise_date("31/31/2011")


def test_the_date_order_is_found_per_file_not_per_value() -> None:
    from headcount.linkage.normalise import detect_date_order

    # 04/05 could be either; 25/03 is only day-first: the whole file is.
    found = detect_date_order(["04/05/2011", "25/03/2010", "", "2011-01-01"])
    assert (found.order, found.decided, found.day_first) == ("day-first", True, 1)
    found = detect_date_order(["04/05/2011", "03/25/2010", "12/31/2009"])
    assert (found.order, found.month_first) == ("month-first", 2)
    assert normalise_date("04/05/2011", found.order) == "2011-04-05"
    # Nothing tells: the stated default, and the report says so.
    undecided = detect_date_order(["04/05/2011"], default="month-first")
    assert (undecided.order, undecided.decided) == ("month-first", False)
    assert "no date in the file" in undecided.describe()
    # A file that mixes both styles is refused, with counts and no value.
    with pytest.raises(InvalidInput, match=r"both day-first \(5 values\) and month-first \(5"):
        detect_date_order(["25/03/2010"] * 5 + ["03/25/2010"] * 5)
    # One typo among many does not make a file mixed.
    assert detect_date_order(["25/03/2010"] * 200 + ["03/25/2010"]).order == "day-first"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("2600", "2600"), ("75008", "75008"), ("K1A 0B1", "K1A0B1"), ("1012 ab", "1012AB")],
)
def test_any_countrys_postcode(raw: str, expected: str) -> None:
    assert normalise_postcode(raw, "any") == expected
    with pytest.raises(InvalidInput, match="not a UK postcode"):
        normalise_postcode(raw)


def test_a_postcode_of_any_style_still_needs_a_shape() -> None:
    for bad in ("7", "12345678901", "#"):
        with pytest.raises(InvalidInput, match="2-10 letters and digits"):
            normalise_postcode(bad, "any")


def test_a_mixed_file_can_be_read_in_its_majority_order() -> None:
    from headcount.linkage.normalise import detect_date_order

    mixed = ["25/03/2010"] * 30 + ["03/25/2010"] * 5
    found = detect_date_order(mixed, strict=False)
    assert (found.order, found.day_first, found.month_first) == ("day-first", 30, 5)
    with pytest.raises(InvalidInput, match="both day-first"):
        detect_date_order(mixed)


@pytest.mark.parametrize(
    ("raw", "order", "expected"),
    [
        ("1996-09-51", "day-first", "1996-09-00"),  # impossible day: year and month kept
        ("1978-20-11", "day-first", "1978-00-11"),
        ("9187-09-17", "day-first", "0000-09-17"),  # a year no one was born in
        ("19450493", "day-first", "1945-04-00"),
        ("1985-06-Z6", "day-first", "1985-06-26"),  # letters misread for digits
        ("l986-08-o1", "day-first", "1986-08-01"),
        ("30/02/2001", "day-first", "2001-02-30"),  # each part valid, the date not
        ("12/25/2001", "day-first", "2001-00-12"),
        ("12/25/2001", "month-first", "2001-12-25"),
        ("abc", "day-first", ""),
        ("", "day-first", ""),
        ("07 Marhc 2011", "day-first", ""),  # no day/month/year shape
        ("99/99/9999", "day-first", ""),  # nothing readable
    ],
)
def test_salvage_keeps_the_readable_parts_of_a_date(raw: str, order: str, expected: str) -> None:
    from headcount.linkage.normalise import salvage_date

    assert salvage_date(raw, order) == expected


def test_a_partial_date_stands_only_beside_a_blank_date() -> None:
    Identity("ann", "lee", "", "", "", birth_partial="1996-09-00")
    with pytest.raises(ValueError, match="birth_partial"):
        Identity("ann", "lee", "1996-09-01", "", "", birth_partial="1996-09-00")
    with pytest.raises(ValueError, match="birth_partial"):
        Identity("ann", "lee", "", "", "", birth_partial="1996-9")
