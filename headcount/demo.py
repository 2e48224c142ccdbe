"""``headcount demo``: a whole federation on this machine, end to end.

Creates a federation (CA, certificates, config), a synthetic population, starts
four party nodes and a coordinator as separate processes on loopback ports,
runs the key ceremony, one linkage epoch and the demo queries, prints the
protected tables and stops every process. Released tables are also written as
CSV under ``<dir>/releases`` and the ground truth is kept apart under
``<dir>/evaluation`` for checking.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from headcount.client import Client, Release
from headcount.config import FederationConfig
from headcount.departments import ADULT_AGE_BANDS
from headcount.domain.query import Condition, Predicate, QuerySpec, spec_to_json
from headcount.domain.status import PairLinks
from headcount.errors import BudgetExhausted, FailedPrecondition, PeerUnavailable, PolicyRefused
from headcount.federation import CONFIG_NAME, InitOptions, free_ports, init_federation
from headcount.linkage.quality import basis_note
from headcount.privacy.noise import guessing_bound
from headcount.register import build_register
from headcount.synth import REFERENCE_DATE, generate_population

MARKER = ".headcount-demo"
READY_TIMEOUT_S = 180.0
STEPS = 8
# The demo runs on the product's default budget (config.DEFAULT_EPSILON_PER_PERIOD
# per department per year): its four questions spend 4 x 0.2 at education and
# the quality report's subgroup link rates 2 x 0.1 more, the whole year's budget.
DEMO_QUERY_EPSILON = 0.2
DEMO_SUBGROUP_QUERIES = 2
DEMO_SUBGROUP_EPSILON = 0.1

DEMO_PROJECT = "childrens-commissioner-2026"
DEMO_PROJECT_TITLE = "Children's Commissioner: children across departments"
DEMO_PROJECT_PURPOSE = (
    "Count, never name, children whose immigration status, family circumstances or "
    "access to services put them at risk, so that services reach them."
)

# The questions DESIGN.md asks. Each equals a file in docs/queries/ (a test
# checks), so the demo and the documented examples cannot drift apart.
_CHILD_BANDS = ("5-9", "10-15", "16-17")
DEMO_QUERIES: tuple[tuple[str, QuerySpec], ...] = (
    (
        "children-by-immigration-status.yaml",
        QuerySpec(
            title="Children in education by immigration status",
            purpose="Plan school support for children whose families have limited or no "
            "leave to remain, by counting pupils in each immigration status.",
            population_party="education",
            group_party="immigration",
            group_by="immigration_status",
            project_id=DEMO_PROJECT,
        ),
    ),
    (
        "pupils-without-gp-by-status.yaml",
        QuerySpec(
            title="Pupils not registered with a GP, by immigration status",
            purpose="Check whether pupils whose families have insecure immigration status can "
            "reach primary care, by counting pupils with no GP registration by status.",
            population_party="education",
            conditions=(Condition("health", (Predicate("gp_registered", ("N",)),)),),
            group_party="immigration",
            group_by="immigration_status",
            project_id=DEMO_PROJECT,
        ),
    ),
    (
        "children-with-adult-in-custody.yaml",
        QuerySpec(
            title="Children in education living with an adult in custody, by local authority",
            purpose="Estimate how many pupils live with an adult in custody, by local "
            "authority, to plan family support services.",
            population_party="education",
            conditions=(
                Condition(
                    "justice",
                    (
                        Predicate("sentence", ("custody",)),
                        Predicate("age_band", ADULT_AGE_BANDS),
                    ),
                    link="household",
                ),
            ),
            group_party="education",
            group_by="local_authority",
            project_id=DEMO_PROJECT,
        ),
    ),
    (
        "no-leave-children-attainment.yaml",
        QuerySpec(
            title="Children with no leave to remain, by attainment band at school",
            purpose="Understand attainment of children without leave to remain, to target "
            "educational support where it is most needed.",
            population_party="immigration",
            population_filters=(
                Predicate("immigration_status", ("no_leave", "asylum_seeker")),
                Predicate("age_band", _CHILD_BANDS),
            ),
            group_party="education",
            group_by="attainment_band",
            project_id=DEMO_PROJECT,
        ),
    ),
)


@dataclass
class DemoResult:
    directory: Path
    people: int
    records: dict[str, int] = field(default_factory=dict)
    releases: dict[int, Release] = field(default_factory=dict)  # by query number, from 1
    refusals: dict[int, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    quality_report: Path | None = None  # the epoch's linkage quality report (HTML)
    register: Path | None = None  # index.html of the transparency register
    register_url: str = ""  # where the register was served while the demo ran


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
    cfg_path: Path, cfg: FederationConfig, logs: Path, register: tuple[Path, int]
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
        # The public transparency register, rebuilt from the audit log as the
        # demo runs (the same command docker/compose.yaml runs).
        site, port = register
        with (logs / "register.log").open("wb") as out:
            procs.append(
                (
                    "register",
                    subprocess.Popen(
                        [
                            *cmd,
                            "register",
                            "serve",
                            "--config",
                            str(cfg_path),
                            "--out",
                            str(site),
                            "--port",
                            str(port),
                            "--rebuild-every",
                            "2",
                        ],
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
    people: int = 20_000,
    seed: int = 2026,
    paillier_bits: int = 2048,
    register_port: int = 0,
    longitudinal: bool = True,
    echo: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    started = time.monotonic()
    directory = directory.resolve()
    _prepare(directory)
    result = DemoResult(directory, people)
    steps = tqdm(total=STEPS, desc="demo", unit="step", file=sys.stderr, leave=False)

    echo(f"1/{STEPS} federation: CA and certificates in {directory}")
    cfg = init_federation(
        directory,
        InitOptions(
            paillier_bits=paillier_bits,
            insecure_test_keys=paillier_bits < 2048,
            reference_date=REFERENCE_DATE,
            default_query_epsilon=DEMO_QUERY_EPSILON,
        ),
    )
    cfg_path = directory / CONFIG_NAME
    eps = cfg.privacy.epsilon_per_period
    echo(
        f"    privacy: each department's budget is epsilon {eps:g} per {cfg.privacy.period}, "
        f"across every epoch: nobody can be more than {100 * guessing_bound(eps):.1f}% sure "
        "of a fact about a child that a coin toss gives at 50%"
    )
    steps.update()

    echo(f"2/{STEPS} synthetic population: {people} people, seed {seed}")
    summary = generate_population(people, seed, directory / "data")
    evaluation = directory / "evaluation"
    evaluation.mkdir()
    shutil.move(directory / "data" / "ground_truth.csv", evaluation / "ground_truth.csv")
    echo("    records: " + ", ".join(f"{d} {n}" for d, n in summary.records.items()))
    steps.update()

    echo(
        f"3/{STEPS} starting 4 party nodes, the coordinator (mutual TLS on loopback) "
        "and the transparency register"
    )
    logs = directory / "logs"
    register_dir = directory / "register"
    port = register_port or free_ports("127.0.0.1", 1)[0]
    result.register_url = f"http://127.0.0.1:{port}/"
    with _processes(cfg_path, cfg, logs, (register_dir, port)) as procs:
        with Client(cfg) as operator:
            wait_for_federation(operator, procs, logs, READY_TIMEOUT_S)
            echo(f"    transparency register: {result.register_url} (while the demo runs)")
            steps.update()
            echo(f"4/{STEPS} key ceremony")
            ceremony = operator.run_ceremony()
            echo(f"    ceremony {ceremony.ceremony_id[:12]}: every node derived the same secret")
            steps.update()
            echo(f"5/{STEPS} linkage epoch")
            linkage = operator.run_linkage()
            result.records = dict(linkage.records)
            echo(
                "    the coordinator operator's view (exact linkage statistics: they stay "
                "within the coordinator's trust domain, never in the audit log or register)"
            )
            echo(link_table(linkage.pairs))
            echo(f"    {linkage.clusters} clusters (people seen by two or more departments)")
            steps.update()
        analyst_name = cfg.analysts[0].name
        echo(
            f"6/{STEPS} project {DEMO_PROJECT!r}: proposed by {analyst_name!r}, "
            "approved by each steward"
        )
        with Client(cfg, analyst=analyst_name) as analyst:
            analyst.propose_project(
                DEMO_PROJECT,
                DEMO_PROJECT_TITLE,
                DEMO_PROJECT_PURPOSE,
                cfg.party_names,
                dt.date.today() + dt.timedelta(days=365),
            )
        for party in cfg.party_names:
            with Client(cfg, steward=party) as steward:
                steward.approve_project(DEMO_PROJECT)
        echo(f"    queries as analyst {analyst_name!r}")
        releases_dir = directory / "releases"
        releases_dir.mkdir()
        with Client(cfg, analyst=analyst_name) as analyst:
            for i, (_, spec) in enumerate(DEMO_QUERIES, start=1):
                try:
                    release = analyst.query(spec)
                except (PolicyRefused, BudgetExhausted) as exc:
                    # A refusal is a result too: the protections working.
                    result.refusals[i] = str(exc)
                    echo(f"\n  {spec.title}\n    REFUSED by policy: {exc}\n")
                    continue
                result.releases[i] = release
                release.frame().to_csv(releases_dir / f"q{i}.csv", index=False)
                echo(format_release(release))
        steps.update()

        echo(f"7/{STEPS} linkage quality report (subgroup link rates as protected queries)")
        from headcount.report import SubgroupPlan, build_quality_report

        # Subgroup link rates for education, whose records are the children the
        # demo's questions are about (`headcount report quality` defaults to
        # education and health).
        result.quality_report = build_quality_report(
            cfg,
            directory / "reports",
            project_id=DEMO_PROJECT,
            subgroups=SubgroupPlan(
                populations=("education",),
                epsilon=DEMO_SUBGROUP_EPSILON,
                max_queries=DEMO_SUBGROUP_QUERIES,
            ),
        )
        echo(f"    linkage quality report: {result.quality_report}")
        steps.update()
    result.register = build_register(cfg, register_dir)

    if longitudinal:
        echo(f"8/{STEPS} children across time (yearly snapshots as parties)")
        from headcount.longitudinal import run_longitudinal_demo

        run_longitudinal_demo(
            directory / "longitudinal",
            people=people,
            seed=seed,
            paillier_bits=paillier_bits,
            echo=echo,
        )
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
                        "file": f"q{i}.csv" if i in result.releases else None,
                        "title": spec.title,
                        "epsilon": result.releases[i].epsilon if i in result.releases else None,
                        "refused": result.refusals.get(i),
                        "spec": spec_to_json(spec),
                    }
                    for i, (_, spec) in enumerate(DEMO_QUERIES, start=1)
                ],
            },
            indent=2,
        )
    )
    echo(
        f"done in {result.wall_time_s:.0f} s; tables in {releases_dir}, "
        f"logs in {directory / 'logs'}\n"
        f"  linkage quality report: {result.quality_report}\n"
        f"  transparency register:  {result.register} "
        f"(serve it with `headcount register serve --config {cfg_path} --out {register_dir}`, "
        "or run the demo with --serve)"
    )
    return result


def link_table(pairs: Iterable[PairLinks]) -> str:
    """Links per department pair with the quality estimated without ground truth."""
    lines = [
        "  pair                       links  by match-key  threshold  est. precision  est. recall"
    ]
    for p in pairs:
        est = (
            f"{p.est_precision:14.3f}  {p.est_recall:11.3f}"
            if p.est_precision is not None and p.est_recall is not None
            else f"{'(too few to fit)':>27}"
        )
        note = basis_note(p.estimate_basis) if p.est_precision is not None else ""
        lines.append(
            f"  {p.left + ' x ' + p.right:<25} {p.links:6d}  {p.key_links:12d}"
            f"  {p.threshold:9.3f}  {est}" + (f"  ({note})" if note else "")
        )
    return "\n".join(lines)


def format_release(r: Release) -> str:
    table = r.frame()
    table["count"] = table["count"].astype("object").where(table["count"].notna(), "[suppressed]")
    released = table["low"].notna()
    table["95% interval"] = ""
    table.loc[released, "95% interval"] = [
        f"{lo}-{hi}" for lo, hi in zip(table["low"][released], table["high"][released], strict=True)
    ]
    # A cell whose interval is wider than its value is dominated by the noise.
    dominated = released & ((table["high"] - table["low"]) > table["count"].where(released, 0))
    table["note"] = ""
    table.loc[dominated.fillna(False).astype(bool), "note"] = "noise dominates"
    table = table.drop(columns=["low", "high", "noise_scale"])
    body = table.to_string(index=False)
    return (
        f"\n  {r.title}\n  (epsilon {r.epsilon:g}; noise in shares, discrete Laplace scale "
        f"{r.noise_scale:g} per count; counts below 10 suppressed, others rounded to 5; "
        f"each department's budget left this year {r.budget_remaining:g})\n"
        + "\n".join("    " + line for line in body.splitlines())
        + "\n"
    )
