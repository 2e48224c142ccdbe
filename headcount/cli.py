"""The ``headcount`` command line."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from headcount import config as config_mod
from headcount.cli_options import config_option
from headcount.errors import ConfigError, HeadcountError
from headcount.log import configure
from headcount.register.cli import register
from headcount.report.cli import report

if TYPE_CHECKING:
    from collections.abc import Sequence

    from headcount.linkage.matchkeys import MatchKeySpec
    from headcount.linkage.schema import LinkageSchema
    from party_node.data import ReadOptions, ReadReport

log = logging.getLogger(__name__)

DEFAULT_DEMO_PEOPLE = 20_000  # large enough that most demo cells pass the small-number rule


def _fail(exc: HeadcountError) -> NoReturn:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


def _load(path: Path | None) -> config_mod.FederationConfig:
    try:
        return config_mod.load(path)
    except HeadcountError as exc:
        _fail(exc)


def _metrics_options(fn: Any) -> Any:
    fn = click.option(
        "--metrics-host",
        default=None,
        help="Address for --metrics-port (default: the config's metrics_host, 127.0.0.1).",
    )(fn)
    return click.option(
        "--metrics-port",
        default=None,
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics over plain HTTP on this port "
        "(default: the config's metrics_port; 0 turns them off).",
    )(fn)


def _probe(cfg: config_mod.FederationConfig, who: str, timeout_s: float) -> None:
    """Ask ``who`` (a party or "coordinator") for its gRPC health over mutual TLS,
    using its own certificate; PeerUnavailable (exit 1) unless it is serving."""
    from headcount import rpc, tls

    if who == "coordinator":
        address, cred = cfg.coordinator.address, cfg.coordinator.tls
    else:
        p = cfg.party(who)
        address, cred = p.address, p.tls
    credentials = tls.channel_credentials(cred.cert, cred.key, cfg.ca_cert)
    channel = rpc.secure_channel(address, credentials, max_message_bytes=cfg.max_message_bytes)
    with channel:
        rpc.wait_healthy(channel, who, timeout_s=timeout_s)
    click.echo(f"{who} at {address}: serving")


timeout_option = click.option(
    "--timeout",
    "timeout_s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to wait for an answer.",
)


def _log_json() -> bool:
    """Whether ``headcount --log-json`` was given, for a server re-labelling its logs."""
    return bool(click.get_current_context().find_root().params.get("log_json", False))


class _Group(click.Group):
    """Turn HeadcountError into a one-line message and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HeadcountError as exc:
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR."
)
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines (for log shippers).")
@click.version_option(package_name="headcount")
def cli(log_level: str, log_json: bool) -> None:
    """Headcount: count children across departments without naming any of them.

    Party nodes sit beside each department's data and send only keyed
    encodings and ciphertexts; a coordinator links records and computes
    aggregate counts that leave only after differential-privacy noise and the
    small-number rule.

    Quick start:  headcount demo
    """
    configure(log_level, json_lines=log_json)


def _csv_option(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


# -- federation ------------------------------------------------------------------
@cli.group(cls=_Group)
def federation() -> None:
    """Create and inspect a federation (CA, certificates, config)."""


@federation.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="demo", show_default=True, help="Federation name.")
@click.option(
    "--paillier-bits",
    default=2048,
    show_default=True,
    type=click.Choice(["1024", "2048", "3072"]),
    help="Paillier modulus size (1024 is for tests only).",
)
@click.option("--base-port", default=0, type=int, help="First loopback port (default: free ports).")
@click.option(
    "--service-hosts",
    is_flag=True,
    help="Address each process by its own name (education:PORT, ...), as on a container "
    "network (docker/compose.yaml), instead of 127.0.0.1.",
)
@click.option(
    "--periods",
    default="",
    help="Comma-separated period labels, e.g. 2024,2025,2026: each period department "
    "then takes part once per period (immigration-2024, ...).",
)
@click.option(
    "--period-departments",
    default="education,immigration",
    show_default=True,
    help="Departments that supply one snapshot per period.",
)
def federation_init(
    directory: Path,
    name: str,
    paillier_bits: str,
    base_port: int,
    service_hosts: bool,
    periods: str,
    period_departments: str,
) -> None:
    """Create a federation CA, one certificate per party, coordinator, operator
    and analyst (role and name inside each certificate), and federation.toml."""
    from headcount.federation import InitOptions, init_federation

    bits = int(paillier_bits)
    cfg = init_federation(
        directory,
        InitOptions(
            name=name,
            paillier_bits=bits,
            insecure_test_keys=bits < 2048,
            base_port=base_port,
            service_hosts=service_hosts,
            periods=_csv_option(periods),
            period_departments=_csv_option(period_departments),
        ),
    )
    click.echo(f"federation {cfg.name!r} created in {directory}")
    click.echo(f"  config:      {directory / 'federation.toml'}")
    click.echo(f"  coordinator: {cfg.coordinator.address}")
    for p in cfg.parties:
        click.echo(f"  {p.name:<18} {p.address}   data: {p.data}")
    click.echo("Put each department's file at its data path, then start the nodes.")


