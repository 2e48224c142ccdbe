"""True identities: households, ages, sexes, names, dates of birth and addresses.

Names come from pools drawn once per locale with a seeded Faker and are then
sampled with numpy, which keeps 100,000 people to a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from faker import Faker
from nicknames import NickNamer

from headcount import departments
from headcount.linkage.address import normalise_address
from headcount.synth.common import (
    REFERENCE_DATE,
    BoolArray,
    IntArray,
    StrArray,
    _obj,
    _probs,
)

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
