"""A population one year on: ageing, moves, status changes, births, deaths and arrivals."""

from __future__ import annotations

from datetime import date

import numpy as np

from headcount import departments
from headcount.synth.common import (
    BoolArray,
    IntArray,
    _probs,
)
from headcount.synth.population import (
    _LA_WEIGHTS,
    _STATUS_SHARED,
    _addresses,
    _build_population,
    _draw_households,
    _lived_in,
    _Pools,
    _Population,
)

_P_MOVE = 0.09  # of households per year
_P_MOVE_OTHER_LA = 0.35  # of moves
_P_LEAVE = {True: 0.012, False: 0.045}  # households leaving the area, by British
_P_DEATH_70 = 0.035  # per year, people aged 70 or more
_P_BIRTH = 0.055  # per woman aged 18-45 per year
_P_NATURALISE = 0.06  # settled people per year (they leave immigration's records)
_P_FSM_CHANGE = 0.08  # households per year
_P_MARRIAGE_NAME = 0.004  # adult women per year taking another surname
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
