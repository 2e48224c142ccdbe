"""Tests for headcount.linkage.matchkeys: keyed match-keys and the exact first pass.

Known answers are recomputed here from the documented construction (HKDF info,
"\\x1f"-joined components, truncated HMAC-SHA256) with the standard library
and `cryptography`, not read back from the module under test.
"""

from __future__ import annotations

import dataclasses
import hmac
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.keylinks import agreement_levels, match_by_keys
from headcount.linkage.matchkeys import (
    COMPONENTS,
    DEFAULT_MATCH_KEYS,
    KEY_BYTES,
    MatchKeySpec,
    match_keys,
)
from headcount.linkage.normalise import Identity, normalise_identity
from headcount.synth import generate_population

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
LEVEL = {spec.name: i for i, spec in enumerate(DEFAULT_MATCH_KEYS)}

BASE = Identity("thomas", "okafor", "2012-03-07", "m", "SW1A1AA")


def _keys(identities: list[Identity], secret: bytes = SECRET) -> list[list[bytes | None]]:
    return match_keys(identities, secret)


# --- specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("MK1", ("first_name", "last_name")), "name"),
        (("", ("first_name", "last_name")), "name"),
        (("mk-1", ("first_name", "last_name")), "name"),
        (("mk1", ("first_name",)), "two or more"),
        (("mk1", ["first_name", "last_name"]), "tuple"),
        (("mk1", ("first_name", "nationality")), "unknown component"),
        (("mk1", ("first_name", "first_name")), "repeats"),
    ],
)
def test_bad_specs_are_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MatchKeySpec(*args)  # type: ignore[arg-type]


def test_default_hierarchy_is_well_formed() -> None:
    names = [spec.name for spec in DEFAULT_MATCH_KEYS]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert DEFAULT_MATCH_KEYS[0].components == (
        "first_name",
        "last_name",
        "date_of_birth",
        "sex",
        "postcode",
    )
    assert all(spec.tolerates for spec in DEFAULT_MATCH_KEYS)


def test_hierarchy_and_secret_are_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        match_keys([BASE], b"short")
    with pytest.raises(ValueError, match="levels"):
        match_keys([BASE], SECRET, ())
    twice = (DEFAULT_MATCH_KEYS[0], DEFAULT_MATCH_KEYS[0])
    with pytest.raises(ValueError, match="distinct"):
        match_keys([BASE], SECRET, twice)


# --- keys ---------------------------------------------------------------------------


def test_keys_follow_the_documented_construction() -> None:
    spec = MatchKeySpec("mk1", ("first_name", "last_name", "date_of_birth", "sex", "postcode"))
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"headcount/matchkey/v1/mk1/first_name+last_name+date_of_birth+sex+postcode",
    ).derive(SECRET)
    text = "\x1f".join(["thomas", "okafor", "2012-03-07", "m", "SW1A1AA"]).encode()
    expected = hmac.digest(key, text, "sha256")[:16]
    assert match_keys([BASE], SECRET, (spec,)) == [[expected]]
    assert KEY_BYTES == 16


def test_keys_are_deterministic_and_keyed() -> None:
    people = [BASE, dataclasses.replace(BASE, first_name="ella"), BASE]
    first = _keys(people)
    assert first == _keys(people)
    assert all(level[0] == level[2] for level in first)  # same person, same keys
    other = _keys(people, OTHER_SECRET)
    for mine, theirs in zip(first, other, strict=True):
        assert not set(mine) & set(theirs)


def test_levels_are_separated() -> None:
    # Every level's key differs for the same record, even for two levels with
    # the same components under different names, or the same name with other
    # components.
    keys = _keys([BASE])
    values = [level[0] for level in keys]
    assert len(set(values)) == len(values)
    a = MatchKeySpec("a", ("first_name", "last_name"))
    b = MatchKeySpec("b", ("first_name", "last_name"))
    a2 = MatchKeySpec("a", ("last_name", "first_name"))
    ka, kb = match_keys([BASE], SECRET, (a, b))
    (ka2,) = match_keys([BASE], SECRET, (a2,))
    assert len({ka[0], kb[0], ka2[0]}) == 3


def test_missing_components_give_no_key() -> None:
    no_postcode = dataclasses.replace(BASE, postcode="")
    keys = _keys([no_postcode])
    for spec, level in zip(DEFAULT_MATCH_KEYS, keys, strict=True):
        needs_postcode = any(c.startswith("postcode") for c in spec.components)
        assert (level[0] is None) == needs_postcode, spec.name
    assert all(level[0] is None for level in _keys([Identity("", "", "", "", "")]))


