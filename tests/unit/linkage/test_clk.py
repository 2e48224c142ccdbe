"""Tests for headcount.linkage.clk: schema, key derivation, encoding, match quality.

Known answers (key derivation, bit positions, fingerprint) are recomputed here
from the documented construction with the standard library and `cryptography`,
not read back from the module under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.clk import encode_clks, field_keys
from headcount.linkage.clk_schema import DEFAULT_SCHEMA, ClkSchema, FieldSpec
from headcount.linkage.dice import Candidates, dice_reference, score_pairs
from headcount.linkage.normalise import Identity, normalise_identity
from headcount.linkage.solve import match_one_to_one

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
FIELDS = ("first_name", "last_name", "date_of_birth", "sex", "postcode")

ALICE = Identity("alice", "smith", "2011-03-07", "f", "SW1A1AA")
PEOPLE = [
    ALICE,
    Identity("bob", "jones", "2012-11-30", "m", "M11AE"),
    Identity("chloe", "okafor", "2014-06-02", "f", "B338TH"),
    ALICE,
    Identity("", "", "", "", ""),
    Identity("bob", "", "", "m", ""),
]


def _bits(row: np.ndarray) -> set[int]:
    """Set bit positions of one CLK, most significant bit of byte 0 first."""
    return {int(j) for j in np.flatnonzero(np.unpackbits(row))}


# --- schema ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 128, 192, 1000, 1056 + 1, 8256, 16384])
def test_schema_rejects_bad_filter_sizes(bits: int) -> None:
    with pytest.raises(ValueError, match="filter_bits"):
        ClkSchema(filter_bits=bits)


@pytest.mark.parametrize("bits", [256, 512, 1024, 1088, 2048, 8192])
def test_schema_accepts_multiples_of_64(bits: int) -> None:
    assert ClkSchema(filter_bits=bits).filter_bits == bits


def test_schema_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        ClkSchema(fields=())
    with pytest.raises(ValueError, match="once"):
        ClkSchema(fields=(FieldSpec("sex", 1, 2), FieldSpec("sex", 1, 3)))
    with pytest.raises(ValueError, match="unknown"):
        FieldSpec("nationality", 2, 10)
    with pytest.raises(ValueError, match="ngram"):
        FieldSpec("sex", 0, 2)
    with pytest.raises(ValueError, match="hashes"):
        FieldSpec("sex", 1, 0)
    with pytest.raises(ValueError, match="hashes"):
        FieldSpec("sex", 1, 65)


def test_default_schema_weights_names_above_sex() -> None:
    by_name = {f.name: f for f in DEFAULT_SCHEMA.fields}
    assert set(by_name) == set(FIELDS)
    assert by_name["first_name"].hashes > by_name["sex"].hashes
    assert by_name["last_name"].hashes > by_name["sex"].hashes


def test_fingerprint_is_sha256_of_canonical_json() -> None:
    schema = ClkSchema(
        filter_bits=512, fields=(FieldSpec("first_name", 2, 7), FieldSpec("sex", 1, 3))
    )
    doc = {
        "version": "clk/v1",
        "filter_bits": 512,
        "fields": [
            {"name": "first_name", "ngram": 2, "hashes": 7},
            {"name": "sex", "ngram": 1, "hashes": 3},
        ],
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert schema.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


def test_fingerprint_changes_with_any_parameter() -> None:
    base = DEFAULT_SCHEMA.fingerprint()
    assert ClkSchema().fingerprint() == base
    assert ClkSchema(filter_bits=2048).fingerprint() != base
    fields = list(DEFAULT_SCHEMA.fields)
    fields[0] = dataclasses.replace(fields[0], hashes=fields[0].hashes + 1)
    assert ClkSchema(fields=tuple(fields)).fingerprint() != base
    assert ClkSchema(fields=tuple(reversed(DEFAULT_SCHEMA.fields))).fingerprint() != base


# --- keys --------------------------------------------------------------------------


def test_field_keys_are_hkdf_per_field() -> None:
    keys = field_keys(SECRET, DEFAULT_SCHEMA)
    assert set(keys) == set(FIELDS)
    for name, key in keys.items():
        expected = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"headcount/clk/v1/" + name.encode(),
        ).derive(SECRET)
        assert key == expected
    assert len(set(keys.values())) == len(FIELDS)


def test_field_keys_depend_on_secret() -> None:
    assert field_keys(SECRET, DEFAULT_SCHEMA) == field_keys(SECRET, DEFAULT_SCHEMA)
    mine = field_keys(SECRET, DEFAULT_SCHEMA)
    theirs = field_keys(OTHER_SECRET, DEFAULT_SCHEMA)
    assert all(mine[name] != theirs[name] for name in FIELDS)


@pytest.mark.parametrize("secret", [b"", b"x" * 31])
def test_short_secret_is_refused(secret: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        field_keys(secret, DEFAULT_SCHEMA)
    with pytest.raises(ValueError, match="32 bytes"):
        encode_clks([ALICE], secret)


# --- encoding ----------------------------------------------------------------------


def test_encode_shape_and_dtype() -> None:
    clks = encode_clks(PEOPLE, SECRET)
    assert clks.shape == (len(PEOPLE), 128)
    assert clks.dtype == np.uint8
    assert encode_clks([], SECRET).shape == (0, 128)
    assert encode_clks(PEOPLE, SECRET, ClkSchema(filter_bits=2048)).shape == (len(PEOPLE), 256)


def test_encoding_is_deterministic_and_secret_dependent() -> None:
    first = encode_clks(PEOPLE, SECRET)
    np.testing.assert_array_equal(first, encode_clks(PEOPLE, SECRET))
    np.testing.assert_array_equal(first[0], first[3])  # same person, same CLK
    other = encode_clks(PEOPLE, OTHER_SECRET)
    for i in (0, 1, 2):
        assert not np.array_equal(first[i], other[i])
        # Under another secret the bits are unrelated: Dice near chance.
        assert dice_reference(first[i].tobytes(), other[i].tobytes()) < 0.6


def test_empty_identity_sets_no_bits() -> None:
    clks = encode_clks([Identity("", "", "", "", "")], SECRET)
    assert not clks.any()


def test_bit_positions_follow_the_documented_construction() -> None:
    # Only sex is set: its one token "t:f" sets k positions, each a big-endian
    # 32-bit slice of HMAC-SHA256(sex key, token || 0x00 || counter) mod bits.
    schema = ClkSchema(filter_bits=1088, fields=(FieldSpec("sex", ngram=1, hashes=11),))
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"headcount/clk/v1/sex"
    ).derive(SECRET)
    words = struct.unpack(">8I", hmac.digest(key, b"t:f\x00\x00", "sha256")) + struct.unpack(
        ">8I", hmac.digest(key, b"t:f\x00\x01", "sha256")
    )
    expected = {w % 1088 for w in words[:11]}
    clk = encode_clks([Identity("", "", "", "f", "")], SECRET, schema)[0]
    assert _bits(clk) == expected


def test_fields_are_keyed_separately() -> None:
    # With equal settings, a shared key would give "lee" as a first and as a last
    # name identical bits; separate keys leave only chance collisions.
    schema = ClkSchema(fields=(FieldSpec("first_name", 2, 20), FieldSpec("last_name", 2, 20)))
    clks = encode_clks(
        [Identity("lee", "", "", "", ""), Identity("", "lee", "", "", "")], SECRET, schema
    )
    assert clks[0].any() and clks[1].any()
    assert dice_reference(clks[0].tobytes(), clks[1].tobytes()) < 0.25


def test_batch_encoding_equals_row_by_row() -> None:
    # Many repeated values and more rows than one internal chunk at 8192 bits.
    schema = ClkSchema(filter_bits=8192)
    rng = np.random.default_rng(0)
    people = [PEOPLE[i] for i in rng.integers(len(PEOPLE), size=2100)]
    batch = encode_clks(people, SECRET, schema)
    singles = {p: encode_clks([p], SECRET, schema)[0] for p in set(people)}
    for person, row in zip(people, batch, strict=True):
        np.testing.assert_array_equal(row, singles[person])


def test_each_field_contributes_bits() -> None:
    full = _bits(encode_clks([ALICE], SECRET)[0])
    for name in FIELDS:
        partial = dataclasses.replace(ALICE, **{name: ""})
        bits = _bits(encode_clks([partial], SECRET)[0])
        assert bits < full, name  # dropping a field only removes bits


def test_compound_names_encode_the_same_however_spaced() -> None:
    a = Identity("mary ann", "", "", "", "")
    b = Identity("maryann", "", "", "", "")
    clks = encode_clks([a, b], SECRET)
    np.testing.assert_array_equal(clks[0], clks[1])


def test_transposed_day_and_month_stay_similar() -> None:
    base = dataclasses.replace(ALICE, date_of_birth="2011-03-07")
    swapped = dataclasses.replace(ALICE, date_of_birth="2011-07-03")
    other = dataclasses.replace(ALICE, date_of_birth="2013-10-22")
    schema = ClkSchema(fields=(FieldSpec("date_of_birth", 2, 10),))
    clks = encode_clks([base, swapped, other], SECRET, schema)
    near = dice_reference(clks[0].tobytes(), clks[1].tobytes())
    far = dice_reference(clks[0].tobytes(), clks[2].tobytes())
    assert near >= 0.7
    assert near > far + 0.3


_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=12)


@settings(max_examples=50, deadline=None)
@given(_name, _name, st.integers(0, 100))
def test_one_typo_keeps_dice_high(first: str, last: str, where: int) -> None:
    person = Identity(first, last, "2010-05-17", "m", "LS61AN")
    i = where % len(last)
    typo = last[:i] + ("x" if last[i] != "x" else "y") + last[i + 1 :]
    clks = encode_clks([person, dataclasses.replace(person, last_name=typo)], SECRET)
    assert dice_reference(clks[0].tobytes(), clks[1].tobytes()) >= 0.8


# --- match quality on hand-made realistic pairs ------------------------------------

# Each row: the same child as recorded by two departments (raw values, before
# normalisation), with the kind of error real extracts carry. Several households
# hold siblings and twins (same surname, postcode, sometimes date of birth), and
# common surnames recur, so non-matches are not trivially different.
_Raw = tuple[str, str, str, str, str]
PAIRS: list[tuple[_Raw, _Raw]] = [
    # exact match, different formats
    (
        ("Oliver", "Khan", "2012-04-15", "M", "B11 1AA"),
        ("OLIVER", "KHAN", "15/04/2012", "Male", "b111aa"),
    ),
    # sibling of the above: same surname and address
    (
        ("Amelia", "Khan", "2014-09-02", "F", "B11 1AA"),
        ("Amelia", "Khan", "02 Sep 2014", "F", "B11 1AA"),
    ),
    # third sibling, typo in first name
    (
        ("Yusuf", "Khan", "2016-01-20", "M", "B11 1AA"),
        ("Yusef", "Khan", "20160120", "M", "B11 1AA"),
    ),
    # twins: same everything but first name; one has a transposed day/month
    (
        ("Ella", "Thompson", "2013-06-11", "F", "LS6 2DX"),
        ("Ella", "Thompson", "2013-11-06", "F", "LS6 2DX"),
    ),
    (
        ("Grace", "Thompson", "2013-06-11", "F", "LS6 2DX"),
        ("Grace", "Thomson", "2013-06-11", "F", "LS6 2DX"),
    ),
    # accents dropped by one system
    (
        ("Zoë", "Dubois", "2010-12-01", "F", "N1 9GU"),
        ("Zoe", "Dubois", "2010-12-01", "F", "N1 9GU"),
    ),
    (("Łukasz", "Nowak", "2011-02-28", "M", "E14 5AB"), ("Lukasz", "Nowak", "2011-02-28", "M", "")),
    # apostrophes and hyphens
    (
        ("Siobhan", "O'Brien", "2012-08-19", "F", "M14 5RT"),
        ("Siobhan", "OBrien", "19/08/2012", "F", "M14 5RT"),
    ),
    (
        ("Harry", "Smith-Jones", "2015-03-03", "M", "BS8 1TH"),
        ("Harry", "Smith Jones", "2015-03-03", "", "BS8 1TH"),
    ),
    # common surnames, different children
    (
        ("Jack", "Smith", "2012-05-05", "M", "CF10 3AT"),
        ("Jack", "Smith", "2012-05-05", "M", "CF11 9LJ"),
    ),
    (
        ("Jessica", "Smith", "2014-10-30", "F", "NE1 7RU"),
        ("Jesica", "Smith", "2014-10-30", "F", "NE1 7RU"),
    ),
    (("Thomas", "Smith", "2010-07-14", "M", "NG7 2RD"), ("Tomas", "Smith", "2010-07-14", "M", "")),
    (
        ("Mohammed", "Ali", "2013-03-21", "M", "BD8 7DY"),
        ("Mohammed", "Ali", "2013-03-12", "M", "BD8 7DY"),
    ),
    (
        ("Aisha", "Ali", "2015-11-09", "F", "BD8 7DY"),
        ("Aisha", "Alli", "2015-11-09", "F", "BD8 7DY"),
    ),
    # missing postcode / moved house
    (("Freya", "Wilson", "2011-09-23", "F", "EH3 9QN"), ("Freya", "Wilson", "2011-09-23", "F", "")),
    (
        ("Noah", "Taylor", "2016-02-14", "M", "SO17 1BJ"),
        ("Noah", "Taylor", "2016-02-14", "M", "SO15 2GB"),
    ),
    (("Isla", "Brown", "2012-12-25", "F", "PL4 8AA"), ("Isla", "Browne", "2012-12-25", "F", "")),
    # date typos: off by one day, wrong year digit
    (
        ("Leo", "Evans", "2014-04-04", "M", "CV1 5FB"),
        ("Leo", "Evans", "2014-04-05", "M", "CV1 5FB"),
    ),
    (
        ("Poppy", "Roberts", "2010-08-08", "F", "LE1 7RH"),
        ("Poppy", "Roberts", "2011-08-08", "F", "LE1 7RH"),
    ),
    # letter transpositions and dropped letters
    (
        ("Charlotte", "Walker", "2013-01-31", "F", "S10 2TN"),
        ("Charlote", "Walker", "2013-01-31", "F", "S10 2TN"),
    ),
    (
        ("William", "Hughes", "2011-05-17", "M", "L69 3BX"),
        ("Wiliam", "Hughes", "2011-05-17", "M", "L69 3BX"),
    ),
    (
        ("Sophie", "Edwards", "2015-07-07", "F", "SA1 8PP"),
        ("Sohpie", "Edwards", "2015-07-07", "F", "SA1 8PP"),
    ),
    (
        ("Daniel", "Kowalczyk", "2012-03-09", "M", "PE1 1HE"),
        ("Daniel", "Kowalcyzk", "2012-03-09", "M", "PE1 1HE"),
    ),
    (
        ("Ruby", "Patel", "2016-06-30", "F", "LE4 6FQ"),
        ("Ruby", "Patel", "30/06/2016", "F", "LE4 6QF"),
    ),
    (
        ("Arjun", "Patel", "2014-02-02", "M", "LE4 6FQ"),
        ("Arjun", "Patle", "2014-02-02", "M", "LE4 6FQ"),
    ),
    # titles and extra spaces in a free-text system
    (
        ("Emily", "Clarke", "2010-10-10", "F", "OX1 2JD"),
        ("Miss Emily", " Clarke ", "10-10-2010", "F", "ox1 2jd"),
    ),
    # sex missing or recorded differently
    (
        ("Jacob", "Wright", "2013-12-12", "M", "CB2 1TN"),
        ("Jacob", "Wright", "2013-12-12", "U", "CB2 1TN"),
    ),
    (
        ("Mia", "Green", "2015-05-29", "F", "TN1 1HG"),
        ("Mia", "Green", "2015-05-29", "2", "TN1 1HG"),
    ),
    # two errors at once
    (
        ("Oscar", "Hall", "2011-04-03", "M", "YO1 7HH"),
        ("Osacr", "Hall", "2011-03-04", "M", "YO1 7HH"),
    ),
    (("Lily", "Wood", "2012-09-16", "F", "HU6 7RX"), ("Lilly", "Wood", "2012-09-16", "F", "")),
    (
        ("Evie", "Lewis", "2014-11-11", "F", "CH1 4BJ"),
        ("Evie", "Lewis-Jones", "2014-11-11", "F", "CH1 4BJ"),
    ),
    (
        ("George", "Harris", "2010-06-06", "M", "DE1 3AF"),
        ("Goerge", "Harris", "2010-06-06", "M", "DE22 1GB"),
    ),
    (("Ava", "Martin", "2016-08-21", "F", "GL1 1AA"), ("Ava", "Martin", "2016-08-12", "F", "")),
    (
        ("Alfie", "Jackson", "2011-07-01", "M", "WV1 1LY"),
        ("Alfie", "Jackson", "07/01/2011", "M", "WV1 1LY"),
    ),
]


def _encode(raw: list[_Raw]) -> np.ndarray:
    return encode_clks([normalise_identity(*r) for r in raw], SECRET)


def test_default_schema_links_realistic_errors() -> None:
    assert len(PAIRS) >= 30
    left = _encode([pair[0] for pair in PAIRS])
    # Reverse the right side so a true match is never simply "same row number".
    right = _encode([pair[1] for pair in reversed(PAIRS)])
    n = len(PAIRS)
    truth = {(i, n - 1 - i) for i in range(n)}

    raw = score_pairs(left, right, 0.8)
    found = set(zip(raw.left.tolist(), raw.right.tolist(), strict=True))
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / n
    assert precision >= 0.9, precision
    assert recall >= 0.9, recall

    matched = match_one_to_one(raw)
    linked = set(zip(matched.left.tolist(), matched.right.tolist(), strict=True))
    assert len(linked & truth) / len(linked) >= 0.95
    assert len(linked & truth) / n >= 0.9


def test_true_match_outscores_every_other_record() -> None:
    left = _encode([pair[0] for pair in PAIRS])
    right = _encode([pair[1] for pair in PAIRS])
    all_pairs = score_pairs(left, right, 1e-9)
    scores = np.zeros((len(PAIRS), len(PAIRS)))
    scores[all_pairs.left, all_pairs.right] = all_pairs.score
    best = scores.argmax(axis=1)
    wrong = [i for i in range(len(PAIRS)) if best[i] != i]
    assert not wrong, [PAIRS[i] for i in wrong]


def test_candidates_from_encodings_are_typed() -> None:
    clks = _encode([pair[0] for pair in PAIRS[:3]])
    result = score_pairs(clks, clks, 0.99)
    assert isinstance(result, Candidates)
    assert sorted(zip(result.left.tolist(), result.right.tolist(), strict=True)) == [
        (0, 0),
        (1, 1),
        (2, 2),
    ]
