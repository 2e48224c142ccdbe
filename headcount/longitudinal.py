"""Children across time: period snapshots as parties, transition and cohort tables.

A department that supplies several yearly extracts takes part once per
extract: ``immigration-2024``, ``immigration-2025`` and ``immigration-2026``
are three parties of one federation, each with its own node state, keys,
budget and fresh tokens per epoch, all following the immigration file
contract (``PartyConfig.department``). Within one linkage epoch the engine
links them like any other parties, so a cluster joins one person's records
across years and departments (at most one record per party); nothing links
one epoch to another.

A **transition table** is then an ordinary two-way query: the population is
the earlier snapshot, grouped by its own status, and the grouping party the
later snapshot (:data:`TRANSITION_QUERY`). A **cohort outcome** counts the
later snapshot's records by the earlier snapshot's status and averages a
measure over them (:data:`COHORT_QUERY`). Both run through the same hop
chain, noise, small-number rule and budget as every other query.

:func:`run_longitudinal_demo` builds such a federation (in this process, real
servers over mutual TLS on loopback), links it and releases both tables.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator import server as coordinator_server
from headcount import rpc
from headcount.client import Client, Release
from headcount.domain.query import QuerySpec
from headcount.federation import InitOptions, init_federation
from headcount.local import LocalFederation
from headcount.synth import PeriodsSummary, generate_periods, snapshot_date
from party_node import server as node_server

YEARS: tuple[int, ...] = (2024, 2025, 2026)
PERIOD_DEPARTMENTS: tuple[str, ...] = ("education", "immigration")
PROJECT = "children-across-time-2026"
PROJECT_TITLE = "Children across time: immigration status and school outcomes"
PROJECT_PURPOSE = (
    "Follow, in aggregate only, how immigration status changes over the years and how "
    "children whose families had no leave to remain are doing at school later on."
)

TRANSITION_QUERY = QuerySpec(
    title="People known to immigration in 2024: status in 2024 by status in 2026",
    purpose="Measure how immigration status changes over two years, to plan support for "
    "families whose leave to remain is insecure for long periods.",
    population_party="immigration-2024",
    population_group_by="immigration_status",
    group_party="immigration-2026",
    group_by="immigration_status",
    project_id=PROJECT,
)

COHORT_QUERY = QuerySpec(
    title="Absence at school in 2026, by the child's immigration status in 2024",
    purpose="Compare school absence two years on for children whose families had no leave "
    "to remain with other children, to target attendance support.",
    population_party="education-2026",
    group_party="immigration-2024",
    group_by="immigration_status",
    measure="mean",
    measure_attribute="absence_rate",
    project_id=PROJECT,
)

# Each equals a file in docs/queries/ (a test checks).
LONGITUDINAL_QUERIES: tuple[tuple[str, QuerySpec], ...] = (
    ("transition-immigration-status.yaml", TRANSITION_QUERY),
    ("cohort-absence-no-leave.yaml", COHORT_QUERY),
)


def period_options(years: tuple[int, ...] = YEARS, **overrides: Any) -> InitOptions:
    """Federation options with a party per year for each period department.

    ``overrides`` set any other ``InitOptions`` field (key size, output policy).
    The federation's reference date is the last snapshot's extract date; each
    period party's is its own year's.
    """
    overrides.setdefault("reference_date", snapshot_date(years[-1]))
    return InitOptions(
        periods=tuple(str(y) for y in years), period_departments=PERIOD_DEPARTMENTS, **overrides
    )


def write_period_data(
    directory: Path, people: int, seed: int, years: tuple[int, ...] = YEARS
) -> PeriodsSummary:
    """Yearly snapshots into ``directory/data`` (one file per party of
    :func:`period_options`) and the ground truth into ``directory/evaluation``,
    where no node reads it."""
    data = directory / "data"
    summary = generate_periods(
        people, seed, data, years=years, period_departments=PERIOD_DEPARTMENTS
    )
    evaluation = directory / "evaluation"
    evaluation.mkdir(exist_ok=True)
    for name in ("ground_truth.csv", "ground_truth_periods.csv"):
        shutil.move(data / name, evaluation / name)
    return summary


def start_period_federation(
    directory: Path,
    *,
    people: int,
    seed: int,
    years: tuple[int, ...] = YEARS,
    paillier_bits: int = 1024,
    node_interceptors: dict[str, Sequence[rpc.ServerInterceptor]] | None = None,
    coordinator_interceptors: Sequence[rpc.ClientInterceptor] = (),
    **options: Any,
) -> LocalFederation:
    """Create a federation with period parties and its data under ``directory``,
    and start every server in this process (as ``start_local_federation`` does)."""
    cfg = init_federation(
        directory,
        period_options(
            years, paillier_bits=paillier_bits, insecure_test_keys=paillier_bits < 2048, **options
        ),
    )
    write_period_data(directory, people, seed, years)
    interceptors = node_interceptors or {}
    nodes = {
        p: node_server.start(cfg, p, interceptors=interceptors.get(p, ())) for p in cfg.party_names
    }
    coord = coordinator_server.start(cfg, node_interceptors=coordinator_interceptors)
    return LocalFederation(
        directory, cfg, nodes, coord, directory / "evaluation" / "ground_truth.csv"
    )


def approve_project(fed: LocalFederation, expires: dt.date | None = None) -> None:
    """Propose :data:`PROJECT` as the federation's first analyst and have every
    department's steward approve it (a demo stands in for all of them)."""
    fed.approve_project(
        PROJECT,
        PROJECT_TITLE,
        PROJECT_PURPOSE,
        expires=expires or dt.date.today() + dt.timedelta(days=365),
    )


