"""Deterministic synthetic population for demos, tests and benchmarks.

Builds households of adults and children across the local authorities in
:mod:`headcount.departments`, decides which of the four departments sees each
person, gives each department record its own attributes, date and sex formats
and recording errors, and writes one CSV per department plus
``ground_truth.csv``, which maps every person to the record ids that are truly
theirs and holds their error-free identity.

Everything flows from one integer seed: the same seed writes byte-identical
files, so linkage quality can be measured against the truth across runs.
Names come from pools drawn once per locale with a seeded Faker and are then
sampled with numpy, which keeps 100,000 people to a few seconds.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from faker import Faker
from nicknames import NickNamer
from tqdm import tqdm

from headcount import departments
from headcount.errors import InvalidRequest
from headcount.linkage.address import normalise_address

log = logging.getLogger(__name__)

REFERENCE_DATE = date(2026, 3, 31)  # ages are whole years on this day

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
StrArray = npt.NDArray[np.object_]

# Share of local authority weights for (British, non-British) households; the
# second column leans towards the boroughs with larger migrant populations.
_LA_WEIGHTS: dict[str, tuple[float, float]] = {
    "Birmingham": (0.17, 0.20),
    "Bradford": (0.09, 0.08),
    "Bristol": (0.10, 0.07),
    "Camden": (0.05, 0.10),
    "Kent": (0.28, 0.12),
    "Leeds": (0.14, 0.10),
    "Manchester": (0.11, 0.13),
    "Newham": (0.06, 0.20),
}

_NON_BRITISH_SHARE = 0.11  # of households
_FOREIGN_LOCALES: dict[str, float] = {
    "pl_PL": 0.24,
    "ro_RO": 0.20,
    "pt_PT": 0.12,
    "it_IT": 0.12,
    "es_ES": 0.10,
    "fr_FR": 0.10,
    "tr_TR": 0.12,
}
_STATUS_PROBS: dict[str, float] = {
    "settled": 0.45,
    "limited_leave": 0.25,
    "limited_leave_nrpf": 0.12,
    "asylum_seeker": 0.10,
    "no_leave": 0.08,
}
_STATUS_SHARED = 0.9  # chance a member has the household's status rather than their own

# Household kinds: (probability, adults, has children). Children number 1-4.
_SINGLE, _PAIR, _COUPLE_KIDS, _LONE_PARENT, _THREE, _THREE_KIDS = range(6)
_KIND_PROBS = np.array([0.31, 0.30, 0.18, 0.065, 0.09, 0.055])
_KIND_ADULTS = np.array([1, 2, 2, 1, 3, 3], dtype=np.int64)
_KIND_HAS_CHILDREN = np.array([False, False, True, True, False, True])
_CHILDREN_PROBS = np.array([0.40, 0.38, 0.16, 0.06])

_MIN_ADULT_AGE, _MAX_AGE = 18, 85
_ADULT_AGES = np.arange(_MIN_ADULT_AGE, _MAX_AGE + 1)
# Flat to 64, then thinning to 30% at 85, roughly the shape of the UK pyramid.
_ADULT_AGE_WEIGHTS = np.where(_ADULT_AGES <= 64, 1.0, 1.0 - 0.7 * (_ADULT_AGES - 64) / 21)
_ADULT_AGE_WEIGHTS = _ADULT_AGE_WEIGHTS / _ADULT_AGE_WEIGHTS.sum()

# Pool sizes: how many Faker draws back each locale's name pools. Drawing with
# repetition keeps Faker's own name frequencies.
_GB_FIRST_POOL, _GB_LAST_POOL = 3000, 4000
_FOREIGN_FIRST_POOL, _FOREIGN_LAST_POOL = 500, 700
_HOUSEHOLDS_PER_STREET = 6
# Faker's en_GB surnames have no apostrophes; these give the "O'Brien" vs "OBrien"
# variation real registers show. Ten copies each make them ~1.5% of en_GB draws.
_APOSTROPHE_SURNAMES = ("O'Brien", "O'Connor", "O'Neill", "O'Sullivan", "O'Donnell", "D'Souza")

_COVERAGE_EDUCATION = 0.95  # of 4-17 year olds
_COVERAGE_HEALTH = 0.97
_JUSTICE_ADULT = {True: 0.047, False: 0.013}  # by male; averages ~3%
_JUSTICE_YOUTH = {True: 0.015, False: 0.005}  # 10-17 year olds; averages ~1%
_COVERAGE_IMMIGRATION = 0.93  # of people in non-British households

# Recording error rates, each drawn independently per department record.
_P_NICKNAME = 0.05
_P_TYPO = 0.03
_P_SURNAME_CHANGE = 0.01
_P_DAY_MONTH_SWAP = 0.015  # of records whose day is <= 12
_P_MOVED = 0.05
_P_MISSING_POSTCODE = 0.02
_P_MISSING_SEX = 0.01
_P_MISSING_DOB = 0.003
_P_UPPER_SURNAME = 0.02
_P_FIRST_CASE = 0.005
_P_EXTRA_SPACE = 0.01
_P_STRIP_PUNCTUATION = 0.3  # of records whose surname holds ' or -
_P_ABBREVIATE = 0.05

_ABBREVIATIONS = {
    "Avenue": "Ave",
    "Close": "Cl",
    "Court": "Ct",
    "Crescent": "Cres",
    "Drive": "Dr",
    "Gardens": "Gdns",
    "Lane": "Ln",
    "Place": "Pl",
    "Road": "Rd",
    "Square": "Sq",
    "Street": "St",
}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Fixed English abbreviations so justice dates do not depend on the process locale.
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ID_PREFIX = {"education": "EDU", "health": "HLT", "justice": "JUS", "immigration": "IMM"}


@dataclass(frozen=True, slots=True)
class SynthSummary:
    """What :func:`generate_population` wrote."""

    people: int
    households: int
    records: dict[str, int]  # department -> rows written
    out_dir: Path

    def __post_init__(self) -> None:
        if self.people < 1 or self.households < 1:
            raise InvalidRequest("a population needs at least one person and household")
        if any(n < 0 for n in self.records.values()):
            raise InvalidRequest("record counts cannot be negative")


@dataclass(frozen=True, slots=True)
class _Pools:
    """Name and street pools drawn once per run from a seeded Faker."""

    first: tuple[tuple[StrArray, StrArray], ...]  # per locale: (female, male); 0 is en_GB
    last: tuple[StrArray, ...]  # per locale
    variants: dict[tuple[str, bool], tuple[str, ...]]  # (first name, male) -> nicknames
    street_names: StrArray
    street_postcodes: StrArray


@dataclass(frozen=True, slots=True)
class _Population:
    """True identities, one array element per person (households indexed by ``household``)."""

    household: IntArray
    first: StrArray
    last: StrArray
    male: BoolArray
    age: IntArray  # whole years at REFERENCE_DATE
    dob_year: IntArray
    dob_month: IntArray
    dob_day: IntArray
    postcode: StrArray
    address: StrArray
    la: IntArray  # index into departments.LOCAL_AUTHORITIES
    british: BoolArray
    status: IntArray  # index into departments.STATUSES; meaningful when not british
    household_fsm: BoolArray  # free-school-meal eligibility of the household
    locale: IntArray  # index into the name pools (0 is en_GB)


def generate_population(
    people: int, seed: int, out_dir: Path, *, progress: bool = False
) -> SynthSummary:
    """Write education.csv, health.csv, justice.csv, immigration.csv and ground_truth.csv.

    ``people`` (>= 1) is the exact population size, adults and children together;
    households are drawn until it is reached and the last one trimmed. ``out_dir``
    is created if needed and existing files there are overwritten. The same
    ``seed`` gives byte-identical files. ``progress`` shows a tqdm bar on stderr.

    Raises :class:`headcount.errors.InvalidRequest` if ``people`` < 1.
    """
    if people < 1:
        raise InvalidRequest(f"people must be at least 1, got {people}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Independent streams per stage, so changing one stage's draws leaves the others alone.
    (
        household_rng,
        person_rng,
        coverage_rng,
        *department_rngs,
    ) = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(7))

    with tqdm(
        total=4 + len(departments.DEPARTMENTS), desc="synth", file=sys.stderr, disable=not progress
    ) as bar:
        kind, n_adults, size = _draw_households(people, household_rng)
        n_households = len(size)
        pools = _build_pools(seed, max(20, n_households // _HOUSEHOLDS_PER_STREET))
        bar.update()
        pop = _build_population(kind, n_adults, size, person_rng, pools)
        bar.update()
        covered = _coverage(pop, coverage_rng)
        bar.update()

        truth_ids: dict[str, StrArray] = {}
        records: dict[str, int] = {}
        for dept, rng in zip(departments.DEPARTMENTS, department_rngs, strict=True):
            idx = covered[dept]
            frame, ids = _department_frame(dept, idx, rng, pop, pools)
            ids_by_person = np.full(people, "", dtype=object)
            ids_by_person[idx] = ids
            truth_ids[dept] = ids_by_person
            _write_csv(frame, out_dir / f"{dept}.csv")
            records[dept] = len(frame)
            bar.update()

        _write_csv(_ground_truth(pop, truth_ids), out_dir / "ground_truth.csv")
        bar.update()

    log.info("synthetic population: %d people, %d households", people, n_households)
    return SynthSummary(people=people, households=n_households, records=records, out_dir=out_dir)


def _draw_households(people: int, rng: np.random.Generator) -> tuple[IntArray, IntArray, IntArray]:
    """Household kinds, adult counts and sizes summing exactly to ``people``."""
    n = people // 2 + 16  # mean size is ~2.3, so this nearly always suffices first time
    while True:
        kind = rng.choice(len(_KIND_PROBS), size=n, p=_KIND_PROBS)
        n_children = np.where(
            _KIND_HAS_CHILDREN[kind],
            rng.choice(len(_CHILDREN_PROBS), size=n, p=_CHILDREN_PROBS) + 1,
            0,
        )
        size = _KIND_ADULTS[kind] + n_children
        total = np.cumsum(size)
        if total[-1] >= people:
            break
        n *= 2
    h = int(np.searchsorted(total, people)) + 1
    size = size[:h].copy()
    # Children come after adults in a household, so trimming the last one drops children first.
    size[-1] -= int(total[h - 1]) - people
    n_adults = np.minimum(_KIND_ADULTS[kind[:h]], size)
    return kind[:h].astype(np.int64), n_adults.astype(np.int64), size.astype(np.int64)


def _build_pools(seed: int, n_streets: int) -> _Pools:
    """Name pools per locale, nickname variants and ``n_streets`` en_GB streets."""
    locales = ("en_GB", *_FOREIGN_LOCALES)
    first: list[tuple[StrArray, StrArray]] = []
    last: list[StrArray] = []
    for locale in locales:
        fake = Faker(locale)
        fake.seed_instance(seed)
        british = locale == "en_GB"
        n_first = _GB_FIRST_POOL if british else _FOREIGN_FIRST_POOL
        n_last = _GB_LAST_POOL if british else _FOREIGN_LAST_POOL
        female = [fake.first_name_female() for _ in range(n_first)]
        male = [fake.first_name_male() for _ in range(n_first)]
        surnames = [fake.last_name() for _ in range(n_last)]
        if british:
            surnames += [s for s in _APOSTROPHE_SURNAMES for _ in range(10)]
        first.append((_obj(female), _obj(male)))
        last.append(_obj(surnames))

    nick_namer = NickNamer()
    variants: dict[tuple[str, bool], tuple[str, ...]] = {}
    for female_pool, male_pool in first:
        female_set, male_set = set(female_pool), set(male_pool)
        for is_male, names, other in ((False, female_set, male_set), (True, male_set, female_set)):
            for name in sorted(names):
                found = nick_namer.nicknames_of(name) or nick_namer.canonicals_of(name)
                # Sorted, so the choice does not depend on set order (hash randomisation);
                # names of the other sex are dropped so Jack never becomes Jacqueline.
                options = sorted({v.title() for v in found} - other - {name})
                if options:
                    variants[(name, is_male)] = tuple(options)

    fake_gb = Faker("en_GB")
    fake_gb.seed_instance(seed + 1)
    streets = [fake_gb.street_name() for _ in range(n_streets)]
    postcodes = [fake_gb.postcode() for _ in range(n_streets)]
    return _Pools(
        first=tuple(first),
        last=tuple(last),
        variants=variants,
        street_names=_obj(streets),
        street_postcodes=_obj(postcodes),
    )


def _build_population(
    kind: IntArray,
    n_adults: IntArray,
    size: IntArray,
    rng: np.random.Generator,
    pools: _Pools,
    *,
    reference: date = REFERENCE_DATE,
    non_british_share: float = _NON_BRITISH_SHARE,
    status_probs: dict[str, float] | None = None,
    taken: set[tuple[str, str]] | None = None,
) -> _Population:
    """People for the given households: ages, sexes, names, dates of birth and addresses.

    Ages are whole years at ``reference``; ``non_british_share`` of households
    are non-British, with statuses drawn from ``status_probs`` (default: the
    resident mix). Every household gets its own address, none of them in
    ``taken`` (see :func:`_addresses`).
    """
    h = len(size)
    people = int(size.sum())
    hh = np.repeat(np.arange(h, dtype=np.int64), size)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    pos = np.arange(people) - start[hh]
    adult = pos < n_adults[hh]
    person_kind = kind[hh]

    # Ages. Parents' ages follow their eldest child so no one is a parent at 9.
    eldest = rng.integers(0, 18, size=h)
    child_age = np.where(pos == n_adults[hh], eldest[hh], rng.integers(0, eldest[hh] + 1))
    base = rng.choice(_ADULT_AGES, size=h, p=_ADULT_AGE_WEIGHTS)
    partner_gap = np.rint(rng.normal(0.0, 3.5, size=h)).astype(np.int64)
    parent = eldest + rng.integers(20, 41, size=h)
    lone_parent = eldest + rng.integers(18, 41, size=h)
    grown_child = rng.integers(18, 31, size=h)
    parent_of_grown = grown_child + rng.integers(20, 36, size=h)
    grandparent = parent + rng.integers(20, 36, size=h)
    sharers = rng.integers(19, 36, size=(h, 3))
    house_share = (kind == _THREE) & (rng.random(h) < 0.5)

    a0 = np.select(
        [kind == _COUPLE_KIDS, kind == _THREE_KIDS, kind == _LONE_PARENT, kind == _THREE],
        [parent, parent, lone_parent, np.where(house_share, sharers[:, 0], parent_of_grown)],
        default=base,
    )
    a1 = np.where(house_share, sharers[:, 1], a0 + partner_gap)
    a2 = np.select(
        [house_share, kind == _THREE, kind == _THREE_KIDS],
        [sharers[:, 2], grown_child, grandparent],
        default=0,
    )
    adult_ages = np.clip(np.stack([a0, a1, a2], axis=1), _MIN_ADULT_AGE, _MAX_AGE)
    age = np.where(adult, adult_ages[hh, np.minimum(pos, 2)], child_age).astype(np.int64)

    # Sex. Most couples are mixed-sex; most lone parents are mothers.
    male = rng.random(people) < np.where(adult, 0.5, 0.51)
    lead = start[hh]
    couple = np.isin(person_kind, (_PAIR, _COUPLE_KIDS, _THREE_KIDS)) | (
        (person_kind == _THREE) & ~house_share[hh]
    )
    second = adult & (pos == 1) & couple
    mixed = rng.random(people) < 0.9
    male = np.where(second, np.where(mixed, ~male[lead], male[lead]), male)
    lone_parent_lead = (person_kind == _LONE_PARENT) & (pos == 0)
    male = np.where(lone_parent_lead, rng.random(people) < 0.15, male)

    # Household-level facts.
    british = rng.random(h) >= non_british_share
    locale = np.where(
        british,
        0,
        1 + rng.choice(len(_FOREIGN_LOCALES), size=h, p=_probs(_FOREIGN_LOCALES.values())),
    )
    la_weights = [_LA_WEIGHTS[la] for la in departments.LOCAL_AUTHORITIES]
    n_la = len(la_weights)
    la = np.where(
        british,
        rng.choice(n_la, size=h, p=_probs(w[0] for w in la_weights)),
        rng.choice(n_la, size=h, p=_probs(w[1] for w in la_weights)),
    )
    status_p = _probs((status_probs or _STATUS_PROBS)[s] for s in departments.STATUSES)
    hh_status = rng.choice(len(status_p), size=h, p=status_p)
    status = np.where(
        rng.random(people) < _STATUS_SHARED,
        hh_status[hh],
        rng.choice(len(status_p), size=people, p=status_p),
    )
    precarious = np.isin(
        hh_status,
        [
            departments.STATUSES.index(s)
            for s in ("limited_leave_nrpf", "asylum_seeker", "no_leave")
        ],
    )
    fsm_p = np.where(british, 0.19, np.where(precarious, 0.5, 0.25))
    household_fsm = rng.random(h) < fsm_p
    street = rng.integers(0, len(pools.street_names), size=h)
    hh_postcode = pools.street_postcodes[street]
    hh_address = _addresses(
        rng, pools.street_names[street], hh_postcode, set() if taken is None else taken
    )

    # Names. Surnames are the household's unless a partner kept theirs, sharers are
    # unrelated, or a child carries the other parent's name.
    person_locale = locale[hh]
    hh_last = np.empty(h, dtype=object)
    for li, pool in enumerate(pools.last):
        sel = np.flatnonzero(locale == li)
        hh_last[sel] = pool[rng.integers(0, len(pool), size=len(sel))]
    double = np.flatnonzero(british & (rng.random(h) < 0.03))
    extra = pools.last[0][rng.integers(0, len(pools.last[0]), size=len(double))]
    hh_last[double] = [f"{a}-{b}" for a, b in zip(hh_last[double], extra, strict=True)]

    own_p = np.zeros(people)
    own_p[adult & (pos == 1)] = 0.12
    own_p[adult & (pos == 1) & (person_kind == _PAIR)] = 0.2
    own_p[adult & (pos == 2)] = 0.05
    own_p[adult & (pos == 2) & (person_kind == _THREE_KIDS)] = 0.5
    own_p[~adult] = 0.05
    own_p[house_share[hh] & (pos > 0)] = 1.0
    own = rng.random(people) < own_p
    last = hh_last[hh].copy()
    first = np.empty(people, dtype=object)
    for li in range(len(pools.last)):
        in_locale = person_locale == li
        sel = np.flatnonzero(in_locale & own)
        last[sel] = pools.last[li][rng.integers(0, len(pools.last[li]), size=len(sel))]
        for is_male in (False, True):
            sel = np.flatnonzero(in_locale & (male == is_male))
            names = pools.first[li][int(is_male)]
            first[sel] = names[rng.integers(0, len(names), size=len(sel))]

    dob_year, dob_month, dob_day = _dates_of_birth(age, rng, reference)
    return _Population(
        household=hh,
        first=first,
        last=last,
        male=male.astype(np.bool_),
        age=age,
        dob_year=dob_year,
        dob_month=dob_month,
        dob_day=dob_day,
        postcode=hh_postcode[hh],
        address=hh_address[hh],
        la=la[hh].astype(np.int64),
        british=british[hh],
        status=status.astype(np.int64),
        household_fsm=household_fsm[hh],
        locale=person_locale.astype(np.int64),
    )


def _dates_of_birth(
    age: IntArray, rng: np.random.Generator, reference: date = REFERENCE_DATE
) -> tuple[IntArray, IntArray, IntArray]:
    """Uniform dates of birth giving exactly ``age`` whole years at ``reference``."""
    max_age = int(age.max())
    # Window for age a: the day after the (a+1)th birthday-before-reference up to the a-th.
    first_day = np.empty(max_age + 1, dtype="datetime64[D]")
    span_days = np.empty(max_age + 1, dtype=np.int64)
    for a in range(max_age + 1):
        lo = _years_before(reference, a + 1) + timedelta(days=1)
        hi = _years_before(reference, a)
        first_day[a] = np.datetime64(lo, "D")
        span_days[a] = (hi - lo).days + 1
    offset = np.floor(rng.random(len(age)) * span_days[age]).astype(np.int64)
    dob = first_day[age] + offset.astype("timedelta64[D]")
    year = dob.astype("datetime64[Y]")
    month = dob.astype("datetime64[M]")
    return (
        (year.astype(np.int64) + 1970).astype(np.int64),
        (month - year.astype("datetime64[M]")).astype(np.int64) + 1,
        (dob - month.astype("datetime64[D]")).astype(np.int64) + 1,
    )


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier, 29 February falling back to the 28th."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _addresses(
    rng: np.random.Generator,
    streets: StrArray,
    postcodes: StrArray | None = None,
    taken: set[tuple[str, str]] | None = None,
) -> StrArray:
    """House-number (and sometimes flat) addresses on the given streets.

    With ``postcodes`` (one per street) and ``taken`` (the (postcode, normalised
    address) pairs already lived in, updated in place), every address is new:
    one that is taken moves to the next free house number on its street. The
    repair draws no random numbers, so every other draw of the seed is unchanged.
    """
    n = len(streets)
    number = rng.integers(1, 200, size=n)
    flat = rng.random(n) < 0.12
    flat_no = rng.integers(1, 30, size=n)

    def address(street: str, num: int, is_flat: bool, f: int) -> str:
        return f"Flat {f}, {num} {street}" if is_flat else f"{num} {street}"

    if taken is None or postcodes is None:
        return _obj(
            address(s, int(num), bool(is_flat), int(f))
            for s, num, is_flat, f in zip(streets, number, flat, flat_no, strict=True)
        )
    out: list[str] = []
    for s, pc, num, is_flat, f in zip(streets, postcodes, number, flat, flat_no, strict=True):
        num = int(num)
        # Two households at one address would share one household key.
        while True:
            text = address(s, num, bool(is_flat), int(f))
            key = (pc, normalise_address(text))
            if key not in taken:
                break
            num += 1
        taken.add(key)
        out.append(text)
    return _obj(out)


def _lived_in(pop: _Population, present: BoolArray) -> set[tuple[str, str]]:
    """The (postcode, normalised address) pairs of the people present."""
    pairs = set(zip(pop.postcode[present].tolist(), pop.address[present].tolist(), strict=True))
    return {(pc, normalise_address(a)) for pc, a in pairs}


def _coverage(pop: _Population, rng: np.random.Generator) -> dict[str, IntArray]:
    """Indices of the people each department holds a record for."""
    n = len(pop.age)
    u = rng.random((4, n))
    adult = pop.age >= _MIN_ADULT_AGE
    youth = (pop.age >= 10) & ~adult
    justice_p = np.where(
        adult,
        np.where(pop.male, _JUSTICE_ADULT[True], _JUSTICE_ADULT[False]),
        np.where(youth, np.where(pop.male, _JUSTICE_YOUTH[True], _JUSTICE_YOUTH[False]), 0.0),
    )
    school_age = (pop.age >= 4) & (pop.age <= 17)
    return {
        "education": np.flatnonzero(school_age & (u[0] < _COVERAGE_EDUCATION)),
        "health": np.flatnonzero(u[1] < _COVERAGE_HEALTH),
        "justice": np.flatnonzero(u[2] < justice_p),
        "immigration": np.flatnonzero(~pop.british & (u[3] < _COVERAGE_IMMIGRATION)),
    }


def _department_frame(
    dept: str,
    idx: IntArray,
    rng: np.random.Generator,
    pop: _Population,
    pools: _Pools,
    attributes: dict[str, StrArray] | None = None,
) -> tuple[pd.DataFrame, StrArray]:
    """One department's rows for people ``idx`` in record-id order, and the ids in ``idx`` order.

    ``attributes`` (local_authority aside) replaces the snapshot draw of
    :func:`_attributes`, as the multi-year generator does.
    """
    columns: dict[str, object] = dict(_recorded_identity(dept, idx, rng, pop, pools))
    columns["local_authority"] = _pick(departments.LOCAL_AUTHORITIES, pop.la[idx])
    columns.update(_attributes(dept, idx, rng, pop) if attributes is None else attributes)

    # Random numbers from a space ten times the file, so ids say nothing about person order.
    space = max(10**6, 10 * len(idx))
    numbers = rng.choice(space, size=len(idx), replace=False)
    width = len(str(space - 1))
    ids = _obj(f"{_ID_PREFIX[dept]}-{k:0{width}d}" for k in numbers.tolist())
    columns["record_id"] = ids

    # Rows in record-id order, as an extract would be; ids are fixed width so this
    # string sort is numeric, and it shuffles away any trace of person order.
    frame = pd.DataFrame({c: columns[c] for c in departments.columns(dept)})
    frame = frame.sort_values("record_id", kind="stable", ignore_index=True)
    return frame, ids


def _recorded_identity(
    dept: str, idx: IntArray, rng: np.random.Generator, pop: _Population, pools: _Pools
) -> dict[str, StrArray]:
    """Identity columns as ``dept`` recorded them, recording errors included."""
    n = len(idx)
    first = pop.first[idx].copy()
    last = pop.last[idx].copy()
    male = pop.male[idx]
    year = pop.dob_year[idx].copy()
    month = pop.dob_month[idx].copy()
    day = pop.dob_day[idx].copy()
    postcode = pop.postcode[idx].copy()
    address = pop.address[idx].copy()

    for i in np.flatnonzero(rng.random(n) < _P_NICKNAME):
        options = pools.variants.get((first[i], bool(male[i])))
        if options:
            first[i] = options[int(rng.integers(len(options)))]

    typo = np.flatnonzero(rng.random(n) < _P_TYPO)
    in_first = rng.random(len(typo)) < 0.5
    ops = rng.integers(0, 4, size=len(typo))
    where = rng.random(len(typo))
    letters = rng.integers(0, len(_LETTERS), size=len(typo))
    for i, f, op, u, letter in zip(typo, in_first, ops, where, letters, strict=True):
        target = first if f else last
        target[i] = _typo(target[i], int(op), float(u), _LETTERS[letter])

    changed = np.flatnonzero(rng.random(n) < _P_SURNAME_CHANGE)
    others = pools.last[0][rng.integers(0, len(pools.last[0]), size=len(changed))]
    hyphenate = rng.random(len(changed)) < 0.5
    for i, other, hy in zip(changed, others, hyphenate, strict=True):
        last[i] = f"{last[i]}-{other}" if hy else other

    swap = (rng.random(n) < _P_DAY_MONTH_SWAP) & (day <= 12)
    day[swap], month[swap] = month[swap], day[swap]

    moved = np.flatnonzero(rng.random(n) < _P_MOVED)
    street = rng.integers(0, len(pools.street_names), size=len(moved))
    postcode[moved] = pools.street_postcodes[street]
    address[moved] = _addresses(rng, pools.street_names[street])

    _add_noise(rng, first, last, address)

    dob = _format_dates(dept, year, month, day)
    dob[rng.random(n) < _P_MISSING_DOB] = ""
    postcode[rng.random(n) < _P_MISSING_POSTCODE] = ""
    labels = ("Female", "Male") if dept == "health" else ("F", "M")
    sex = np.where(male, labels[1], labels[0]).astype(object)
    sex[rng.random(n) < _P_MISSING_SEX] = ""
    return {
        "first_name": first,
        "last_name": last,
        "date_of_birth": dob,
        "sex": sex,
        "postcode": postcode,
        "address": address,
    }


def _typo(name: str, op: int, u: float, letter: str) -> str:
    """``name`` with one keying error: 0 substitution, 1 deletion, 2 insertion, 3 transposition.

    ``u`` in [0, 1) picks the position; the first letter is left alone, as people
    rarely mistype it, and the result is never shorter than two characters.
    """
    n = len(name)
    if op == 3 and n >= 3:
        i = 1 + int(u * (n - 2))
        if name[i] != name[i + 1]:
            return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        op = 0
    if op == 1 and n > 2:
        i = 1 + int(u * (n - 1))
        return name[:i] + name[i + 1 :]
    if op == 0 and n >= 2:
        i = 1 + int(u * (n - 1))
        if name[i].lower() == letter:
            letter = _LETTERS[(_LETTERS.index(letter) + 1) % len(_LETTERS)]
        return name[:i] + letter + name[i + 1 :]
    i = 1 + int(u * n)
    return name[:i] + letter + name[i:]


def _add_noise(
    rng: np.random.Generator, first: StrArray, last: StrArray, address: StrArray
) -> None:
    """Case, whitespace, punctuation and abbreviation noise, in place."""
    n = len(first)
    upper = np.flatnonzero(rng.random(n) < _P_UPPER_SURNAME)
    last[upper] = [s.upper() for s in last[upper]]
    recase = np.flatnonzero(rng.random(n) < _P_FIRST_CASE)
    first[recase] = [s.upper() if len(s) % 2 else s.lower() for s in first[recase]]

    punctuated = np.fromiter(("'" in s or "-" in s for s in last), dtype=np.bool_, count=n)
    strip = np.flatnonzero(punctuated & (rng.random(n) < _P_STRIP_PUNCTUATION))
    as_space = rng.random(len(strip)) < 0.5
    last[strip] = [
        s.replace("'", "").replace("-", " " if sp else "")
        for s, sp in zip(last[strip], as_space, strict=True)
    ]

    spaced = np.flatnonzero(rng.random(n) < _P_EXTRA_SPACE)
    field = rng.integers(0, 3, size=len(spaced))
    for i, f in zip(spaced, field, strict=True):
        if f == 0:
            first[i] = f"{first[i]} "
        elif f == 1:
            last[i] = f" {last[i]}"
        else:
            address[i] = address[i].replace(" ", "  ", 1)

    for i in np.flatnonzero(rng.random(n) < _P_ABBREVIATE):
        head, _, suffix = address[i].rpartition(" ")
        if suffix in _ABBREVIATIONS:
            address[i] = f"{head} {_ABBREVIATIONS[suffix]}"


def _format_dates(dept: str, year: IntArray, month: IntArray, day: IntArray) -> StrArray:
    """Dates in ``dept``'s own format (see the module's date format table)."""
    ymd = zip(year.tolist(), month.tolist(), day.tolist(), strict=True)
    if dept == "education":  # %Y-%m-%d
        return _obj(f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in ymd)
    if dept == "health":  # %d/%m/%Y
        return _obj(f"{d:02d}/{m:02d}/{y:04d}" for y, m, d in ymd)
    if dept == "justice":  # %d %b %Y
        return _obj(f"{d:02d} {_MONTH_ABBR[m - 1]} {y:04d}" for y, m, d in ymd)
    if dept == "immigration":  # %Y%m%d
        return _obj(f"{y:04d}{m:02d}{d:02d}" for y, m, d in ymd)
    raise InvalidRequest(f"unknown department {dept!r}")


def _attributes(
    dept: str, idx: IntArray, rng: np.random.Generator, pop: _Population
) -> dict[str, StrArray]:
    """Department-specific attribute columns (local_authority aside) for people ``idx``."""
    n = len(idx)
    if dept == "education":
        fsm = pop.household_fsm[idx]
        sen = rng.choice(3, size=n, p=[0.85, 0.12, 0.03])
        # A latent score with mild penalties for FSM and SEN; cut at +-0.67 so the
        # bands are about 25/50/25 before the penalties.
        score = rng.normal(size=n) - 0.45 * fsm - np.array([0.0, 0.5, 1.2])[sen]
        band = np.digitize(score, [-0.67, 0.67])
        # Gamma(1.2, 0.04) has mean ~0.05 and a long right tail of persistent absence.
        absence = rng.gamma(1.2, 0.04, size=n) + 0.015 * fsm
        absence = np.clip(absence, 0.0, 1.0)
        return _education_columns(pop.age[idx], band, sen, fsm, absence)
    if dept == "health":
        no_leave = ~pop.british[idx] & (pop.status[idx] == departments.STATUSES.index("no_leave"))
        gp = rng.random(n) < np.where(no_leave, 0.70, 0.955)
        mental = rng.random(n) < 0.05
        return {
            "gp_registered": _pick(departments.YES_NO, np.where(gp, 0, 1)),
            "mental_health_service": _pick(departments.YES_NO, np.where(mental, 0, 1)),
        }
    if dept == "justice":
        sentence = rng.choice(3, size=n, p=[0.30, 0.45, 0.25])
        return {"sentence": _pick(("custody", "probation", "community"), sentence)}
    if dept == "immigration":
        return {"immigration_status": _pick(departments.STATUSES, pop.status[idx])}
    raise InvalidRequest(f"unknown department {dept!r}")


def _ground_truth(pop: _Population, ids: dict[str, StrArray]) -> pd.DataFrame:
    """One row per person: true identity, household, age and each department's record id."""
    n = len(pop.age)
    width = max(6, len(str(n)))
    columns: dict[str, object] = {
        "person_id": _obj(f"P{i:0{width}d}" for i in range(1, n + 1)),
        "household_id": _obj(f"H{h:0{width}d}" for h in (pop.household + 1).tolist()),
        "first_name": pop.first,
        "last_name": pop.last,
        "date_of_birth": _format_dates("education", pop.dob_year, pop.dob_month, pop.dob_day),
        "sex": np.where(pop.male, "M", "F").astype(object),
        "postcode": pop.postcode,
        "address": pop.address,
        "local_authority": _pick(departments.LOCAL_AUTHORITIES, pop.la),
        "age": pop.age,
    }
    for dept, by_person in ids.items():
        columns[f"{dept}_id"] = by_person
    return pd.DataFrame(columns)


