"""What each department records of the people it holds: its own formats, attributes and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headcount import departments
from headcount.errors import InvalidRequest
from headcount.synth.common import (
    IntArray,
    StrArray,
    _obj,
    _pick,
)
from headcount.synth.population import _MIN_ADULT_AGE, _addresses, _Pools, _Population

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