@settings(max_examples=50, deadline=None)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=12),
)
def test_keys_never_raise_and_are_none_or_16_bytes(first: str, last: str) -> None:
    identity = normalise_identity(first, last, "2010-01-02", "F", "M1 1AE")
    for level in _keys([identity]):
        assert level[0] is None or len(level[0]) == KEY_BYTES


# Each level must forgive the error it names: the record with the error gets
# the same key at that level while the stricter first level tells them apart.
TOLERATED = [
    ("mk2", dataclasses.replace(BASE, first_name="tommy")),
    ("mk2", dataclasses.replace(BASE, sex="")),
    ("mk3", dataclasses.replace(BASE, date_of_birth="2012-07-03")),
    ("mk3", dataclasses.replace(BASE, first_name="tom", date_of_birth="2012-07-03")),
    ("mk4", dataclasses.replace(BASE, first_name="tohmas")),
    ("mk4", dataclasses.replace(BASE, postcode="")),
    ("mk4", dataclasses.replace(BASE, postcode="LS61AN")),
    ("mk5", dataclasses.replace(BASE, postcode="SW1A2AA")),
    ("mk6", dataclasses.replace(BASE, date_of_birth="2012-03-17")),
    ("mk7", dataclasses.replace(BASE, last_name="okafor smith")),
    ("mk7", dataclasses.replace(BASE, last_name="okafro")),
]


@pytest.mark.parametrize(("level", "variant"), TOLERATED)
def test_each_level_tolerates_its_error(level: str, variant: Identity) -> None:
    keys = _keys([BASE, variant])
    assert keys[LEVEL[level]][0] == keys[LEVEL[level]][1]
    assert keys[0][0] != keys[0][1]  # mk1 is exact: it does not


def test_formatting_differences_meet_at_the_first_level() -> None:
    a = normalise_identity("Thomas", "O'Kafor", "07/03/2012", "Male", "sw1a 1aa")
    b = normalise_identity("THOMAS ", "Okafor", "2012-03-07", "M", "SW1A1AA")
    c = normalise_identity("Thomas", "O-Kafor", "20120307", "1", "SW1A 1AA")
    keys = _keys([a, b, c])
    assert keys[0][0] == keys[0][1]
    assert keys[0][0] is not None
    # "o kafor" and "okafor" are one surname once spaces are dropped.
    assert keys[0][2] == keys[0][0]


# --- match_by_keys ------------------------------------------------------------------


def test_strictest_level_first_and_one_to_one() -> None:
    left = [BASE, dataclasses.replace(BASE, first_name="ella", sex="f")]
    right = [
        dataclasses.replace(BASE, first_name="ella", sex="f"),
        dataclasses.replace(BASE, first_name="tommy"),  # nickname: mk2
        BASE,  # exact: mk1, so "tommy" stays unlinked
    ]
    links = match_by_keys(_keys(left), _keys(right))
    assert links == [(0, 2, 0), (1, 0, 0)]


def test_looser_levels_link_what_stricter_ones_miss() -> None:
    left = [BASE]
    right = [dataclasses.replace(BASE, first_name="tommy")]
    assert match_by_keys(_keys(left), _keys(right)) == [(0, 0, LEVEL["mk2"])]


def test_ambiguous_keys_are_never_used() -> None:
    # Twins with the same initial share the mk4 key (initial + surname + date
    # of birth + sex): with the postcode missing on the right, mk4 is the only
    # level that could link them, and it must refuse.
    ella = dataclasses.replace(BASE, first_name="ella", sex="f")
    emma = dataclasses.replace(BASE, first_name="emma", sex="f")
    left = [ella, emma]
    right = [dataclasses.replace(ella, first_name="elal", postcode="")]
    assert match_by_keys(_keys(left), _keys(right)) == []
    # With one twin alone on the left, the key is unique and links.
    assert match_by_keys(_keys([ella]), _keys(right)) == [(0, 0, LEVEL["mk4"])]
    # A duplicated record on the right is refused the same way.
    assert match_by_keys(_keys([BASE]), _keys([BASE, BASE])) == []