# -- several yearly snapshots -------------------------------------------------------
#
# The multi-year generator builds the population at the first snapshot's date
# and moves it forward a year at a time: everyone ages, households move (some
# to another local authority), immigration statuses change and settled people
# naturalise, free-school-meal eligibility changes, some adults change surname,
# children are born, people die or leave the area and new households arrive.
# Each snapshot is then seen by the departments exactly as a single snapshot
# is (own formats, own recording errors, fresh record ids), so a person's
# records in two years share no identifier: only the evaluation files carry a
# stable person id.

# Snapshot extract date in each year: the same day and month as REFERENCE_DATE.
_P_MOVE = 0.09  # of households per year
_P_MOVE_OTHER_LA = 0.35  # of moves
_P_LEAVE = {True: 0.012, False: 0.045}  # households leaving the area, by British
_P_DEATH_70 = 0.035  # per year, people aged 70 or more
_P_BIRTH = 0.055  # per woman aged 18-45 per year
_P_NATURALISE = 0.06  # settled people per year (they leave immigration's records)
_P_FSM_CHANGE = 0.08  # households per year
_P_MARRIAGE_NAME = 0.004  # adult women per year taking another surname
_P_CHURN = 0.01  # records missing from one year's extract
_ARRIVALS = 0.025  # people arriving per year, as a share of the population
_ARRIVAL_NON_BRITISH = 0.5
_ARRIVAL_STATUS_PROBS: dict[str, float] = {
    "settled": 0.10,
    "limited_leave": 0.30,
    "limited_leave_nrpf": 0.15,
    "asylum_seeker": 0.30,
    "no_leave": 0.15,
}
# Yearly status transitions, rows and columns in departments.STATUSES order:
# settled, limited_leave, limited_leave_nrpf, asylum_seeker, no_leave.
_STATUS_TRANSITIONS = np.array(
    [
        [1.00, 0.00, 0.00, 0.00, 0.00],
        [0.12, 0.83, 0.03, 0.00, 0.02],
        [0.04, 0.10, 0.83, 0.00, 0.03],
        [0.00, 0.30, 0.00, 0.55, 0.15],
        [0.00, 0.06, 0.06, 0.04, 0.84],
    ]
)
_PRECARIOUS = tuple(
    departments.STATUSES.index(s) for s in ("limited_leave_nrpf", "asylum_seeker", "no_leave")
)