def run_longitudinal_queries(
    analyst: Client, echo: Callable[[str], None] = lambda _: None
) -> dict[str, Release]:
    """Release the transition table and the cohort outcome; keyed by spec file name."""
    from headcount.demo import format_release  # the demo imports this module

    out: dict[str, Release] = {}
    for name, spec in LONGITUDINAL_QUERIES:
        release = analyst.query(spec)
        out[name] = release
        echo(format_release(release))
    return out


@dataclass
class LongitudinalResult:
    directory: Path
    people: int
    records: dict[str, int] = field(default_factory=dict)  # party -> records linked
    releases: dict[str, Release] = field(default_factory=dict)  # by spec file name
    linkage_s: float = 0.0
    queries_s: float = 0.0


def run_longitudinal_demo(
    directory: Path,
    *,
    people: int = 20_000,
    seed: int = 2026,
    paillier_bits: int = 2048,
    echo: Callable[[str], None] = lambda _: None,
) -> LongitudinalResult:
    """A federation of yearly snapshots under ``directory`` (which must not hold
    one yet), linked in one epoch, releasing a transition table of immigration
    status over 2024-2026 and a cohort outcome. Tables are written as CSV
    under ``directory/releases``; every server is stopped on return."""
    from headcount.demo import link_table

    directory = directory.resolve()
    echo(
        f"children across time: {people} people over {YEARS[0]}-{YEARS[-1]}, "
        f"{' and '.join(PERIOD_DEPARTMENTS)} as yearly parties"
    )
    with start_period_federation(
        directory, people=people, seed=seed, paillier_bits=paillier_bits
    ) as fed:
        with fed.operator() as op:
            op.run_ceremony()
            started = time.monotonic()
            linkage = op.run_linkage()
            linkage_s = time.monotonic() - started
        echo(link_table(linkage.pairs))
        approve_project(fed)
        releases_dir = directory / "releases"
        releases_dir.mkdir(exist_ok=True)
        started = time.monotonic()
        with fed.analyst() as analyst:
            releases = run_longitudinal_queries(analyst, echo)
        queries_s = time.monotonic() - started
        for name, release in releases.items():
            release.frame().to_csv(releases_dir / name.replace(".yaml", ".csv"), index=False)
    return LongitudinalResult(
        directory,
        people,
        records=dict(linkage.records),
        releases=releases,
        linkage_s=linkage_s,
        queries_s=queries_s,
    )
