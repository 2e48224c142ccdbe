"""``headcount link-files`` and ``headcount corrupt``: linkage of local files,
and errors to test it with."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from headcount.cli.common import echo_json, json_option
from headcount.errors import HeadcountError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from headcount.linkage.matchkeys import MatchKeySpec
    from headcount.linkage.schema import LinkageSchema
    from party_node.data import ReadOptions, ReadReport


def _read_json(records: int, report: ReadReport) -> dict[str, object]:
    return {
        "records": records,
        "date_order": report.date_order.describe(),
        "blanked": dict(report.blanked),
        "nameless": report.nameless,
        "absent": list(report.absent),
    }


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
    as_json: bool,
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
    r = summary.result
    q = r.quality
    if as_json:
        echo_json(
            {
                "file": {path.name: _read_json(summary.records, summary.report)},
                "clk_fields": list(summary.clk_fields),
                "match_keys": [k.name for k in summary.match_keys],
                "candidates": r.candidates,
                "key_pairs": r.key_pairs,
                "refused_merges": r.refused,
                "threshold": r.threshold,
                "est_precision": q.est_precision if q else None,
                "est_recall": q.est_recall if q else None,
                "people": summary.clusters,
                "with_duplicates": summary.duplicated,
                "pairs_written": summary.pairs_written,
                "out": str(summary.out),
            }
        )
        return
    _echo_read(path.name, summary.records, summary.report)
    _echo_encodings(summary.clk_fields, summary.match_keys)
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


@click.command(
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


@click.command("link-files")
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
@json_option
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
    as_json: bool,
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
      headcount link-files a.csv b.csv --out pairs.csv --json

    A schema's [input] table names the columns once (an address may join
    several), the date order and the postcode style; see docs/linkage.md.
    """
    from headcount.linkage.quality import basis_note
    from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
    from headcount.linkage.schema_file import load_schema
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
        _dedup_one(files[0], out_path, threshold, schema, executor, seed, options, as_json)
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
    r = summary.result
    if as_json:
        pairs = []
        for a, b in r.links:
            q = r.quality.get((a, b))
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "links": r.links[(a, b)],
                    "key_links": r.key_links.get((a, b), 0),
                    "threshold": r.thresholds[(a, b)],
                    "est_precision": q.est_precision if q else None,
                    "est_recall": q.est_recall if q else None,
                    "estimate_basis": q.basis if q else None,
                }
            )
        echo_json(
            {
                "files": {
                    party: _read_json(n, summary.reports[party])
                    for party, n in summary.records.items()
                },
                "clk_fields": list(summary.clk_fields),
                "match_keys": [k.name for k in summary.match_keys],
                "pairs": pairs,
                "clusters": summary.clusters,
                "pairs_written": summary.pairs_written,
                "out": str(summary.out),
            }
        )
        return
    for party, n in summary.records.items():
        _echo_read(party, n, summary.reports[party])
    _echo_encodings(summary.clk_fields, summary.match_keys)
    for a, b in r.links:
        q = r.quality.get((a, b))
        est = (
            f"est. precision {q.est_precision:.3f}, recall {q.est_recall:.3f}"
            + (f" ({basis_note(q.basis)})" if basis_note(q.basis) else "")
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
