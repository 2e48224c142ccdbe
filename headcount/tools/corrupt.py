"""Add realistic recording errors to any CSV, reproducibly.

Linkage quality measured on data whose errors the engine was tuned against
says little about data from elsewhere. This tool takes any CSV, a kind for
each column to corrupt (``name``, ``date``, ``code`` or ``text``) and a rate,
and with that probability per record applies one to ``max_errors`` errors
(1 with probability 4/7, 2 with 2/7, 3 with 1/7 for the default of 3), each
drawn from the errors the column's kind can take:

==============  ==================================================  =================
error           what it does                                        kinds
==============  ==================================================  =================
keyboard        a character becomes a neighbouring key (QWERTY;     name, text, code,
                digits the digits beside them)                      date
insert          a neighbouring key or a doubled key pressed         name, text, code
delete          a character dropped                                 name, text, code
transpose       two adjacent characters swapped                     all
ocr             an OCR confusion: 0/O, 1/l/I, 5/S, 8/B, 2/Z, rn/m,  all
                cl/d, vv/w ...
phonetic        a spelling by ear: ph/f, ck/k, ie/y, c/k, ee/ea,    name, text
                th/t, doubled or undoubled letters, swapped vowels
missing         the value blanked                                   all
swap            the two swap columns exchanged (first <-> last      record
                name)
date_transpose  day and month exchanged, only where both readings   date
                are valid dates
date_shift      one day or one year off                             date
invalid_date    a day the month does not have (2001-02-30,          date
                1945-04-93); off unless asked for
truncate        the value cut short (a name to its initial or a     name, text, code
                prefix)
==============  ==================================================  =================

Every applied error changes the value; a record keeps at least one name with
a letter in it. Dates are read as ``YYYY-MM-DD``, ``YYYY/MM/DD``,
``YYYY.MM.DD``, ``YYYYMMDD`` or ``DD/MM/YYYY`` (``MM/DD/YYYY`` with
``date_order="month-first"``) and written back in the layout they came in, so
the file keeps its format; a value in none of these layouts takes only the
character-level errors. The id column is never touched, so the output maps
back to the input; ``new_ids`` replaces it with fresh ids in a shuffled order
and the truth file maps old to new.

The errors on single values live in `headcount.tools.value_errors`; this
module applies them to records, tables and files.

Everything flows from one seed (numpy's ``Generator``): the same input, spec
and seed give byte-identical output.

Command line::

    python -m headcount.tools.corrupt IN.csv OUT.csv \\
        --columns first_name=name,last_name=name,date_of_birth=date,postcode=code \\
        --rate 0.3 --seed 1 --id-column record_id --truth truth.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcount.errors import HeadcountError, InvalidInput, InvalidRequest
from headcount.tools.value_errors import (
    APPLIES,
    DEFAULT_ERRORS,
    DEFAULT_WEIGHTS,
    ERRORS,
    KINDS,
    corrupt_value,
)

__all__ = [
    "DEFAULT_ERRORS",
    "DEFAULT_WEIGHTS",
    "ERRORS",
    "KINDS",
    "Change",
    "CorruptSummary",
    "Corrupted",
    "CorruptionSpec",
    "Table",
    "corrupt_file",
    "corrupt_table",
    "corrupt_value",
    "main",
    "read_table",
    "write_table",
]

_DATE_ORDERS = ("day-first", "month-first")
_SWAP = "swap"


@dataclass(frozen=True, slots=True)
class CorruptionSpec:
    """What to corrupt, how often and how.

    Attributes:
        columns: column name -> kind (one of `KINDS`); other columns are copied.
        rate: probability that a record gets errors, in [0, 1].
        max_errors: most errors one record gets, 1-10 (fewer are likelier).
        errors: the errors to draw from (a subset of `ERRORS`).
        weights: error -> relative frequency (>= 0); missing ones weigh 1.
        swap: the two columns the ``swap`` error exchanges; default the first
            two ``name`` columns, none when there are fewer.
        id_column: a column that is never corrupted (and must not be in ``columns``).
        date_order: how ``NN/NN/YYYY`` dates are read, ``"day-first"`` or
            ``"month-first"``.

    Raises:
        InvalidRequest: any of these out of range or inconsistent.
    """

    columns: Mapping[str, str]
    rate: float
    max_errors: int = 3
    errors: frozenset[str] = DEFAULT_ERRORS
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    swap: tuple[str, str] | None = None
    id_column: str | None = None
    date_order: str = "day-first"

    def __post_init__(self) -> None:
        columns = dict(self.columns)
        if not columns:
            raise InvalidRequest("name at least one column to corrupt")
        bad = sorted(c for c, k in columns.items() if k not in KINDS)
        if bad:
            raise InvalidRequest(f"column(s) {bad}: the kind must be one of {list(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise InvalidRequest("rate must be in [0, 1]")
        if not 1 <= self.max_errors <= 10:
            raise InvalidRequest("max_errors must be 1-10")
        unknown = sorted(set(self.errors) - set(ERRORS))
        if unknown:
            raise InvalidRequest(f"unknown error(s) {unknown}; the errors are {list(ERRORS)}")
        if not self.errors:
            raise InvalidRequest("name at least one error")
        weights = {e: float(self.weights.get(e, 1.0)) for e in ERRORS}
        if sorted(set(self.weights) - set(ERRORS)) or any(w < 0 for w in weights.values()):
            raise InvalidRequest("weights must name known errors and be >= 0")
        if self.id_column is not None and self.id_column in columns:
            raise InvalidRequest(f"the id column {self.id_column!r} cannot also be corrupted")
        if self.date_order not in _DATE_ORDERS:
            raise InvalidRequest(f"date_order must be one of {list(_DATE_ORDERS)}")
        swap = self.swap
        if swap is None:
            names = [c for c, k in columns.items() if k == "name"]
            swap = (names[0], names[1]) if len(names) >= 2 else None
        elif len(swap) != 2 or swap[0] == swap[1] or not set(swap) <= set(columns):
            raise InvalidRequest("swap must name two different columns being corrupted")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "errors", frozenset(self.errors))
        object.__setattr__(self, "swap", swap)


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV in memory: its header and its rows, every value a string.

    Raises:
        InvalidInput: a column name appears twice, or a row's width differs
            from the header's.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(set(self.header)) != len(self.header):
            raise InvalidInput("a column name appears twice in the header")
        width = len(self.header)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise InvalidInput(f"row {i + 1} has {len(row)} fields; the header has {width}")

    def column(self, name: str) -> tuple[str, ...]:
        """The values of column ``name``; KeyError if there is none."""
        if name not in self.header:
            raise KeyError(name)
        k = self.header.index(name)
        return tuple(row[k] for row in self.rows)


@dataclass(frozen=True, slots=True)
class Change:
    """One error applied: data row (0-based), column (``a+b`` for a swap), error name."""

    row: int
    column: str
    error: str


@dataclass(frozen=True, slots=True)
class Corrupted:
    """A corrupted table, every error applied, and the rows that now differ."""

    table: Table
    changes: tuple[Change, ...]
    changed_rows: frozenset[int]

    def errors_of(self, row: int) -> tuple[str, ...]:
        """``column:error`` for each error applied to ``row``, in order."""
        return tuple(f"{c.column}:{c.error}" for c in self.changes if c.row == row)


# --- whole tables -----------------------------------------------------------------


def _error_counts(max_errors: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of errors 1..max and their probabilities, each half the one before."""
    counts = np.arange(1, max_errors + 1)
    p = 0.5 ** (counts - 1.0)
    return counts, p / p.sum()


