"""A second synthetic profile, not the one the linkage engine was tuned on.

`headcount.synth` writes UK-style departments whose recording errors the
engine's schema and match-keys were tuned against. This profile is built
differently so that linkage quality on it says something about data from
elsewhere: Australian-style people (names mostly en_AU, with en_NZ, en_IN,
it_IT, pl_PL, de_DE and es_MX mixed in), addresses split over street number,
street, unit, locality, a 4-digit postcode and a state, a 7-digit reference
number, and no sex column. People live in households (sharing a surname and
an address), which makes near-duplicates a linker must tell apart.

Errors come from `headcount.tools.corrupt` and are heavier than the UK
profile's: in `two_files` about half of file B's records carry one to three
errors (typos, OCR and phonetic spellings, blanked fields, swapped names,
transposed or shifted dates, impossible dates such as ``19450493`` or
``2001-02-30``), some people have moved, and the two files write dates
differently (A ``YYYYMMDD``; B ``DD/MM/YYYY`` or ``YYYY/MM/DD``, record by
record). B records the reference number for only 60% of people, so that it
cannot link nearly everyone alone. `dedup_file` writes one file in which
some people appear up to four times.

Everything flows from one seed: the same seed writes byte-identical files
(for a given Faker version). Names and streets are drawn once into pools with
a seeded Faker and then sampled with numpy, so 5,000 people take about a second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from faker import Faker

from headcount.errors import InvalidRequest
from headcount.tools.corrupt import ERRORS, CorruptionSpec, Table, corrupt_table, write_table

__all__ = [
    "COLUMNS",
    "REFERENCE_DATE",
    "DedupFile",
    "People",
    "TwoFiles",
    "dedup_file",
    "make_people",
    "two_files",
]

REFERENCE_DATE = dt.date(2026, 3, 31)  # ages are whole years on this day
COLUMNS = (
    "record_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "locality",
    "postcode",
    "state",
    "date_of_birth",
    "reference",
)

# Locale of a household -> share. en_AU names dominate; the others bring
# spellings (and, for pl_PL, de_DE and es_MX, diacritics) the UK profile lacks.
_LOCALES = {
    "en_AU": 0.62,
    "en_NZ": 0.06,
    "en_IN": 0.10,
    "it_IT": 0.07,
    "pl_PL": 0.05,
    "de_DE": 0.05,
    "es_MX": 0.05,
}
_FIRST_POOL = {"en_AU": 1500}  # Faker draws per locale; others take the default
_LAST_POOL = {"en_AU": 2000}
_DEFAULT_FIRST_POOL, _DEFAULT_LAST_POOL = 300, 400
# State -> (share of localities, postcode ranges), roughly Australia's.
_STATES: dict[str, tuple[float, tuple[tuple[int, int], ...]]] = {
    "NSW": (0.32, ((2000, 2599), (2620, 2899), (2921, 2999))),
    "VIC": (0.26, ((3000, 3999),)),
    "QLD": (0.20, ((4000, 4999),)),
    "WA": (0.10, ((6000, 6797),)),
    "SA": (0.07, ((5000, 5799),)),
    "TAS": (0.02, ((7000, 7799),)),
    "ACT": (0.02, ((2600, 2618), (2900, 2920))),
    "NT": (0.01, ((800, 899),)),
}
_HOUSEHOLD_SIZES = np.array([1, 2, 3, 4, 5])
_HOUSEHOLD_PROBS = np.array([0.27, 0.34, 0.16, 0.16, 0.07])
_P_OWN_SURNAME = 0.15  # household members with a surname of their own
_P_UNIT = 0.25  # households with a unit or flat number
_UNIT_WORDS = ("Unit", "Unit", "Unit", "Flat", "Apt")

_SHARE_BOTH, _SHARE_ONLY_A = 0.80, 0.10  # the rest are in B only
_P_MOVED = 0.06  # of B's copies (and of duplicates): another address
_P_DMY = 0.6  # of B's dates written DD/MM/YYYY; the rest YYYY/MM/DD
# Of B's records (and of duplicates): no reference recorded. A second agency
# often lacks the first one's number; without this the reference alone
# would link nearly everyone and the names, dates and addresses would not matter.
_P_NO_REFERENCE = 0.4
_P_DUPLICATED = 0.30  # of people in the dedup file
_EXTRA_COPIES = np.array([1, 2, 3])
_EXTRA_PROBS = np.array([0.6, 0.3, 0.1])

# File A is the cleaner register: one light slip in a few records.
_SPEC_A = CorruptionSpec(
    columns={
        "given_name": "name",
        "surname": "name",
        "date_of_birth": "date",
        "postcode": "code",
        "address_1": "text",
    },
    rate=0.08,
    max_errors=1,
    errors=frozenset({"keyboard", "delete", "transpose", "phonetic", "missing"}),
    id_column="record_id",
)
# File B (and duplicates): heavy, every error the tool has, impossible dates included.
_HEAVY_COLUMNS = {
    "given_name": "name",
    "surname": "name",
    "date_of_birth": "date",
    "postcode": "code",
    "address_1": "text",
    "locality": "text",
    "street_number": "code",
    "reference": "code",
}
_SPEC_B = CorruptionSpec(
    columns=_HEAVY_COLUMNS,
    rate=0.55,
    max_errors=3,
    errors=frozenset(ERRORS),
    swap=("given_name", "surname"),
    id_column="record_id",
)
_SPEC_ORIGINAL = CorruptionSpec(
    columns=_SPEC_A.columns, rate=0.05, max_errors=1, errors=_SPEC_A.errors, id_column="record_id"
)
_SPEC_DUPLICATE = CorruptionSpec(
    columns=_HEAVY_COLUMNS,
    rate=0.85,
    max_errors=3,
    errors=_SPEC_B.errors,
    swap=("given_name", "surname"),
    id_column="record_id",
)


@dataclass(frozen=True, slots=True)
class People:
    """Error-free people, one array element each (all arrays of equal length).

    Dates of birth are ``(year, month, day)`` integer arrays so each file can
    write them its own way.
    """

    household: np.ndarray  # int64
    given_name: np.ndarray  # object (str), as are the rest but the date parts
    surname: np.ndarray
    street_number: np.ndarray
    address_1: np.ndarray
    address_2: np.ndarray
    locality: np.ndarray
    postcode: np.ndarray
    state: np.ndarray
    year: np.ndarray  # int64
    month: np.ndarray
    day: np.ndarray
    reference: np.ndarray

    def __post_init__(self) -> None:
        sizes = {len(getattr(self, f.name)) for f in fields(self)}
        if len(sizes) != 1:
            raise ValueError("every People array must have the same length")

    def __len__(self) -> int:
        return len(self.household)


@dataclass(frozen=True, slots=True)
class _Pools:
    first: dict[str, np.ndarray]  # locale -> given names
    last: dict[str, np.ndarray]  # locale -> surnames
    street: np.ndarray  # street names
    street_locality: np.ndarray  # int64: each street's locality
    locality: np.ndarray  # locality names
    locality_postcode: np.ndarray
    locality_state: np.ndarray


def _obj(values: Sequence[str] | np.ndarray) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _build_pools(seed: int, n_people: int, rng: np.random.Generator) -> _Pools:
    first: dict[str, np.ndarray] = {}
    last: dict[str, np.ndarray] = {}
    for k, locale in enumerate(_LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 101 + k)
        first[locale] = _obj(
            [fake.first_name() for _ in range(_FIRST_POOL.get(locale, _DEFAULT_FIRST_POOL))]
        )
        last[locale] = _obj(
            [fake.last_name() for _ in range(_LAST_POOL.get(locale, _DEFAULT_LAST_POOL))]
        )
    au = Faker("en_AU")
    au.seed_instance(seed * 101 + 99)
    n_localities = max(30, n_people // 150)
    n_streets = max(60, n_people // 10)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n_localities:
        # Faker's cities come with "St." and "Port"; a suburb name is unique in the pool.
        name = au.city().replace("St. ", "St ")
        if name not in seen:
            seen.add(name)
            names.append(name)
    states = list(_STATES)
    weights = np.array([_STATES[s][0] for s in states])
    state_of = rng.choice(len(states), size=n_localities, p=weights / weights.sum())
    postcodes = []
    for s in state_of:
        ranges = _STATES[states[s]][1]
        lo, hi = ranges[int(rng.integers(len(ranges)))]
        postcodes.append(f"{int(rng.integers(lo, hi + 1)):04d}")
    streets = _obj([au.street_name() for _ in range(n_streets)])
    return _Pools(
        first,
        last,
        streets,
        rng.integers(0, n_localities, size=n_streets),
        _obj(names),
        _obj(postcodes),
        _obj([states[s] for s in state_of]),
    )


def make_people(n: int, seed: int) -> People:
    """``n`` error-free people in households, deterministic from ``seed``.

    Raises:
        InvalidRequest: ``n`` < 1.
    """
    if n < 1:
        raise InvalidRequest(f"people must be at least 1, got {n}")
    pool_rng, household_rng, person_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    pools = _build_pools(seed, n, pool_rng)
    rng = household_rng
    sizes = rng.choice(_HOUSEHOLD_SIZES, size=n, p=_HOUSEHOLD_PROBS)  # more than enough
    household = np.repeat(np.arange(n), sizes)[:n]
    position = np.concatenate([np.arange(s) for s in sizes])[:n]
    n_households = int(household[-1]) + 1
    locales = list(_LOCALES)
    shares = np.array(list(_LOCALES.values()))
    h_locale = rng.choice(len(locales), size=n_households, p=shares / shares.sum())
    h_street = rng.integers(0, len(pools.street), size=n_households)
    h_number = rng.integers(1, 300, size=n_households)
    h_unit = np.where(rng.random(n_households) < _P_UNIT, rng.integers(1, 40, size=n_households), 0)
    h_unit_word = rng.integers(0, len(_UNIT_WORDS), size=n_households)
    h_surname = np.array(
        [rng.choice(pools.last[locales[loc]]) for loc in h_locale.tolist()], dtype=object
    )
    h_head_age = rng.integers(20, 86, size=n_households)

    rng = person_rng
    locale = h_locale[household]
    given = _obj([str(rng.choice(pools.first[locales[loc]])) for loc in locale.tolist()])
    surname = h_surname[household].copy()
    own = np.flatnonzero(rng.random(n) < _P_OWN_SURNAME)
    surname[own] = [str(rng.choice(pools.last[locales[locale[i]]])) for i in own.tolist()]
    # The first member is the head; the second a partner of about the same age
    # four times in five, else a child, as are the rest.
    head_age = h_head_age[household]
    partner = (position == 1) & (rng.random(n) < 0.8)
    child_age = np.minimum(rng.integers(0, 18, size=n), np.maximum(head_age - 18, 0))
    age = np.where(
        position == 0,
        head_age,
        np.where(partner, np.clip(head_age + rng.integers(-6, 7, size=n), 18, 95), child_age),
    )
    # A birthday anywhere in the year before the age was reached.
    days_back = age * 365.25 + rng.integers(1, 365, size=n)
    ordinal = REFERENCE_DATE.toordinal() - days_back.astype(np.int64)
    births = [dt.date.fromordinal(int(o)) for o in ordinal.tolist()]
    street = h_street[household]
    loc_of = pools.street_locality[street]
    unit = h_unit[household]
    words = h_unit_word[household]
    address_2 = _obj(
        [
            f"{_UNIT_WORDS[w]} {u}" if u else ""
            for u, w in zip(unit.tolist(), words.tolist(), strict=True)
        ]
    )
    reference = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    return People(
        household=household.astype(np.int64),
        given_name=given,
        surname=surname,
        street_number=_obj([str(x) for x in h_number[household].tolist()]),
        address_1=pools.street[street],
        address_2=address_2,
        locality=pools.locality[loc_of],
        postcode=pools.locality_postcode[loc_of],
        state=pools.locality_state[loc_of],
        year=np.array([b.year for b in births], dtype=np.int64),
        month=np.array([b.month for b in births], dtype=np.int64),
        day=np.array([b.day for b in births], dtype=np.int64),
        reference=_obj([str(x) for x in reference.tolist()]),
    )


def _second_copy(people: People, idx: np.ndarray, rng: np.random.Generator) -> People:
    """People ``idx`` as another register holds them: some at another person's
    address (a move), some without a reference number."""
    moved = rng.random(len(idx)) < _P_MOVED
    take = rng.integers(0, len(people), size=len(idx))  # an address someone else has
    source = np.where(moved, take, idx)
    reference = people.reference[idx].copy()
    reference[rng.random(len(idx)) < _P_NO_REFERENCE] = ""
    return People(
        household=people.household[idx],
        given_name=people.given_name[idx],
        surname=people.surname[idx],
        street_number=people.street_number[source],
        address_1=people.address_1[source],
        address_2=people.address_2[source],
        locality=people.locality[source],
        postcode=people.postcode[source],
        state=people.state[source],
        year=people.year[idx],
        month=people.month[idx],
        day=people.day[idx],
        reference=reference,
    )


def _take(people: People, idx: np.ndarray) -> People:
    return People(*(getattr(people, f.name)[idx] for f in fields(People)))


def _dates(people: People, layouts: Sequence[str]) -> list[str]:
    """Each person's date of birth in the layout given for them (``ymd``, ``compact``, ``dmy``,
    ``ymd/``)."""
    out = []
    for y, m, d, layout in zip(
        people.year.tolist(), people.month.tolist(), people.day.tolist(), layouts, strict=True
    ):
        if layout == "compact":
            out.append(f"{y:04d}{m:02d}{d:02d}")
        elif layout == "dmy":
            out.append(f"{d:02d}/{m:02d}/{y:04d}")
        elif layout == "ymd/":
            out.append(f"{y:04d}/{m:02d}/{d:02d}")
        else:
            out.append(f"{y:04d}-{m:02d}-{d:02d}")
    return out


def _table(people: People, ids: Sequence[str], layouts: Sequence[str]) -> Table:
    dates = _dates(people, layouts)
    rows = zip(
        ids,
        people.given_name.tolist(),
        people.surname.tolist(),
        people.street_number.tolist(),
        people.address_1.tolist(),
        people.address_2.tolist(),
        people.locality.tolist(),
        people.postcode.tolist(),
        people.state.tolist(),
        dates,
        people.reference.tolist(),
        strict=True,
    )
    return Table(COLUMNS, tuple(tuple(str(v) for v in r) for r in rows))


def _ids(prefix: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct record ids in a random order, so an id says nothing of who it is."""
    width = max(7, len(str(n)))
    return [f"{prefix}{k + 1:0{width}d}" for k in rng.permutation(n).tolist()]


