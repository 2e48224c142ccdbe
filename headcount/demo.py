"""``headcount demo``: a whole federation on this machine, end to end.

Creates a federation (CA, certificates, config), a synthetic population, starts
four party nodes and a coordinator as separate processes on loopback ports,
runs the key ceremony, one linkage epoch and the demo queries, prints the
protected tables and stops every process. Released tables are also written as
CSV under ``<dir>/releases`` and the ground truth is kept apart under
``<dir>/evaluation`` for checking.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from headcount.client import Client, Release
from headcount.config import FederationConfig
from headcount.errors import FailedPrecondition, PeerUnavailable
from headcount.federation import CONFIG_NAME, InitOptions, init_federation
from headcount.query import Predicate, QuerySpec
from headcount.synth import REFERENCE_DATE, generate_population

MARKER = ".headcount-demo"
DEFAULT_PEOPLE = 5_000
READY_TIMEOUT_S = 180.0

DEMO_QUERIES: tuple[QuerySpec, ...] = (
    QuerySpec(
        title="Children in education by immigration status",
        purpose="Plan school support for children whose families have limited or no leave "
        "to remain, by counting pupils in each immigration status.",
        population_party="education",
        group_party="immigration",
        group_by="immigration_status",
    ),
    QuerySpec(
        title="Children in education on free school meals, by immigration status",
        purpose="Check whether children with no recourse to public funds can reach free "
        "school meals, by counting pupils on free school meals in each status.",
        population_party="education",
        population_filters=(Predicate("fsm", ("Y",)),),
        group_party="immigration",
        group_by="immigration_status",
    ),
    QuerySpec(
        title="People known to justice, by special educational needs in education",
        purpose="Understand the special educational needs of young people in contact "
        "with the justice system, to commission support services.",
        population_party="justice",
        group_party="education",
        group_by="sen",
    ),
    QuerySpec(
        title="People known to immigration, by GP registration",
        purpose="Find out whether families with insecure immigration status are registered "
        "with a GP, to target health outreach.",
        population_party="immigration",
        group_party="health",
        group_by="gp_registered",
    ),
)


@dataclass
class DemoResult:
    directory: Path
    people: int
    records: dict[str, int] = field(default_factory=dict)
    releases: list[Release] = field(default_factory=list)
    wall_time_s: float = 0.0


def _prepare(directory: Path) -> None:
    if directory.exists():
        if not (directory / MARKER).exists() and any(directory.iterdir()):
            raise FailedPrecondition(
                f"{directory} exists and is not a Headcount demo directory; choose another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("created by `headcount demo`; safe to delete\n")


@contextmanager
def _processes(
    cfg_path: Path, cfg: FederationConfig, logs: Path
) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    logs.mkdir(exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    cmd = [sys.executable, "-m", "headcount.cli"]
    try:
        for party in cfg.party_names:
            with (logs / f"{party}.log").open("wb") as out:
                procs.append(
                    (
                        party,
                        subprocess.Popen(
                            [*cmd, "node", "serve", "--config", str(cfg_path), "--party", party],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        ),
                    )
                )
        with (logs / "coordinator.log").open("wb") as out:
            procs.append(
                (
                    "coordinator",
                    subprocess.Popen(
                        [*cmd, "coordinator", "serve", "--config", str(cfg_path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        yield procs
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _check_alive(procs: list[tuple[str, subprocess.Popen[bytes]]], logs: Path) -> None:
    for name, p in procs:
        if p.poll() is not None:
            raise PeerUnavailable(
                f"the {name} process exited with code {p.returncode}; see {logs / (name + '.log')}"
            )


def wait_for_federation(
    client: Client, procs: list[tuple[str, subprocess.Popen[bytes]]], logs: Path, timeout_s: float
) -> None:
    """Block until the coordinator and every node answer health checks.

    Fails fast, naming the log to read, if any process has exited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        _check_alive(procs, logs)
        try:
            client.wait_ready(1.0)
        except PeerUnavailable:
            if time.monotonic() > deadline:
                raise
            continue
        break
    while True:
        _check_alive(procs, logs)
        status = client.status()
        down = [p.party for p in status.parties if not p.healthy]
        if not down:
            return
        if time.monotonic() > deadline:
            raise PeerUnavailable(f"node(s) {down} did not start; see their logs")
        time.sleep(0.5)