def corrupt_table(table: Table, spec: CorruptionSpec, seed: int | np.random.Generator) -> Corrupted:
    """``table`` with errors added to about ``spec.rate`` of its records.

    A record drawn for corruption gets 1 to ``spec.max_errors`` errors, each
    chosen with probability proportional to its weight among the (column,
    error) pairs the record's values can take; an error that cannot change its
    value is dropped and another chosen. Deterministic for a given ``seed``
    (an int, or a Generator whose stream is consumed).

    Raises:
        InvalidInput: a column named by ``spec`` (or its id column) is not in the table.
    """
    missing = [c for c in [*spec.columns, spec.id_column] if c and c not in table.header]
    if missing:
        raise InvalidInput(f"column(s) {missing} not in the file; it has {list(table.header)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    where = {c: table.header.index(c) for c in spec.columns}
    names = [where[c] for c, k in spec.columns.items() if k == "name"]
    options: list[tuple[str, str]] = [
        (c, e) for c, k in spec.columns.items() for e in ERRORS if e in APPLIES[k] & spec.errors
    ]
    if spec.swap is not None and _SWAP in spec.errors:
        options.append((_SWAP, _SWAP))
    weight = np.array([spec.weights[e] for _, e in options], dtype=np.float64)

    n = len(table.rows)
    chosen = rng.random(n) < spec.rate
    counts, p = _error_counts(spec.max_errors)
    how_many = rng.choice(counts, size=n, p=p)
    rows: list[tuple[str, ...]] = []
    changes: list[Change] = []
    changed: set[int] = set()
    for r, row in enumerate(table.rows):
        if not chosen[r]:
            rows.append(row)
            continue
        values = list(row)
        for _ in range(int(how_many[r])):
            done = _apply_one(values, row, spec, options, weight, where, names, rng)
            if done is None:
                break
            changes.append(Change(r, *done))
        new = tuple(values)
        if new != row:
            changed.add(r)
        rows.append(new)
    return Corrupted(Table(table.header, tuple(rows)), tuple(changes), frozenset(changed))


def _apply_one(
    values: list[str],
    original: tuple[str, ...],
    spec: CorruptionSpec,
    options: list[tuple[str, str]],
    weight: np.ndarray,
    where: Mapping[str, int],
    names: Sequence[int],
    rng: np.random.Generator,
) -> tuple[str, str] | None:
    """Apply one error to ``values`` in place; (column, error), or None if none can apply.

    An error that would give back ``original`` (undoing the ones before it) is
    not applied, so every record with errors listed differs from its input.
    """
    live = np.array(
        [
            w > 0 and (c == _SWAP or bool(values[where[c]].strip()))
            for (c, _), w in zip(options, weight, strict=True)
        ]
    )
    while live.any():
        w = np.where(live, weight, 0.0)
        k = int(rng.choice(len(options), p=w / w.sum()))
        live[k] = False
        column, error = options[k]
        if error == _SWAP:
            assert spec.swap is not None
            a, b = where[spec.swap[0]], where[spec.swap[1]]
            if values[a].strip() and values[b].strip() and values[a] != values[b]:
                values[a], values[b] = values[b], values[a]
                if tuple(values) != original:
                    return f"{spec.swap[0]}+{spec.swap[1]}", error
                values[a], values[b] = values[b], values[a]
            continue
        i = where[column]
        new = corrupt_value(values[i], spec.columns[column], error, rng, date_order=spec.date_order)
        if new is None:
            continue
        old, values[i] = values[i], new
        # A record keeps a name with a letter in it: a reader refuses (or
        # cannot link) one with no name at all.
        if tuple(values) == original or (
            names and not any(any(ch.isalpha() for ch in values[j]) for j in names)
        ):
            values[i] = old
            continue
        return column, error
    return None


# --- files ------------------------------------------------------------------------


def read_table(path: Path) -> Table:
    """A UTF-8 CSV (byte-order mark allowed) as a `Table`.

    Raises:
        InvalidInput: the file is missing, not UTF-8, empty, or not a well-formed
            CSV (a row with the wrong number of fields).
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        rows = [tuple(r) for r in reader if r]
    except csv.Error as exc:
        raise InvalidInput(
            f"{path}: line {reader.line_num}: not a well-formed CSV: {exc}"
        ) from None
    if header is None:
        raise InvalidInput(f"{path}: file is empty")
    try:
        return Table(tuple(h.strip() for h in header), tuple(rows))
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None


def write_table(table: Table, path: Path) -> None:
    """Write ``table`` as UTF-8 CSV with ``\\n`` line ends (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(table.header)
        writer.writerows(table.rows)


@dataclass(frozen=True, slots=True)
class CorruptSummary:
    """What `corrupt_file` wrote."""

    records: int
    corrupted: int  # records that differ from the input
    errors: int  # errors applied
    out: Path
    truth: Path | None


def corrupt_file(
    in_path: Path,
    out_path: Path,
    spec: CorruptionSpec,
    seed: int,
    *,
    truth_path: Path | None = None,
    new_ids: str | None = None,
) -> CorruptSummary:
    """Corrupt the CSV ``in_path`` into ``out_path`` (see `corrupt_table`).

    ``new_ids`` (a prefix, needs ``spec.id_column``) gives the output fresh ids
    (prefix + a zero-padded number) and shuffles its rows, so neither id nor
    order gives the truth away. ``truth_path`` (needs ``spec.id_column``)
    receives ``id_in,id_out,errors``: one row per record, ``errors`` listing
    ``column:error`` joined by ``;`` (blank for an untouched record).

    Raises:
        InvalidRequest: ``new_ids`` or ``truth_path`` without an id column.
        InvalidInput: the input is unreadable or lacks a named column.
    """
    if (new_ids is not None or truth_path is not None) and spec.id_column is None:
        raise InvalidRequest("new ids and a truth file need an id column")
    corrupt_rng, order_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    table = read_table(in_path)
    result = corrupt_table(table, spec, corrupt_rng)
    rows = list(result.table.rows)
    ids_in = list(table.column(spec.id_column)) if spec.id_column else []
    ids_out = list(ids_in)
    order = list(range(len(rows)))
    if new_ids is not None:
        assert spec.id_column is not None
        k = table.header.index(spec.id_column)
        order = [int(i) for i in order_rng.permutation(len(rows))]
        width = max(6, len(str(len(rows))))
        for position, r in enumerate(order):
            ids_out[r] = f"{new_ids}{position + 1:0{width}d}"
            rows[r] = (*rows[r][:k], ids_out[r], *rows[r][k + 1 :])
    write_table(Table(table.header, tuple(rows[r] for r in order)), out_path)
    if truth_path is not None:
        applied: dict[int, list[str]] = {}
        for c in result.changes:
            applied.setdefault(c.row, []).append(f"{c.column}:{c.error}")
        truth = Table(
            ("id_in", "id_out", "errors"),
            tuple((ids_in[r], ids_out[r], ";".join(applied.get(r, []))) for r in range(len(rows))),
        )
        write_table(truth, truth_path)
    return CorruptSummary(
        len(rows), len(result.changed_rows), len(result.changes), out_path, truth_path
    )


# --- command line -----------------------------------------------------------------


def _columns(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            name, sep, kind = part.partition("=")
            if not part.strip():
                continue
            if not sep or not name.strip() or not kind.strip():
                raise InvalidRequest(f"{part!r} is not COLUMN=KIND")
            out[name.strip()] = kind.strip()
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headcount corrupt",
        description="Add reproducible recording errors to a CSV file.",
        epilog="errors: " + ", ".join(ERRORS) + f"; default all but invalid_date. kinds: {KINDS}",
    )
    parser.add_argument("input", type=Path, help="CSV file to read")
    parser.add_argument("output", type=Path, help="CSV file to write")
    parser.add_argument(
        "--columns",
        action="append",
        required=True,
        metavar="COL=KIND,...",
        help="columns to corrupt and their kind (name, date, code, text); repeatable",
    )
    parser.add_argument("--rate", type=float, required=True, help="share of records to corrupt")
    parser.add_argument("--seed", type=int, required=True, help="seed; same seed, same output")
    parser.add_argument("--max-errors", type=int, default=3, help="most errors a record gets")
    parser.add_argument("--errors", help="comma-separated errors to draw from")
    parser.add_argument("--swap", metavar="COL,COL", help="the two columns 'swap' exchanges")
    parser.add_argument("--id-column", help="column never corrupted (record ids)")
    parser.add_argument("--truth", type=Path, help="write id_in,id_out,errors here")
    parser.add_argument("--new-ids", metavar="PREFIX", help="fresh ids and shuffled rows")
    parser.add_argument(
        "--date-order", choices=_DATE_ORDERS, default="day-first", help="for NN/NN/YYYY dates"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 on a bad argument or file."""
    args = _parser().parse_args(argv)
    try:
        swap = None
        if args.swap:
            parts = tuple(p.strip() for p in args.swap.split(","))
            if len(parts) != 2:
                raise InvalidRequest("--swap takes two columns, COL,COL")
            swap = (parts[0], parts[1])
        errors = DEFAULT_ERRORS
        if args.errors:
            errors = frozenset(e.strip() for e in args.errors.split(",") if e.strip())
        spec = CorruptionSpec(
            columns=_columns(args.columns),
            rate=args.rate,
            max_errors=args.max_errors,
            errors=errors,
            swap=swap,
            id_column=args.id_column,
            date_order=args.date_order,
        )
        summary = corrupt_file(
            args.input,
            args.output,
            spec,
            args.seed,
            truth_path=args.truth,
            new_ids=args.new_ids,
        )
    except HeadcountError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    share = summary.corrupted / summary.records if summary.records else 0.0
    sys.stderr.write(
        f"{summary.corrupted} of {summary.records} records corrupted ({share:.1%}),"
        f" {summary.errors} errors -> {summary.out}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
