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

Modules: `population` (true identities), `records` (what each department
records), `snapshot` (`generate_population`), `evolve` (a year on) and
`periods` (`generate_periods`); `common` holds what they share. Names with a
leading underscore are shared between these modules only.
"""

from headcount.synth.common import REFERENCE_DATE
from headcount.synth.periods import PeriodsSummary, generate_periods, period_party, snapshot_date
from headcount.synth.snapshot import SynthSummary, generate_population

__all__ = [
    "REFERENCE_DATE",
    "PeriodsSummary",
    "SynthSummary",
    "generate_periods",
    "generate_population",
    "period_party",
    "snapshot_date",
]
