"""Several yearly snapshots of one evolving population (`generate_periods`).


The multi-year generator builds the population at the first snapshot's date
and moves it forward a year at a time: everyone ages, households move (some
to another local authority), immigration statuses change and settled people
naturalise, free-school-meal eligibility changes, some adults change surname,
children are born, people die or leave the area and new households arrive.
Each snapshot is then seen by the departments exactly as a single snapshot
is (own formats, own recording errors, fresh record ids), so a person's
records in two years share no identifier: only the evaluation files carry a
stable person id.
"""

from __future__ import annotations

import itertools
import logging
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from headcount import departments
from headcount.errors import InvalidRequest
from headcount.synth.common import (
    REFERENCE_DATE,
    BoolArray,
    FloatArray,
    IntArray,
    StrArray,
    _obj,
    _pick,
    _write_csv,
)
from headcount.synth.evolve import _FIELDS, _evolve, _pad
from headcount.synth.population import (
    _HOUSEHOLDS_PER_STREET,
    _MIN_ADULT_AGE,
    _build_pools,
    _build_population,
    _draw_households,
    _Population,
)
from headcount.synth.records import (
    _COVERAGE_EDUCATION,
    _COVERAGE_HEALTH,
    _COVERAGE_IMMIGRATION,
    _JUSTICE_ADULT,
    _JUSTICE_YOUTH,
    _attributes,
    _department_frame,
    _education_columns,
    _ground_truth,
)

log = logging.getLogger(__name__)


_P_CHURN = 0.01  # records missing from one year's extract
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


# Snapshot extract date in each year: the same day and month as REFERENCE_DATE.
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