@dataclass(frozen=True, slots=True)
class TwoFiles:
    """What `two_files` wrote."""

    a: Path
    b: Path
    truth: Path  # id_a,id_b of every true pair
    people: int
    records_a: int
    records_b: int
    true_pairs: int


def two_files(n: int, seed: int, out_dir: Path) -> TwoFiles:
    """Write ``a.csv``, ``b.csv`` and ``truth.csv`` for ``n`` people into ``out_dir``.

    About 80% of people are in both files, 10% in A only and 10% in B only.
    A is lightly corrupted (8% of records, one slip) and writes dates
    ``YYYYMMDD``; B is heavily corrupted (see the module docstring), writes
    60% of dates ``DD/MM/YYYY`` and the rest ``YYYY/MM/DD``, 6% of its
    people have moved and 40% of its records have no reference number. Rows
    are shuffled and ids (``A0000001``, ``B0000001``, ...) are in random
    order. ``truth.csv`` holds ``id_a,id_b`` for every person in both.
    Overwrites existing files.

    Raises:
        InvalidRequest: ``n`` < 1.
    """
    people = make_people(n, seed)
    member_rng, order_rng, move_rng, layout_rng, a_rng, b_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 2]).spawn(6)
    )
    u = member_rng.random(n)
    in_a = np.flatnonzero(u < _SHARE_BOTH + _SHARE_ONLY_A)
    in_b = np.flatnonzero((u < _SHARE_BOTH) | (u >= _SHARE_BOTH + _SHARE_ONLY_A))
    in_a = in_a[order_rng.permutation(len(in_a))]
    in_b = in_b[order_rng.permutation(len(in_b))]
    ids_a = _ids("A", len(in_a), order_rng)
    ids_b = _ids("B", len(in_b), order_rng)

    table_a = _table(_take(people, in_a), ids_a, ["compact"] * len(in_a))
    layouts_b = np.where(layout_rng.random(len(in_b)) < _P_DMY, "dmy", "ymd/").tolist()
    table_b = _table(_second_copy(people, in_b, move_rng), ids_b, layouts_b)
    out_dir.mkdir(parents=True, exist_ok=True)
    a, b, truth = out_dir / "a.csv", out_dir / "b.csv", out_dir / "truth.csv"
    write_table(corrupt_table(table_a, _SPEC_A, a_rng).table, a)
    write_table(corrupt_table(table_b, _SPEC_B, b_rng).table, b)
    id_of_a = dict(zip(in_a.tolist(), ids_a, strict=True))
    pairs = sorted(
        (id_of_a[p], id_b) for p, id_b in zip(in_b.tolist(), ids_b, strict=True) if p in id_of_a
    )
    write_table(Table(("id_a", "id_b"), tuple(pairs)), truth)
    return TwoFiles(a, b, truth, n, len(in_a), len(in_b), len(pairs))