def run_demo(
    directory: Path,
    *,
    people: int = DEFAULT_PEOPLE,
    seed: int = 2026,
    paillier_bits: int = 2048,
    echo: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    started = time.monotonic()
    directory = directory.resolve()
    _prepare(directory)
    result = DemoResult(directory, people)
    steps = tqdm(total=6, desc="demo", unit="step", file=sys.stderr, leave=False)

    echo(f"1/6 federation: CA and certificates in {directory}")
    cfg = init_federation(
        directory,
        InitOptions(
            paillier_bits=paillier_bits,
            insecure_test_keys=paillier_bits < 2048,
            reference_date=REFERENCE_DATE,
        ),
    )
    cfg_path = directory / CONFIG_NAME
    steps.update()

    echo(f"2/6 synthetic population: {people} people, seed {seed}")
    summary = generate_population(people, seed, directory / "data")
    evaluation = directory / "evaluation"
    evaluation.mkdir()
    shutil.move(directory / "data" / "ground_truth.csv", evaluation / "ground_truth.csv")
    echo("    records: " + ", ".join(f"{d} {n}" for d, n in summary.records.items()))
    steps.update()

    echo("3/6 starting 4 party nodes and the coordinator (mutual TLS on loopback)")
    logs = directory / "logs"
    with _processes(cfg_path, cfg, logs) as procs:
        with Client(cfg) as operator:
            wait_for_federation(operator, procs, logs, READY_TIMEOUT_S)
            steps.update()
            echo("4/6 key ceremony")
            ceremony = operator.run_ceremony()
            echo(f"    ceremony {ceremony.ceremony_id[:12]}: every node derived the same secret")
            steps.update()
            echo("5/6 linkage epoch")
            linkage = operator.run_linkage()
            result.records = dict(linkage.records)
            for pair in linkage.pairs:
                echo(f"    {pair.left:>11} x {pair.right:<11} {pair.links:6d} links")
            echo(f"    {linkage.clusters} clusters (people seen by two or more departments)")
            steps.update()
        analyst_name = cfg.analysts[0].name
        echo(f"6/6 queries as analyst {analyst_name!r}")
        releases_dir = directory / "releases"
        releases_dir.mkdir()
        with Client(cfg, analyst=analyst_name) as analyst:
            for i, spec in enumerate(DEMO_QUERIES, start=1):
                release = analyst.query(spec)
                result.releases.append(release)
                release.table.to_csv(releases_dir / f"q{i}.csv", index=False)
                echo(format_release(release))
        steps.update()
        steps.close()
    result.wall_time_s = time.monotonic() - started
    (directory / "releases" / "summary.json").write_text(
        json.dumps(
            {
                "people": people,
                "seed": seed,
                "records": result.records,
                "wall_time_s": round(result.wall_time_s, 1),
                "queries": [
                    {
                        "file": f"q{i}.csv",
                        "title": r.title,
                        "epsilon": r.epsilon,
                        "spec": _spec_json(DEMO_QUERIES[i - 1]),
                    }
                    for i, r in enumerate(result.releases, start=1)
                ],
            },
            indent=2,
        )
    )
    echo(
        f"done in {result.wall_time_s:.0f} s; tables in {releases_dir}, "
        f"logs in {directory / 'logs'}"
    )
    return result


def _spec_json(spec: QuerySpec) -> dict[str, object]:
    return {
        "population_party": spec.population_party,
        "population_filters": {p.attribute: list(p.values) for p in spec.population_filters},
        "group_party": spec.group_party,
        "group_by": spec.group_by,
    }


def format_release(r: Release) -> str:
    table = r.table.copy()
    table["count"] = table["count"].astype("object").where(table["count"].notna(), "[suppressed]")
    body = table.to_string(index=False)
    return (
        f"\n  {r.title}\n  (epsilon {r.epsilon:g}, discrete Laplace scale {r.noise_scale:g}; "
        f"counts below 10 suppressed, others rounded to 5; budget left {r.budget_remaining:g})\n"
        + "\n".join("    " + line for line in body.splitlines())
        + "\n"
    )