@dataclass(frozen=True, slots=True)
class PeriodsSummary:
    """What :func:`generate_periods` wrote."""

    people: int  # everyone present in at least one snapshot
    years: tuple[int, ...]
    records: dict[str, int]  # file stem (party) -> rows written
    out_dir: Path

    def __post_init__(self) -> None:
        if self.people < 1 or not self.years:
            raise InvalidRequest("a multi-year population needs people and years")


@dataclass(frozen=True, slots=True)
class _Latent:
    """Per-person facts that persist across years (never written anywhere)."""

    coverage: FloatArray  # (4, people): below a department's coverage rate = known to it
    ability: FloatArray  # latent attainment score
    absence: FloatArray  # persistent part of the absence rate
    sen: IntArray  # 0 none, 1 support, 2 ehcp


def snapshot_date(year: int) -> date:
    """The extract date of the ``year`` snapshot (REFERENCE_DATE's day and month)."""
    return REFERENCE_DATE.replace(year=year)


def period_party(department: str, year: int) -> str:
    """The party (and file stem) of ``department``'s ``year`` snapshot."""
    return f"{department}-{year}"


def generate_periods(
    people: int,
    seed: int,
    out_dir: Path,
    *,
    years: tuple[int, ...] = (2024, 2025, 2026),
    period_departments: tuple[str, ...] = ("education", "immigration"),
    progress: bool = False,
) -> PeriodsSummary:
    """Write yearly snapshots of one evolving population, with ground truth across years.

    ``people`` (>= 1) is the population at the first snapshot. For each
    department in ``period_departments`` and each year it writes
    ``<department>-<year>.csv`` (see :func:`period_party`); every other
    department gets ``<department>.csv``, its snapshot of the last year. Each
    snapshot is taken at :func:`snapshot_date` of its year. Two evaluation files
    hold the truth: ``ground_truth.csv``, one row per person present in any
    year (identity as last seen, stable ``person_id``, one ``<file>_id``
    column per file written), and ``ground_truth_periods.csv``, one row per
    person and year present (household, address, local authority, age,
    British or not, true immigration status). The same ``seed`` gives
    byte-identical files.

    Raises :class:`headcount.errors.InvalidRequest` for ``people`` < 1, no
    years, years not strictly increasing, or an unknown department.
    """
    if people < 1:
        raise InvalidRequest(f"people must be at least 1, got {people}")
    if not years or any(b <= a for a, b in itertools.pairwise(years)):
        raise InvalidRequest(f"years must be strictly increasing, got {list(years)}")
    unknown = [d for d in period_departments if d not in departments.DEPARTMENTS]
    if unknown:
        raise InvalidRequest(f"unknown department(s) {unknown}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    household_rng, person_rng, latent_rng, evolve_rng, churn_rng, *dept_rngs = (
        np.random.default_rng(s)
        for s in np.random.SeedSequence(seed).spawn(5 + len(years) * len(departments.DEPARTMENTS))
    )
    files = [
        (year, dept)
        for year in years
        for dept in departments.DEPARTMENTS
        if dept in period_departments or year == years[-1]
    ]
    with tqdm(
        total=len(years) + len(files), desc="synth", file=sys.stderr, disable=not progress
    ) as bar:
        kind, n_adults, size = _draw_households(people, household_rng)
        pools = _build_pools(seed, max(20, len(size) // _HOUSEHOLDS_PER_STREET))
        pop = _build_population(
            kind, n_adults, size, person_rng, pools, reference=snapshot_date(years[0])
        )
        latent = _draw_latent(len(pop.age), latent_rng)
        present = np.ones(len(pop.age), dtype=np.bool_)
        snapshots: list[tuple[_Population, BoolArray]] = [(pop, present)]
        bar.update()
        for year in years[1:]:
            pop, present, n_new = _evolve(pop, present, evolve_rng, pools, snapshot_date(year))
            latent = _extend_latent(latent, _draw_latent(n_new, latent_rng))
            snapshots.append((pop, present))
            bar.update()

        n = len(pop.age)
        ids: dict[str, StrArray] = {}
        records: dict[str, int] = {}
        for (year, dept), rng in zip(files, dept_rngs, strict=False):
            k = years.index(year)
            snap, here = snapshots[k]
            snap = _pad(snap, n)
            here = np.concatenate([here, np.zeros(n - len(here), dtype=np.bool_)])
            idx = _period_coverage(dept, snap, here, latent, churn_rng)
            frame, rec_ids = _department_frame(
                dept, idx, rng, snap, pools, _period_attributes(dept, idx, rng, snap, latent)
            )
            stem = period_party(dept, year) if dept in period_departments else dept
            by_person = np.full(n, "", dtype=object)
            by_person[idx] = rec_ids
            ids[stem] = by_person
            _write_csv(frame, out_dir / f"{stem}.csv")
            records[stem] = len(frame)
            bar.update()

        everyone, long = _period_truth(snapshots, years, n)
        wide = _ground_truth(everyone, {})
        for stem, by_person in ids.items():
            wide[f"{stem}_id"] = by_person
        _write_csv(wide, out_dir / "ground_truth.csv")
        _write_csv(long, out_dir / "ground_truth_periods.csv")

    log.info("synthetic population over %d years: %d people", len(years), n)
    return PeriodsSummary(people=n, years=tuple(years), records=records, out_dir=out_dir)


def _draw_latent(n: int, rng: np.random.Generator) -> _Latent:
    return _Latent(
        coverage=rng.random((4, n)),
        ability=rng.normal(size=n),
        # Gamma(1.2, 0.035): the persistent part of a long-tailed absence rate.
        absence=rng.gamma(1.2, 0.035, size=n),
        sen=rng.choice(3, size=n, p=[0.85, 0.12, 0.03]).astype(np.int64),
    )


def _extend_latent(a: _Latent, b: _Latent) -> _Latent:
    return _Latent(
        coverage=np.concatenate([a.coverage, b.coverage], axis=1),
        ability=np.concatenate([a.ability, b.ability]),
        absence=np.concatenate([a.absence, b.absence]),
        sen=np.concatenate([a.sen, b.sen]),
    )


_FIELDS = (
    "household",
    "first",
    "last",
    "male",
    "age",
    "dob_year",
    "dob_month",
    "dob_day",
    "postcode",
    "address",
    "la",
    "british",
    "status",
    "household_fsm",
    "locale",
)


def _concat(a: _Population, b: _Population) -> _Population:
    return _Population(**{f: np.concatenate([getattr(a, f), getattr(b, f)]) for f in _FIELDS})


def _take(pop: _Population, idx: IntArray) -> _Population:
    return _Population(**{f: getattr(pop, f)[idx] for f in _FIELDS})


def _pad(pop: _Population, n: int) -> _Population:
    """``pop`` extended to ``n`` people by copies of its first (people not yet born)."""
    extra = n - len(pop.age)
    if extra == 0:
        return pop
    return _concat(pop, _take(pop, np.zeros(extra, dtype=np.int64)))


def _age_at(pop: _Population, day: date) -> IntArray:
    """Whole years at ``day`` from each person's true date of birth."""
    later = (pop.dob_month > day.month) | ((pop.dob_month == day.month) & (pop.dob_day > day.day))
    out: IntArray = (day.year - pop.dob_year - later).astype(np.int64)
    return out


def _evolve(
    pop: _Population, present: BoolArray, rng: np.random.Generator, pools: _Pools, day: date
) -> tuple[_Population, BoolArray, int]:
    """One year on, to ``day``: the new population (everyone ever, new people
    appended), who is present, and how many people were appended."""
    n = len(pop.age)
    present = present.copy()
    household = pop.household
    n_hh = int(household.max()) + 1
    age = _age_at(pop, day)

    # Leaving: whole households leave the area; some old people die.
    hh_british = np.zeros(n_hh, dtype=np.bool_)
    hh_british[household] = pop.british
    leave_p = np.where(hh_british, _P_LEAVE[True], _P_LEAVE[False])
    hh_leaves = rng.random(n_hh) < leave_p
    present &= ~hh_leaves[household]
    present &= ~((age >= 70) & (rng.random(n) < _P_DEATH_70))

    # Moves: a new street and number; sometimes another local authority.
    moves = np.flatnonzero(rng.random(n_hh) < _P_MOVE)
    street = rng.integers(0, len(pools.street_names), size=len(moves))
    hh_postcode = np.full(n_hh, "", dtype=object)
    hh_address = np.full(n_hh, "", dtype=object)
    hh_postcode[moves] = pools.street_postcodes[street]
    taken = _lived_in(pop, present)
    hh_address[moves] = _addresses(rng, pools.street_names[street], hh_postcode[moves], taken)
    hh_la = np.full(n_hh, -1, dtype=np.int64)
    other = moves[rng.random(len(moves)) < _P_MOVE_OTHER_LA]
    la_weights = [_LA_WEIGHTS[la] for la in departments.LOCAL_AUTHORITIES]
    column = np.where(hh_british[other], 0, 1)
    draws = np.stack(
        [
            rng.choice(len(la_weights), size=len(other), p=_probs(w[c] for w in la_weights))
            for c in (0, 1)
        ]
    )
    hh_la[other] = draws[column, np.arange(len(other))]
    moved = hh_address[household] != ""
    postcode = np.where(moved, hh_postcode[household], pop.postcode)
    address = np.where(moved, hh_address[household], pop.address)
    la = np.where(hh_la[household] >= 0, hh_la[household], pop.la).astype(np.int64)

    # Status changes, mostly together as a household.
    hh_u = rng.random(n_hh)
    u = np.where(rng.random(n) < _STATUS_SHARED, hh_u[household], rng.random(n))
    cumulative = np.cumsum(_STATUS_TRANSITIONS, axis=1)[pop.status]
    new_status = np.minimum((u[:, None] >= cumulative).sum(axis=1), len(departments.STATUSES) - 1)
    status = np.where(pop.british, pop.status, new_status).astype(np.int64)
    settled = departments.STATUSES.index("settled")
    naturalise = (
        ~pop.british & (pop.status == settled) & (rng.random(n_hh) < _P_NATURALISE)[household]
    )
    british = pop.british | naturalise

    # Free school meals change per household; some adult women take another surname.
    household_fsm = pop.household_fsm ^ (rng.random(n_hh) < _P_FSM_CHANGE)[household]
    last = pop.last.copy()
    renamed = np.flatnonzero(present & (age >= 20) & ~pop.male & (rng.random(n) < _P_MARRIAGE_NAME))
    for i in renamed:
        pool = pools.last[int(pop.locale[i])]
        last[i] = pool[int(rng.integers(len(pool)))]

    aged = _Population(
        household=household,
        first=pop.first,
        last=last,
        male=pop.male,
        age=age,
        dob_year=pop.dob_year,
        dob_month=pop.dob_month,
        dob_day=pop.dob_day,
        postcode=postcode,
        address=address,
        la=la,
        british=british,
        status=status,
        household_fsm=household_fsm,
        locale=pop.locale,
    )
    births = _births(aged, present, rng, pools, day)
    arrivals = _arrivals(aged, present, rng, pools, day, n_hh, taken)
    new = _concat(births, arrivals)
    everyone = _concat(aged, new)
    n_new = len(new.age)
    return everyone, np.concatenate([present, np.ones(n_new, dtype=np.bool_)]), n_new


def _births(
    pop: _Population, present: BoolArray, rng: np.random.Generator, pools: _Pools, day: date
) -> _Population:
    """Babies born in the year before ``day`` to women present aged 18-45."""
    mothers = np.flatnonzero(
        present
        & ~pop.male
        & (pop.age >= 18)
        & (pop.age <= 45)
        & (rng.random(len(pop.age)) < _P_BIRTH)
    )
    k = len(mothers)
    male = rng.random(k) < 0.51
    first = np.empty(k, dtype=object)
    for j, (m, is_male) in enumerate(zip(mothers, male, strict=True)):
        names = pools.first[int(pop.locale[m])][int(is_male)]
        first[j] = names[int(rng.integers(len(names)))]
    born = np.datetime64(day, "D") - rng.integers(0, 365, size=k).astype("timedelta64[D]")
    year = born.astype("datetime64[Y]")
    month = born.astype("datetime64[M]")
    settled = departments.STATUSES.index("settled")
    baby = _take(pop, mothers)
    return _Population(
        household=baby.household,
        first=first,
        last=baby.last,
        male=male.astype(np.bool_),
        age=np.zeros(k, dtype=np.int64),
        dob_year=(year.astype(np.int64) + 1970).astype(np.int64),
        dob_month=(month - year.astype("datetime64[M]")).astype(np.int64) + 1,
        dob_day=(born - month.astype("datetime64[D]")).astype(np.int64) + 1,
        postcode=baby.postcode,
        address=baby.address,
        la=baby.la,
        # A child born here to a settled parent is British.
        british=baby.british | (baby.status == settled),
        status=baby.status,
        household_fsm=baby.household_fsm,
        locale=baby.locale,
    )


def _arrivals(
    pop: _Population,
    present: BoolArray,
    rng: np.random.Generator,
    pools: _Pools,
    day: date,
    first_household: int,
    taken: set[tuple[str, str]],
) -> _Population:
    """New households moving into the area, half of them from abroad, each at an
    address not in ``taken``."""
    people = max(1, round(_ARRIVALS * int(present.sum())))
    kind, n_adults, size = _draw_households(people, rng)
    new = _build_population(
        kind,
        n_adults,
        size,
        rng,
        pools,
        reference=day,
        non_british_share=_ARRIVAL_NON_BRITISH,
        status_probs=_ARRIVAL_STATUS_PROBS,
        taken=taken,
    )
    return _Population(
        **{f: getattr(new, f) for f in _FIELDS if f != "household"},
        household=new.household + first_household,
    )


def _period_coverage(
    dept: str, pop: _Population, present: BoolArray, latent: _Latent, rng: np.random.Generator
) -> IntArray:
    """Indices of the people ``dept`` holds a record for in this snapshot.

    Whether a department knows someone persists across years (one draw per
    person), with a little churn from year to year.
    """
    n = len(pop.age)
    kept = present & (rng.random(n) >= _P_CHURN)
    u = latent.coverage
    if dept == "education":
        return np.flatnonzero(
            kept & (pop.age >= 4) & (pop.age <= 17) & (u[0] < _COVERAGE_EDUCATION)
        )
    if dept == "health":
        return np.flatnonzero(kept & (u[1] < _COVERAGE_HEALTH))
    if dept == "justice":
        adult = pop.age >= _MIN_ADULT_AGE
        youth = (pop.age >= 10) & ~adult
        p = np.where(
            adult,
            np.where(pop.male, _JUSTICE_ADULT[True], _JUSTICE_ADULT[False]),
            np.where(youth, np.where(pop.male, _JUSTICE_YOUTH[True], _JUSTICE_YOUTH[False]), 0.0),
        )
        return np.flatnonzero(kept & (u[2] < p))
    if dept == "immigration":
        return np.flatnonzero(kept & ~pop.british & (u[3] < _COVERAGE_IMMIGRATION))
    raise InvalidRequest(f"unknown department {dept!r}")


def _period_attributes(
    dept: str, idx: IntArray, rng: np.random.Generator, pop: _Population, latent: _Latent
) -> dict[str, StrArray]:
    """Attribute columns of one snapshot, persistent where people are (attainment,
    special needs, a share of absence), and the snapshot draw elsewhere."""
    if dept != "education":
        return _attributes(dept, idx, rng, pop)
    n = len(idx)
    fsm = pop.household_fsm[idx]
    sen = latent.sen[idx]
    precarious = ~pop.british[idx] & np.isin(pop.status[idx], _PRECARIOUS)
    score = (
        0.85 * latent.ability[idx]
        + 0.5 * rng.normal(size=n)
        - 0.45 * fsm
        - np.array([0.0, 0.5, 1.2])[sen]
    )
    band = np.digitize(score, [-0.67, 0.67])
    # Persistent absence plus this year's, higher with free school meals and
    # for children whose family's status is precarious that year.
    absence = latent.absence[idx] + rng.gamma(1.2, 0.012, size=n) + 0.015 * fsm + 0.02 * precarious
    absence = np.clip(absence, 0.0, 1.0)
    return _education_columns(pop.age[idx], band, sen, fsm, absence)


def _education_columns(
    age: np.ndarray, band: np.ndarray, sen: np.ndarray, fsm: np.ndarray, absence: np.ndarray
) -> dict[str, StrArray]:
    """The education file's attribute columns from drawn bands, SEN, FSM and absence."""
    return {
        "year_group": _obj(str(a) for a in np.clip(age - 4, 0, 13)),
        "attainment_band": _pick(("below", "expected", "above"), band),
        "sen": _pick(("none", "support", "ehcp"), sen),
        "fsm": _pick(departments.YES_NO, np.where(fsm, 0, 1)),
        "absence_rate": _obj(f"{a:.3f}" for a in absence),
    }


def _period_truth(
    snapshots: list[tuple[_Population, BoolArray]], years: tuple[int, ...], n: int
) -> tuple[_Population, pd.DataFrame]:
    """Everyone as last seen, and one row per person and year present."""
    last_seen = np.zeros(n, dtype=np.int64)
    rows: list[pd.DataFrame] = []
    width = max(6, len(str(n)))
    for k, (pop, here) in enumerate(snapshots):
        idx = np.flatnonzero(here)
        last_seen[idx] = k
        rows.append(
            pd.DataFrame(
                {
                    "person_id": _obj(f"P{i + 1:0{width}d}" for i in idx.tolist()),
                    "period": str(years[k]),
                    "household_id": _obj(
                        f"H{h:0{width}d}" for h in (pop.household[idx] + 1).tolist()
                    ),
                    "postcode": pop.postcode[idx],
                    "address": pop.address[idx],
                    "local_authority": _pick(departments.LOCAL_AUTHORITIES, pop.la[idx]),
                    "age": pop.age[idx],
                    "british": _pick(departments.YES_NO, np.where(pop.british[idx], 0, 1)),
                    "immigration_status": np.where(
                        pop.british[idx], "", _pick(departments.STATUSES, pop.status[idx])
                    ).astype(object),
                }
            )
        )
    long = pd.concat(rows, ignore_index=True)
    long = long.sort_values(["person_id", "period"], kind="stable", ignore_index=True)
    padded = [_pad(pop, n) for pop, _ in snapshots]
    everyone = _Population(
        **{f: np.stack([getattr(p, f) for p in padded])[last_seen, np.arange(n)] for f in _FIELDS}
    )
    return everyone, long


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 CSV with Unix line endings, so output bytes do not depend on the platform."""
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


def _pick(values: tuple[str, ...], codes: npt.NDArray[np.integer]) -> StrArray:
    """``values[code]`` for every code."""
    out: StrArray = np.asarray(values, dtype=object)[codes]
    return out


def _probs(weights: Iterable[float]) -> FloatArray:
    """Weights normalised to sum to 1."""
    w = np.fromiter(weights, dtype=np.float64)
    out: FloatArray = w / w.sum()
    return out


def _obj(values: Iterable[object]) -> StrArray:
    """A 1-d object array from any iterable (kept 1-d even for tuple items)."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