@dataclass(frozen=True, slots=True)
class DedupFile:
    """What `dedup_file` wrote."""

    path: Path
    truth: Path  # record_id,person_id for every record
    people: int
    records: int
    duplicated_people: int  # people with more than one record


def dedup_file(n: int, seed: int, out_dir: Path) -> DedupFile:
    """Write ``dups.csv`` and ``dups_truth.csv`` for ``n`` people into ``out_dir``.

    Every person has one record, lightly corrupted (5% of records, one slip);
    about 30% have 1-3 more (1 with probability 0.6, 2 with 0.3, 3 with 0.1),
    each heavily corrupted (85% of copies, one to three errors, impossible
    dates included), 6% at another address and 40% without a reference
    number. Dates are ``YYYY-MM-DD``.
    Rows are shuffled; ``dups_truth.csv`` maps each ``record_id`` to its
    ``person_id`` (``P0000001``, ...). Overwrites existing files.

    Raises:
        InvalidRequest: ``n`` < 1.
    """
    people = make_people(n, seed)
    copy_rng, order_rng, move_rng, first_rng, extra_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 3]).spawn(5)
    )
    extra = np.where(
        copy_rng.random(n) < _P_DUPLICATED,
        copy_rng.choice(_EXTRA_COPIES, size=n, p=_EXTRA_PROBS),
        0,
    )
    copies = np.repeat(np.arange(n), extra)
    originals = corrupt_table(
        _table(people, [""] * n, ["ymd"] * n), _SPEC_ORIGINAL, first_rng
    ).table
    duplicates = corrupt_table(
        _table(_second_copy(people, copies, move_rng), [""] * len(copies), ["ymd"] * len(copies)),
        _SPEC_DUPLICATE,
        extra_rng,
    ).table
    person = np.concatenate([np.arange(n), copies])
    rows = list(originals.rows) + list(duplicates.rows)
    order = order_rng.permutation(len(rows))
    ids = _ids("R", len(rows), order_rng)
    width = max(7, len(str(n)))
    out_rows = []
    truth_rows = []
    for record_id, r in zip(ids, order.tolist(), strict=True):
        out_rows.append((record_id, *rows[r][1:]))
        truth_rows.append((record_id, f"P{int(person[r]) + 1:0{width}d}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path, truth = out_dir / "dups.csv", out_dir / "dups_truth.csv"
    write_table(Table(COLUMNS, tuple(out_rows)), path)
    write_table(Table(("record_id", "person_id"), tuple(truth_rows)), truth)
    return DedupFile(path, truth, n, len(rows), int(np.count_nonzero(extra)))