# -- synthetic data -------------------------------------------------------------------
@cli.command()
@click.option(
    "--people",
    default=5000,
    show_default=True,
    type=click.IntRange(1),
    help="People in the population.",
)
@click.option(
    "--seed", default=2026, show_default=True, type=int, help="Random seed (same seed, same files)."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the CSV files.",
)
@click.option(
    "--years",
    default="",
    help="Comma-separated years, e.g. 2024,2025,2026: one evolving population with a "
    "snapshot per year for education and immigration (education-2024.csv, ...), as "
    "`federation init --periods` expects.",
)
def synth(people: int, seed: int, out_dir: Path, years: str) -> None:
    """Write a synthetic population: one CSV per department plus ground_truth.csv.

    Households of children and adults across local authorities, realistic
    coverage per department and recording errors. Keep ground_truth.csv away
    from the nodes: it exists only to evaluate linkage and released counts.
    """
    from headcount.synth import generate_periods, generate_population

    if years:
        try:
            chosen = tuple(int(y) for y in _csv_option(years))
        except ValueError:
            raise click.BadParameter("years are numbers, e.g. 2024,2025,2026") from None
        many = generate_periods(people, seed, out_dir, years=chosen, progress=True)
        click.echo(f"{many.people} people over {len(many.years)} years -> {out_dir}")
        for party, n in many.records.items():
            click.echo(f"  {party:<18} {n:>8} records")
        return
    summary = generate_population(people, seed, out_dir, progress=True)
    click.echo(f"{summary.people} people in {summary.households} households -> {out_dir}")
    for dept, n in summary.records.items():
        click.echo(f"  {dept:<12} {n:>8} records")


# -- party node ----------------------------------------------------------------------
@cli.group(cls=_Group)
def node() -> None:
    """Run or check a department's party node."""