def test_uniqueness_counts_linked_records_too() -> None:
    # The left ella is linked at mk1; the other left record shares ella's mk4
    # key, so mk4 is ambiguous on the left and "emma" (typo'd on the right)
    # is not linked by it, even though ella is already taken.
    ella = dataclasses.replace(BASE, first_name="ella", sex="f")
    emma = dataclasses.replace(BASE, first_name="emma", sex="f", postcode="")
    left = [ella, emma]
    right = [ella, dataclasses.replace(emma, first_name="emam")]
    assert match_by_keys(_keys(left), _keys(right)) == [(0, 0, 0)]


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="levels"):
        match_by_keys(_keys([BASE]), _keys([BASE])[:2])
    ragged: list[list[bytes | None]] = [[b"x" * 16], []]
    with pytest.raises(ValueError, match="different numbers of records"):
        match_by_keys(ragged, [[None], [None]])
    assert match_by_keys([[]], [[]]) == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5), max_size=12),
    st.lists(st.integers(0, 5), max_size=12),
    st.lists(st.integers(0, 5), max_size=12),
    st.lists(st.integers(0, 5), max_size=12),
)
def test_match_by_keys_is_one_to_one_and_never_uses_shared_keys(
    l1: list[int], l2: list[int], r1: list[int], r2: list[int]
) -> None:
    def key(v: int) -> bytes | None:
        return None if v == 0 else bytes([v]) * 16

    n_left, n_right = min(len(l1), len(l2)), min(len(r1), len(r2))
    left = [[key(v) for v in l1[:n_left]], [key(v) for v in l2[:n_left]]]
    right = [[key(v) for v in r1[:n_right]], [key(v) for v in r2[:n_right]]]
    links = match_by_keys(left, right)
    assert len({i for i, _, _ in links}) == len(links)
    assert len({j for _, j, _ in links}) == len(links)
    for i, j, level in links:
        k = left[level][i]
        assert k is not None and k == right[level][j]
        assert left[level].count(k) == 1 and right[level].count(k) == 1


def test_agreement_levels_report_the_strictest_agreeing_level() -> None:
    left = _keys([BASE, BASE])
    right = _keys(
        [BASE, dataclasses.replace(BASE, first_name="tommy"), Identity("", "", "", "", "")]
    )
    levels = agreement_levels(left, right, np.array([0, 0, 1, 0]), np.array([0, 1, 2, 2]))
    assert levels.tolist() == [0, LEVEL["mk2"], -1, -1]
    with pytest.raises(ValueError, match="range"):
        agreement_levels(left, right, np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="equal length"):
        agreement_levels(left, right, np.array([0, 1]), np.array([0]))


# --- precision on synthetic data ----------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[Identity], list[Identity], set[tuple[int, int]]]:
    out: Path = tmp_path_factory.mktemp("matchkeys")
    generate_population(2000, 3, out)

    def load(name: str) -> tuple[list[Identity], dict[str, int]]:
        frame = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
        rows = zip(
            frame.first_name,
            frame.last_name,
            frame.date_of_birth,
            frame.sex,
            frame.postcode,
            strict=True,
        )
        return [normalise_identity(*r) for r in rows], {
            rid: i for i, rid in enumerate(frame.record_id)
        }

    left, left_pos = load("education")
    right, right_pos = load("health")
    gt = pd.read_csv(out / "ground_truth.csv", dtype=str, keep_default_na=False)
    truth = {
        (left_pos[e], right_pos[h])
        for e, h in zip(gt.education_id, gt.health_id, strict=True)
        if e and h
    }
    return left, right, truth


def test_match_keys_are_precise_on_synthetic_data(
    synthetic: tuple[list[Identity], list[Identity], set[tuple[int, int]]],
) -> None:
    left, right, truth = synthetic
    links = match_by_keys(_keys(left), _keys(right))
    found = {(i, j) for i, j, _ in links}
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / len(truth)
    # Measured on 10,000 people x 3 seeds x 4 department pairs: precision
    # 1.000 (no wrong link in 7,956), recall 0.97-0.98.
    assert precision >= 0.995, precision
    assert recall >= 0.93, recall
    for level in range(len(DEFAULT_MATCH_KEYS)):
        at_level = {(i, j) for i, j, lv in links if lv == level}
        if at_level:
            assert len(at_level & truth) / len(at_level) >= 0.99, DEFAULT_MATCH_KEYS[level].name


def test_every_component_is_used_or_documented() -> None:
    from headcount.linkage.matchkeys import EXTRA_MATCH_KEYS, SUPPORT_KEYS

    specs = (*DEFAULT_MATCH_KEYS, *EXTRA_MATCH_KEYS, *SUPPORT_KEYS)
    used = {c for spec in specs for c in spec.components}
    assert used == set(COMPONENTS)


def test_the_birthday_survives_a_mistyped_year_and_a_transposition() -> None:
    day_month = COMPONENTS["birth_day_month"]
    year = COMPONENTS["birth_year"]
    a = Identity("ann", "lee", "1961-02-24", "", "")
    b = Identity("ann", "lee", "1962-02-24", "", "")  # the year mistyped
    c = Identity("ann", "lee", "", "", "", birth_partial="0000-02-24")  # year unreadable
    assert day_month(a) == day_month(b) == day_month(c) == "02-24"
    assert year(a) != year(b) and year(c) == ""
    assert day_month(Identity("ann", "lee", "1961-03-04", "", "")) == day_month(
        Identity("ann", "lee", "1961-04-03", "", "")
    )
    assert day_month(Identity("ann", "lee", "", "", "", birth_partial="1961-00-24")) == ""


