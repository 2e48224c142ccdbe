"""One snapshot: a population and what each department records of it (`generate_population`)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from headcount import departments
from headcount.errors import InvalidRequest
from headcount.synth.common import (
    StrArray,
    _write_csv,
)
from headcount.synth.population import (
    _HOUSEHOLDS_PER_STREET,
    _build_pools,
    _build_population,
    _draw_households,
)
from headcount.synth.records import _coverage, _department_frame, _ground_truth

log = logging.getLogger(__name__)


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