@node.command("serve")
@config_option
@click.option("--party", required=True, help="Which party this node is (e.g. education).")
@_metrics_options
def node_serve(
    config_path: Path | None, party: str, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Serve the PartyNode gRPC service (mutual TLS; only the coordinator may call)."""
    from party_node.server import serve

    cfg = _load(config_path)
    configure(logging.getLevelName(logging.getLogger().level), json_lines=_log_json(), name=party)
    logging.getLogger().setLevel(logging.INFO)
    serve(cfg, cfg.party(party).name, metrics_port=metrics_port, metrics_host=metrics_host)


@node.command("health")
@config_option
@click.option("--party", required=True, help="Which party's node to ask.")
@timeout_option
def node_health(config_path: Path | None, party: str, timeout_s: float) -> None:
    """Exit 0 if PARTY's node answers the gRPC health check (a liveness probe,
    e.g. for a container healthcheck; it uses the party's own certificate)."""
    _probe(_load(config_path), party, timeout_s)


@node.command("check")
@config_option
@click.option("--party", required=True, help="Which party's data file to check.")
@click.option(
    "--blank-invalid",
    is_flag=True,
    help="Check as the node reads with blank_invalid = true: unreadable dates, sexes and"
    " postcodes are blanked and counted, not refused.",
)
def node_check(config_path: Path | None, party: str, blank_invalid: bool) -> None:
    """Check the department file against its contract, showing problem values.

    Run this at the node: unlike errors sent to the coordinator, its output
    quotes the offending values. It reads the file as the node does: with the
    linkage schema's date order and postcode style, and the party's
    blank_invalid setting.
    """
    from party_node.data import DepartmentFileError, department_options, load_department_file

    cfg = _load(config_path)
    p = cfg.party(party)
    options = department_options(
        cfg.load_linkage_schema().input, blank_invalid=blank_invalid or p.blank_invalid
    )
    try:
        data = load_department_file(
            p.data, p.department, p.reference_date or cfg.reference_date, options
        )
    except DepartmentFileError as exc:
        click.echo(exc.detail, err=True)
        sys.exit(1)
    click.echo(f"{p.data}: {data.records} records, all checks passed")
    if data.report is not None:
        click.echo(f"  dates read {data.report.date_order.describe()}")
        for column, count in data.report.blanked.items():
            click.echo(f"  {count} unreadable values blanked in column {column!r}")
        if data.report.nameless:
            click.echo(f"  {data.report.nameless} records without a name, kept")


# -- coordinator ------------------------------------------------------------------------
@cli.group(cls=_Group)
def coordinator() -> None:
    """Run the coordinator."""


@coordinator.command("serve")
@config_option
@_metrics_options
def coordinator_serve(
    config_path: Path | None, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Serve the Coordinator gRPC service (operator and analyst roles by certificate)."""
    from coordinator.server import serve

    cfg = _load(config_path)
    configure("INFO", json_lines=_log_json(), name="coordinator")
    serve(cfg, metrics_port=metrics_port, metrics_host=metrics_host)


@coordinator.command("health")
@config_option
@timeout_option
def coordinator_health(config_path: Path | None, timeout_s: float) -> None:
    """Exit 0 if the coordinator answers the gRPC health check (a liveness probe,
    e.g. for a container healthcheck; it uses the coordinator's own certificate)."""
    _probe(_load(config_path), "coordinator", timeout_s)


# -- operator ----------------------------------------------------------------------------
@cli.command()
@config_option
def ceremony(config_path: Path | None) -> None:
    """Run the key ceremony: nodes derive a linkage secret the coordinator never holds."""
    from headcount.client import Client

    with Client(_load(config_path)) as c:
        s = c.run_ceremony()
    click.echo(f"ceremony {s.ceremony_id}: {len(s.parties)} parties, confirmed={s.confirmed}")


@cli.command()
@config_option
@click.option(
    "--threshold",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Dice threshold (default: the federation's).",
)
def link(config_path: Path | None, threshold: float) -> None:
    """Run a linkage epoch: fresh tokens, keyed encodings, comparison, clusters."""
    from headcount.client import Client

    with Client(_load(config_path)) as c:
        s = c.run_linkage(threshold)
    click.echo(f"epoch {s.epoch_id} (schema {s.schema_fingerprint[:12]})")
    for party, n in s.records.items():
        click.echo(f"  {party:<12} {n:>8} records")
    from headcount.demo import link_table

    click.echo(link_table(s.pairs))
    click.echo(f"  {s.clusters} clusters")


def _predicate(text: str) -> tuple[str, str, tuple[str, ...]]:
    try:
        target, values = text.split("=", 1)
        party, attribute = target.split(".", 1)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use party.attribute=value[,value...]") from None
    return party, attribute, tuple(v for v in values.split(",") if v)


@cli.command()
@config_option
@click.option("--analyst", required=True, help="Analyst name (its certificate is used).")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A YAML query spec (see docs/analyst-guide.md); replaces the options below.",
)
@click.option("--population", help="Department whose records are counted, e.g. education.")
@click.option(
    "--group-by",
    "group_by",
    help="party.attribute to group by, e.g. immigration.immigration_status.",
)
@click.option("--filter", "filters", multiple=True, help="party.attribute=v1,v2 (repeatable).")
@click.option("--purpose", help="Why this table is needed (recorded in the audit log).")
@click.option(
    "--epsilon", default=0.0, type=float, help="Privacy loss to spend (default: the federation's)."
)
@click.option("--title", default="", help="Title for the released table.")
@click.option("--project", "project_id", default="", help="The approved project this query serves.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the table to this CSV file.",
)
def query(
    config_path: Path | None,
    analyst: str,
    spec_path: Path | None,
    population: str | None,
    group_by: str | None,
    filters: tuple[str, ...],
    purpose: str | None,
    epsilon: float,
    title: str,
    project_id: str,
    csv_path: Path | None,
) -> None:
    """Ask for a protected count: POPULATION's records grouped by another
    department's attribute, optionally with conditions (use --spec for those).
    Only noisy, rounded, small-number-suppressed tables come back."""
    from headcount.client import Client
    from headcount.demo import format_release
    from headcount.query import Predicate, QuerySpec
    from headcount.queryfile import load_query_spec

    if spec_path is not None:
        spec = load_query_spec(spec_path)
        if project_id:
            spec = dataclasses.replace(spec, project_id=project_id)
    else:
        missing = [
            name
            for name, value in (
                ("--population", population),
                ("--group-by", group_by),
                ("--purpose", purpose),
            )
            if not value
        ]
        if missing:
            raise click.UsageError(f"give --spec FILE, or all of {', '.join(missing)}")
        assert population and group_by and purpose
        if "." not in group_by:
            raise click.BadParameter("use party.attribute", param_hint="--group-by")
        group_party, group_attr = group_by.split(".", 1)
        pop_filters, grp_filters = [], []
        for f in filters:
            party, attribute, values = _predicate(f)
            if party == population:
                pop_filters.append(Predicate(attribute, values))
            elif party == group_party:
                grp_filters.append(Predicate(attribute, values))
            else:
                raise click.BadParameter(
                    f"filters may name {population} or {group_party}, not {party} "
                    "(use --spec for conditions in other departments)"
                )
        spec = QuerySpec(
            purpose=purpose,
            population_party=population,
            group_party=group_party,
            group_by=group_attr,
            population_filters=tuple(pop_filters),
            group_filters=tuple(grp_filters),
            epsilon=epsilon,
            title=title,
            project_id=project_id,
        )
    with Client(_load(config_path), analyst=analyst) as c:
        release = c.query(spec)
    click.echo(format_release(release))
    if csv_path:
        release.table.to_csv(csv_path, index=False)


@cli.command()
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
def status(config_path: Path | None, analyst: str | None) -> None:
    """Show the federation: parties and their health, current epoch, queries, audit head."""
    from headcount.client import Client

    with Client(_load(config_path), analyst=analyst) as c:
        s = c.status()
    click.echo(f"federation {s.federation}")
    click.echo(f"  ceremony {s.ceremony_id or '(none)'}   epoch {s.epoch_id or '(none)'}")
    click.echo(f"  privacy budget per department for {s.period}: epsilon {s.epsilon_per_period:g}")
    for p in s.parties:
        click.echo(
            f"  {p.party:<12} {'healthy' if p.healthy else 'DOWN':<8} {p.records:>8} records"
            f"   epsilon spent {p.epsilon_spent:.3g}, left {p.epsilon_left:.3g}"
        )
    click.echo(f"  {s.queries} queries; audit head {s.audit_head[:16]}")


@cli.group(cls=_Group)
def project() -> None:
    """Five Safes, safe projects: propose, approve, revoke and list projects.

    A query must cite a project that every department in it has approved.
    """


def _show_projects(projects: Any) -> None:
    for p in projects:
        click.echo(
            f"{p.project_id:<28} {p.status:<9} expires {p.expires}  analyst {p.analyst}  "
            f"approved by {', '.join(p.approved_by) or '-'} of {', '.join(p.parties)}"
        )
        click.echo(f"  {p.title}: {p.purpose}")


@project.command("propose")
@config_option
@click.option("--analyst", required=True, help="The proposing analyst (its certificate is used).")
@click.option(
    "--id", "project_id", required=True, help="Project id, e.g. childrens-commissioner-2026."
)
@click.option("--title", required=True, help="Short title.")
@click.option("--purpose", required=True, help="The public-interest purpose (published).")
@click.option("--parties", required=True, help="Departments whose data it uses, comma-separated.")
@click.option(
    "--expires",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Expiry date, YYYY-MM-DD.",
)
def project_propose(
    config_path: Path | None,
    analyst: str,
    project_id: str,
    title: str,
    purpose: str,
    parties: str,
    expires: Any,
) -> None:
    """Propose a project; each department's steward must then approve it."""
    from headcount.client import Client

    with Client(_load(config_path), analyst=analyst) as c:
        p = c.propose_project(
            project_id,
            title,
            purpose,
            [x.strip() for x in parties.split(",") if x.strip()],
            expires.date(),
        )
    _show_projects([p])


@project.command("approve")
@config_option
@click.option(
    "--party", required=True, help="Your department (its certificate key signs the approval)."
)
@click.argument("project_id")
def project_approve(config_path: Path | None, party: str, project_id: str) -> None:
    """As a department's data steward, sign and record approval of PROJECT_ID."""
    from headcount.client import Client

    with Client(_load(config_path), steward=party) as c:
        p = c.approve_project(project_id)
    _show_projects([p])


@project.command("revoke")
@config_option
@click.option(
    "--party", default=None, help="Revoke as this department's steward (default: the operator)."
)
@click.argument("project_id")
def project_revoke(config_path: Path | None, party: str | None, project_id: str) -> None:
    """Revoke PROJECT_ID: no further query may cite it."""
    from headcount.client import Client

    with Client(_load(config_path), steward=party) as c:
        p = c.revoke_project(project_id)
    _show_projects([p])


@project.command("list")
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
def project_list(config_path: Path | None, analyst: str | None) -> None:
    """List every project with its status and approvals."""
    from headcount.client import Client

    with Client(_load(config_path), analyst=analyst) as c:
        _show_projects(c.projects())


@cli.group(cls=_Group)
def audit() -> None:
    """Read and verify the hash-chained, signed audit log."""


@audit.command("show")
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
def audit_show(config_path: Path | None, analyst: str | None) -> None:
    """Fetch the coordinator's audit log, verify chain and signatures here, list events."""
    from headcount.client import Client

    with Client(_load(config_path), analyst=analyst) as c:
        events, head = c.audit_log()
    for e in events:
        click.echo(f"{e.seq:>4} {e.at} {e.kind:<13} {e.hash[:16]}")
    click.echo(f"chain and signatures verified: {len(events)} events, head {head}")


@audit.command("verify")
@config_option
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A copy of the log: the coordinator's or any node's SQLite state file.",
)
@click.option("--party", default=None, help="Verify this party node's replica (its state file).")
def audit_verify(config_path: Path | None, db_path: Path | None, party: str | None) -> None:
    """Verify any copy of the audit log: the chain, and every signature against the
    federation's audit public key. Names the first bad entry; exit code 1 if any."""
    from headcount.audit import AuditLog

    cfg = _load(config_path)
    if db_path is None:
        db_path = cfg.party(party).database if party else cfg.coordinator.database
    log_copy = AuditLog(db_path, verifier=cfg.audit_verifier)
    try:
        head = log_copy.verify()
    except HeadcountError as exc:
        click.secho(f"FAILED {db_path}: {exc}", fg="red", err=True)
        sys.exit(1)
    click.echo(f"OK {db_path}: {len(log_copy.events())} events, head {head}")


def _echo_read(name: str, records: int, report: ReadReport) -> None:
    """What reading one file decided: date order, blanked values, absent fields."""
    click.echo(f"  {name:<20} {records:>9} records; dates {report.date_order.describe()}")
    for column, count in report.blanked.items():
        click.echo(f"  {'':<20} {count:>9} unreadable values blanked in column {column!r}")
    if report.nameless:
        click.echo(f"  {'':<20} {report.nameless:>9} records without a name, kept")
    if report.absent:
        click.echo(f"  {'':<20} {'':>9} no column for: {', '.join(report.absent)}")


def _echo_encodings(clk_fields: Sequence[str], keys: Sequence[MatchKeySpec]) -> None:
    click.echo("  CLK fields: " + ", ".join(clk_fields))
    names = ", ".join(k.name for k in keys)
    click.echo("  match-keys: " + (names or "none (the files share too few fields)"))


def _dedup_one(
    path: Path,
    out_path: Path,
    threshold: float | None,
    schema: LinkageSchema,
    executor: str,
    seed: int | None,
    options: ReadOptions,
) -> None:
    from headcount.linkfiles import dedup_file

    summary = dedup_file(
        path,
        out_path,
        threshold=threshold,
        schema=schema,
        progress=lambda m: click.echo(m, err=True),
        executor=executor,
        seed=seed,
        options=options,
    )
    _echo_read(path.name, summary.records, summary.report)
    _echo_encodings(summary.clk_fields, summary.match_keys)
    r = summary.result
    q = r.quality
    est = (
        f"est. precision {q.est_precision:.3f}, recall {q.est_recall:.3f}"
        if q
        else "too few candidates to estimate quality"
    )
    click.echo(
        f"  {r.candidates} candidate pairs, {r.key_pairs} by match-key, {r.refused} merges"
        f" refused as incoherent; threshold {r.threshold:.3f}, {est}"
    )
    click.echo(
        f"{summary.clusters} people ({summary.duplicated} with duplicates);"
        f" {summary.pairs_written} duplicate pairs -> {summary.out}"
    )


@cli.command(
    "corrupt",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def corrupt_command(args: tuple[str, ...]) -> None:
    """Add reproducible recording errors to any CSV (typos, OCR and phonetic
    errors, missing and swapped fields, transposed dates), to measure linkage
    on an error profile of your choosing. `headcount corrupt --help` for options.

    \b
    Example:
      headcount corrupt in.csv out.csv --columns first_name=name,dob=date \\
          --rate 0.3 --seed 1 --id-column record_id --truth truth.csv
    """
    from headcount.tools.corrupt import main as corrupt_main

    sys.exit(corrupt_main(list(args)))


@cli.command("link-files")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV of linked pairs to write.",
)
@click.option(
    "--threshold",
    default=None,
    type=click.FloatRange(0, 1, min_open=True),
    help="Dice threshold (default: the schema's).",
)
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Linkage schema TOML (default: the built-in one, as in schemas/default.toml).",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    metavar="local|dask://HOST:PORT",
    help="Where the comparisons run: this process, or a Dask scheduler (needs the dask extra).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read an identity field from another column, e.g. first_name=given_name"
    " (fields: record_id, first_name, last_name, date_of_birth, sex, postcode, address,"
    " locality, reference). Repeatable.",
)
@click.option(
    "--date-order",
    type=click.Choice(["auto", "day-first", "month-first"]),
    default=None,
    help="Order of day and month in numeric dates; auto finds it per file"
    " (day-first when no date tells). Default: the schema's [input], else auto.",
)
@click.option(
    "--postcodes",
    type=click.Choice(["uk", "any"]),
    default=None,
    help="uk checks UK postcodes; any takes any country's code (2-10 letters and digits)."
    " Default: the schema's [input], else uk.",
)
@click.option(
    "--blank-invalid",
    is_flag=True,
    help="Blank a date, sex or postcode that cannot be read (counted and reported)"
    " instead of refusing the file.",
)
@click.option(
    "--dedup",
    is_flag=True,
    help="Find the records of ONE file that are one person (several records per person)"
    " and write every pair of them.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Derive the encoding secret and blocking key from this number, for a repeatable run"
    " (default: fresh random keys each run).",
)
def link_files_command(
    files: tuple[Path, ...],
    out_path: Path,
    threshold: float | None,
    schema_path: Path | None,
    executor: str,
    columns: tuple[str, ...],
    date_order: str | None,
    postcodes: str | None,
    blank_invalid: bool,
    dedup: bool,
    seed: int | None,
) -> None:
    """Link two or more local CSV files with the federation's linkage engine.

    Each file is its own party, encoded under one fresh secret. A file needs
    record_id, first_name and last_name; date_of_birth, sex and postcode may be
    absent, and address, locality and reference are used where every file has
    them (other columns are ignored; --column maps other names). Match-keys
    use only the fields every file holds. Writes id_a,id_b,score for two
    files (id_a from the first file named, id_b from the second), or
    party_a,id_a,party_b,id_b,score for more.
    The output's directory is created first (or the run refused) before any
    file is read. Use it to measure match quality
    on your own labelled data. With --executor dask://HOST:PORT the
    comparisons run on a Dask cluster, with the same output.

    \b
    Examples:
      headcount link-files a.csv b.csv --out out/pairs.csv
      headcount link-files a.csv b.csv --out pairs.csv --postcodes any \\
          --column first_name=given_name --column last_name=surname --blank-invalid
      headcount link-files a.csv b.csv --out pairs.csv --schema my-schema.toml
      headcount link-files register.csv --dedup --out duplicates.csv

    A schema's [input] table names the columns once (an address may join
    several), the date order and the postcode style; see docs/linkage.md.
    """
    from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, load_schema
    from headcount.linkfiles import link_files, read_options

    schema = load_schema(schema_path) if schema_path else DEFAULT_LINKAGE_SCHEMA
    mapping: dict[str, str] = {}
    for item in columns:
        fieldname, sep, column = item.partition("=")
        if not sep or not fieldname.strip() or not column.strip():
            raise click.BadParameter(f"{item!r} is not FIELD=COLUMN", param_hint="--column")
        mapping[fieldname.strip()] = column.strip()
    try:
        options = read_options(
            schema,
            columns=mapping,
            date_order=date_order,
            postcodes=postcodes,
            blank_invalid=blank_invalid,
        )
    except HeadcountError as exc:
        raise click.BadParameter(str(exc), param_hint="--column") from None
    if dedup:
        if len(files) != 1:
            raise click.BadParameter("--dedup takes exactly one file", param_hint="FILES")
        _dedup_one(files[0], out_path, threshold, schema, executor, seed, options)
        return
    if len(files) < 2:
        raise click.BadParameter(
            "give two or more files to link, or one with --dedup", param_hint="FILES"
        )
    summary = link_files(
        list(files),
        out_path,
        threshold=threshold,
        schema=schema,
        progress=lambda m: click.echo(m, err=True),
        executor=executor,
        seed=seed,
        options=options,
    )
    for party, n in summary.records.items():
        _echo_read(party, n, summary.reports[party])
    _echo_encodings(summary.clk_fields, summary.match_keys)
    r = summary.result
    for a, b in r.links:
        q = r.quality.get((a, b))
        est = (
            f"est. precision {q.est_precision:.3f}, recall {q.est_recall:.3f}"
            if q
            else "too few candidates to estimate quality"
        )
        click.echo(
            f"  {a} x {b}: {r.links[(a, b)]} links ({r.key_links.get((a, b), 0)} by match-key),"
            f" threshold {r.thresholds[(a, b)]:.3f}, {est}"
        )
    click.echo(
        f"{summary.pairs_written} linked pairs in {summary.clusters} clusters -> {summary.out}"
    )


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--all",
    "run_all",
    is_flag=True,
    help="Run every attack and every privacy game (about 20 minutes on 2 cores).",
)
@click.option(
    "--games",
    "run_games",
    is_flag=True,
    help="Run (with --list: list) only the privacy games (game-*).",
)
@click.option("--list", "list_only", is_flag=True, help="List the attacks and exit.")
@click.option(
    "--trials",
    type=click.IntRange(1),
    default=None,
    help="Trials per privacy game (default: each game's own).",
)
@click.option(
    "--people",
    default=3000,
    show_default=True,
    type=click.IntRange(500),
    help="Synthetic population of the attacked federation.",
)
@click.option("--seed", default=5, show_default=True, type=int, help="Random seed.")
def attack(
    names: tuple[str, ...],
    run_all: bool,
    run_games: bool,
    list_only: bool,
    trials: int | None,
    people: int,
    seed: int,
) -> None:
    """Run the attack suite against a live local federation and print what each
    attacker knew and achieved. Every attack must fail, or its residual success
    is measured and shown. Privacy games (game-*, run with --all, --games or
    by name) print their trials, success rate, the Clopper-Pearson 95% lower
    bound on epsilon they prove and the epsilon the federation publishes.
    Exit code 1 if any attack succeeded or any game's bound exceeds the
    published epsilon.
    """
    from headcount.attacks import attack_names, game_names, run_attacks

    if list_only:
        click.echo("\n".join(game_names() if run_games else attack_names()))
        return
    chosen = list(names)
    if run_all:
        chosen = attack_names() + game_names()
    results = run_attacks(
        chosen,
        people=people,
        seed=seed,
        progress=lambda m: click.echo(m, err=True),
        games=run_games,
        trials=trials,
    )
    attacks = [r for r in results if not r.is_game]
    played = [r for r in results if r.is_game]
    if attacks:
        click.echo(f"{'attack':<27} {'attacker':<32} {'success':>7} {'target':>7}  outcome")
    for r in attacks:
        click.echo(
            f"{r.name:<27} {r.attacker:<32} {r.success_rate:7.1%} {'<=' + f'{r.accepted:.0%}':>7}"
            f"  {'' if r.defended else 'NOT DEFENDED: '}{r.outcome}"
        )
        click.echo(f"{'':<27} knows: {r.knows}")
    if played:
        if attacks:
            click.echo("")
        click.echo(
            f"{'game':<24} {'trials':>6} {'success':>8} {'eps >= (95%)':>12} "
            f"{'published':>9}  verdict"
        )
    for r in played:
        verdict = "within" if r.defended else "EXCEEDS THE PUBLISHED EPSILON"
        click.echo(
            f"{r.name:<24} {r.trials or 0:>6} {r.success_rate:8.1%} {r.epsilon_bound or 0.0:12.2f} "
            f"{r.epsilon_claimed or 0.0:9.2f}  {verdict}"
        )
        click.echo(f"{'':<24} attacker: {r.attacker}")
        click.echo(f"{'':<24} knows: {r.knows}")
        click.echo(f"{'':<24} {r.outcome}")
    if not all(r.defended for r in results):
        sys.exit(1)