def test_supporting_keys_and_their_guards_follow_the_fields_held() -> None:
    from headcount.linkage.matchkeys import (
        REQUIRED_GUARDS,
        SUPPORT_GUARDS,
        SUPPORT_KEYS,
        derive_support_keys,
        support_guards,
    )

    every = {"first_name", "last_name", "date_of_birth", "address", "locality"}
    every |= {"postcode", "reference"}
    specs = derive_support_keys(every)
    names = [s.name for s in specs]
    assert names == [s.name for s in SUPPORT_KEYS]  # in their order, guards included
    guards = support_guards(specs)
    assert {names[k]: tuple(names[g] for g in v) for k, v in guards.items()} == SUPPORT_GUARDS
    # A guard pairs a component its key fixes with what must not disagree.
    by_name = {s.name: s for s in SUPPORT_KEYS}
    for key, levels in SUPPORT_GUARDS.items():
        for level in levels:
            guard, fixed = set(by_name[level].components), set(by_name[key].components)
            assert len(guard & fixed) == 1 and len(guard - fixed) == 1, (key, level)
    # Without dates of birth the names-and-place keys go with their guards;
    # without reference numbers the chance-prone keys keep working unguarded.
    no_dates = [s.name for s in derive_support_keys(every - {"date_of_birth"})]
    assert not {"supnamesaddr", "supfirstaddr"} & set(no_dates)
    assert not set(no_dates) & {g for v in SUPPORT_GUARDS.values() for g in v}
    no_refs = derive_support_keys(every - {"reference"})
    assert {"supnamesyear", "supfirstdob", "supnamesaddr"} <= {s.name for s in no_refs}
    assert all(
        {no_refs[g].name for g in levels} <= REQUIRED_GUARDS
        for levels in support_guards(no_refs).values()
    )
    with pytest.raises(ValueError, match="needs its guard"):
        support_guards([by_name["supnamesaddr"]])


def test_the_hierarchy_is_derived_from_the_fields_the_data_holds() -> None:
    from headcount.linkage.matchkeys import derive_match_keys, present_fields
    from headcount.linkage.normalise import Identity

    full = {"first_name", "last_name", "date_of_birth", "sex", "postcode", "postcode_outward"}
    assert derive_match_keys(DEFAULT_MATCH_KEYS, full) == DEFAULT_MATCH_KEYS
    # No sex and no postcode (as in many non-UK files): every level that needed
    # them loses them, none becomes a bare name + date pair, none repeats.
    derived = derive_match_keys(DEFAULT_MATCH_KEYS, {"first_name", "last_name", "date_of_birth"})
    assert derived, "names and dates still make keys"
    for spec in derived:
        assert not {"sex", "postcode", "postcode_outward"} & set(spec.components)
        assert len(spec.components) >= 3
    assert len({s.components for s in derived}) == len(derived)
    assert derived[0].components == ("first_name", "last_name", "date_of_birth")
    assert "without sex, postcode" in derived[0].tolerates
    # Names alone make no key.
    assert derive_match_keys(DEFAULT_MATCH_KEYS, {"first_name", "last_name"}) == ()
    # Which fields count as held: half of every file's records.
    a = [Identity("ann", "lee", "2011-01-01", "", "2600")] * 3
    b = [Identity("ann", "lee", "2011-01-01", "f", "2600")] * 3
    held = present_fields([a, b])
    assert held == {"first_name", "last_name", "date_of_birth", "postcode"}
    assert "postcode_outward" not in held  # a 4-digit code has no UK outward code


def test_levels_for_fields_only_some_files_hold() -> None:
    from headcount.linkage.matchkeys import EXTRA_MATCH_KEYS, derive_match_keys

    base = {"first_name", "last_name", "date_of_birth"}
    plain = derive_match_keys(DEFAULT_MATCH_KEYS, base, EXTRA_MATCH_KEYS)
    assert not {"mkref", "mkrefname", "mkaddr", "mkloc"} & {s.name for s in plain}
    assert "mkswap" in {s.name for s in plain}  # names and a date are enough for it
    rich = derive_match_keys(
        DEFAULT_MATCH_KEYS, base | {"reference", "address", "locality"}, EXTRA_MATCH_KEYS
    )
    names = [s.name for s in rich]
    # The exact reference number leads; the address and locality levels follow.
    assert names[:2] == ["mkref", "mkrefname"] and {"mkaddr", "mkloc"} <= set(names)
    assert names[2 : 2 + len(plain)] == [s.name for s in plain]