cli.add_command(register)  # the public transparency register (headcount/register/)
cli.add_command(report)  # linkage quality reports (headcount/report/)


# -- demo -------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--people",
    default=DEFAULT_DEMO_PEOPLE,
    show_default=True,
    type=click.IntRange(50),
    help="Synthetic population size.",
)
@click.option("--seed", default=2026, show_default=True, type=int, help="Random seed.")
@click.option(
    "--dir",
    "directory",
    default=Path(".headcount-demo"),
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Working directory (recreated on each run).",
)
@click.option(
    "--paillier-bits",
    default="2048",
    show_default=True,
    type=click.Choice(["1024", "2048", "3072"]),
    help="Paillier key size (1024 only for quick tests).",
)
@click.option(
    "--register-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of the transparency register while the demo runs (0: any free port).",
)
@click.option(
    "--serve/--no-serve",
    default=False,
    show_default=True,
    help="After the demo, keep serving the transparency register until Ctrl-C.",
)
@click.option(
    "--longitudinal/--no-longitudinal",
    default=True,
    show_default=True,
    help="Also run the children-across-time part (yearly snapshots as parties).",
)
def demo(
    people: int,
    seed: int,
    directory: Path,
    paillier_bits: str,
    register_port: int,
    serve: bool,
    longitudinal: bool,
) -> None:
    """Run a whole federation on this machine: CA, synthetic population, four
    party nodes, a coordinator and the transparency register as separate
    processes, key ceremony, one linkage epoch, the demo queries, the linkage
    quality report and the children-across-time tables; print the protected
    tables and where the report and register are; stop (or, with --serve, keep
    serving the register)."""
    from headcount.demo import run_demo
    from headcount.register.server import serve as serve_register

    result = run_demo(
        directory,
        people=people,
        seed=seed,
        paillier_bits=int(paillier_bits),
        register_port=register_port,
        longitudinal=longitudinal,
        echo=click.echo,
    )
    if serve and result.register is not None:
        serve_register(
            result.register.parent,
            port=register_port or 8088,
            ready=lambda url: click.echo(f"transparency register at {url} (Ctrl-C to stop)"),
        )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
