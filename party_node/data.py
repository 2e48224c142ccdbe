"""Reading and checking a department file at the node that holds it.

The whole file is checked before anything is stored, and every problem found
(up to ``MAX_PROBLEMS``) is reported at once with file, line and column, so a
data steward can fix a file in one pass. Nothing in this module logs a value.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from headcount.departments import ATTRIBUTES, IDENTITY_COLUMNS, age_band, columns
from headcount.errors import InvalidInput, InvalidRequest
from headcount.linkage.address import normalise_address
from headcount.linkage.normalise import (
    DATE_ORDERS,
    POSTCODE_STYLES,
    DateOrder,
    Identity,
    accepted_date_formats,
    detect_date_order,
    normalise_date,
    normalise_name,
    normalise_postcode,
    normalise_reference,
    normalise_sex,
    salvage_date,
)
from headcount.linkage.schema import INPUT_FIELDS, InputSpec

MAX_PROBLEMS = 20
MAX_FILE_BYTES = 4 * 2**30


class DepartmentFileError(InvalidInput):
    """A department file failed its checks.

    ``str(exc)`` names file, line, column and the kind of problem but no value,
    so it is safe to send to the coordinator; ``detail`` quotes the values and
    is for the data steward's own terminal only.
    """

    def __init__(self, message: str, *, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DepartmentData:
    """A checked department file: identities for encoding, attributes for queries."""

    party: str
    path: Path
    sha256: bytes  # of the file's bytes, to detect a changed file
    identities: tuple[Identity, ...]
    addresses: tuple[str, ...]  # raw address lines, for keyed household keys only
    attributes: pd.DataFrame  # one column per attribute, strings, row order = file order
    report: ReadReport | None = None  # date order found, values blanked

    @property
    def records(self) -> int:
        return len(self.identities)


def file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


_SEX_LABELS = {"f": "female", "m": "male", "": "not_recorded"}


def _age_bands(identities: Sequence[Identity], reference: dt.date) -> list[str]:
    """Each record's age band at ``reference``; "" where the date of birth is missing
    or after the reference date (such a record matches no age filter)."""
    out = []
    for ident in identities:
        if not ident.date_of_birth:
            out.append("")
            continue
        born = dt.date.fromisoformat(ident.date_of_birth)
        age = (
            reference.year - born.year - ((reference.month, reference.day) < (born.month, born.day))
        )
        out.append(age_band(age) if age >= 0 else "")
    return out


class _Problems:
    """Problems found in one file, each kept redacted and detailed.

    The redacted form (no values) may travel to the coordinator inside an
    error status; the detailed form (values quoted) is shown only to the data
    steward at the node by ``headcount node check``.
    """

    def __init__(self, path: Path, line_of: Sequence[int]) -> None:
        self.path, self.line_of = path, line_of
        self.items: list[tuple[str, str]] = []

    def add(self, row: int, column: str, message: str, redacted: str | None = None) -> None:
        # Line numbers count the header as line 1, as a text editor shows them.
        where = f"{self.path}: line {self.line_of[row]}, column {column!r}: "
        self.items.append((where + (redacted or message), where + message))

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_PROBLEMS]
        more = (
            f"\n  ... and more (first {MAX_PROBLEMS} shown)"
            if len(self.items) > MAX_PROBLEMS
            else ""
        )
        head = f"{self.path}: {len(shown)} problem(s) found; nothing was stored:\n  "
        raise DepartmentFileError(
            head + "\n  ".join(r for r, _ in shown) + more,
            detail=head + "\n  ".join(d for _, d in shown) + more,
        )


def _read_table(
    path: Path, expected: Sequence[str], what: str
) -> tuple[bytes, pd.DataFrame, list[int]]:
    """The file's bytes, its rows as strings, and the line each row ends on."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidInput(f"{path}: file not found") from None
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path}: file is {size} bytes; the limit is {MAX_FILE_BYTES}")
    raw = path.read_bytes()
    text = _decode(path, raw)
    if not text.strip():
        raise InvalidInput(f"{path}: file is empty; expected a header row {list(expected)}")
    # The csv module (not pandas) so that a row with the wrong number of fields
    # is reported by its line, rather than silently shifted into an index.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    body: list[list[str]] = []
    line_of: list[int] = []  # file line on which each data row ends
    try:
        header = [h.strip() for h in next(reader)]
        for r in reader:
            if not r:
                continue
            if len(r) != len(header):
                raise InvalidInput(
                    f"{path}: line {reader.line_num}: not a well-formed CSV file: "
                    f"{len(r)} fields where the header has {len(header)}"
                )
            body.append(r)
            line_of.append(reader.line_num)
    except csv.Error as exc:
        raise InvalidInput(
            f"{path}: line {reader.line_num}: not a well-formed CSV file: {exc}"
        ) from None
    if len(set(header)) != len(header):
        raise InvalidInput(f"{path}: line 1: a column name appears twice")
    frame = pd.DataFrame(body, columns=header, dtype=str)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{path}: line 1: missing column(s) {missing}; {what} has {list(expected)}"
        )
    return raw, frame, line_of


IDENTITY_FIELDS = INPUT_FIELDS  # the fields a file's columns can fill
# Fields a file may lack without saying so: they are read as blank.
EXTRA_FIELDS = frozenset({"address", "locality", "reference"})


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How identity columns are read.

    Attributes:
        date_order: ``"auto"`` (found per file by `detect_date_order`, day-first
            when nothing tells), ``"day-first"`` or ``"month-first"``.
        postcodes: ``"uk"`` (UK shape checked) or ``"any"`` (any country's code).
        blank_invalid: blank a date, sex or postcode that cannot be read, and
            keep a record with neither name (both counted in the report),
            instead of refusing the file.
        columns: identity field -> the file's column(s) holding it (default:
            the field's own name); several columns (an address in parts) are
            joined with a space.
        optional: identity fields whose columns the file may lack (read as
            blank); ``EXTRA_FIELDS`` always are.
    """

    date_order: str = "auto"
    postcodes: str = "uk"
    blank_invalid: bool = False
    columns: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.date_order not in ("auto", *DATE_ORDERS):
            raise InvalidRequest(f"date order must be auto, {' or '.join(DATE_ORDERS)}")
        if self.postcodes not in POSTCODE_STYLES:
            raise InvalidRequest(f"postcodes must be one of {list(POSTCODE_STYLES)}")
        unknown = sorted(set(self.columns) - {*IDENTITY_FIELDS, "record_id"})
        if unknown:
            raise InvalidRequest(
                f"unknown identity field(s) {unknown}; the fields are {list(IDENTITY_FIELDS)}"
            )

    @property
    def record_column(self) -> str:
        """The column holding each record's id (``record_id`` unless mapped)."""
        return self.sources("record_id")[0]

    def source(self, name: str) -> str:
        """The column(s) of field ``name`` as one label, for messages."""
        return "+".join(self.sources(name))

    def sources(self, name: str) -> tuple[str, ...]:
        given = self.columns.get(name, name)
        return (given,) if isinstance(given, str) else tuple(given)

    def may_lack(self, name: str) -> bool:
        return name in self.optional or name in EXTRA_FIELDS


@dataclass(frozen=True, slots=True)
class ReadReport:
    """What reading one file's identities decided, for the data steward."""

    date_order: DateOrder
    blanked: dict[str, int]  # source column -> invalid values blanked
    absent: tuple[str, ...]  # identity fields the file has no column for
    nameless: int = 0  # records with neither name, kept (with blank_invalid)


def _check_identities(
    frame: pd.DataFrame, problems: _Problems, options: ReadOptions = ReadOptions()
) -> tuple[list[Identity], ReadReport]:
    """Unique record ids and normalised identities, recording every problem."""
    id_column = options.record_column
    ids = frame[id_column].str.strip()
    for row in frame.index[ids == ""]:
        problems.add(int(row), id_column, "the record id is empty")
    dup = ids[(ids != "") & ids.duplicated(keep="first")]
    for row, value in dup.items():
        first = int(ids[ids == value].index[0])
        problems.add(
            int(str(row)),
            id_column,
            f"duplicate record id (first seen on line {problems.line_of[first]})",
        )
    absent = tuple(f for f in IDENTITY_FIELDS if not set(options.sources(f)) <= set(frame.columns))

    def joined(name: str) -> list[str]:
        if name in absent:
            return [""] * len(frame)
        parts = [frame[c].tolist() for c in options.sources(name)]
        if len(parts) == 1:
            return parts[0]
        return [" ".join(p.strip() for p in row if p.strip()) for row in zip(*parts, strict=True)]

    values = {f: joined(f) for f in IDENTITY_FIELDS}
    if options.date_order == "auto":
        # With blank_invalid a file that mixes styles is read in its majority
        # order, and the dates that order cannot read are blanked and counted.
        order = detect_date_order(values["date_of_birth"], strict=False)
        if not options.blank_invalid:
            try:
                detect_date_order(values["date_of_birth"])
            except InvalidInput as exc:
                problems.add(0, options.source("date_of_birth"), str(exc))
    else:
        order = DateOrder(options.date_order, 0, 0, True)
    normalisers: dict[str, Callable[[str], str]] = {
        "first_name": normalise_name,
        "last_name": normalise_name,
        "date_of_birth": lambda v: normalise_date(v, order.order),
        "sex": normalise_sex,
        "postcode": lambda v: normalise_postcode(v, options.postcodes),
        "address": normalise_address,
        "locality": normalise_name,
        "reference": normalise_reference,
    }
    blanked: dict[str, int] = {}
    nameless = 0
    identities: list[Identity] = []
    for row in range(len(frame)):
        fields: dict[str, str] = {}
        for name, fn in normalisers.items():
            column = options.source(name)
            try:
                fields[name] = fn(values[name][row])
            except InvalidInput as exc:
                fields[name] = ""
                if options.blank_invalid:
                    blanked[column] = blanked.get(column, 0) + 1
                    if name == "date_of_birth":
                        _salvage_into(fields, salvage_date(values[name][row], order.order))
                else:
                    problems.add(row, column, str(exc), _redacted(name, order.order))
        if not fields["first_name"] and not fields["last_name"]:
            if options.blank_invalid:
                nameless += 1  # kept: it may still link on its other fields
            else:
                problems.add(
                    row, options.source("first_name"), "both first and last name are empty"
                )
        identities.append(Identity(**fields))
        if problems.full:
            break
    return identities, ReadReport(order, blanked, absent, nameless)


def _salvage_into(fields: dict[str, str], partial: str) -> None:
    """Keep what could be read of an unreadable date: the whole date when
    reading misread letters as digits made it one, else its readable parts."""
    try:
        fields["date_of_birth"] = dt.date.fromisoformat(partial).isoformat()
    except ValueError:
        fields["birth_partial"] = partial


def _redacted(name: str, order: str) -> str:
    """A problem's text without the value: what may leave the node."""
    if name == "date_of_birth":
        return f"value is not a recognisable date (accepted: {accepted_date_formats(order)})"
    return f"value is not a recognisable {name}"


LINK_FILE_COLUMNS = ("record_id", "first_name", "last_name", "date_of_birth", "sex", "postcode")


@dataclass(frozen=True, slots=True)
class IdentityFile:
    """A file read for linkage: record ids, identities, and what reading decided."""

    record_ids: list[str]
    identities: list[Identity]
    report: ReadReport


def read_identity_file(path: Path, options: ReadOptions = ReadOptions()) -> IdentityFile:
    """Record ids and identities from any CSV (columns named by ``options``).

    For ``headcount link-files``: the same checks and normalisation as a
    department file, without a department's attribute contract. The file needs
    ``record_id`` and the columns of every identity field not in
    ``options.optional``; others are ignored. Raises DepartmentFileError
    (every problem with line and column) or InvalidInput.
    """
    need = [options.record_column] + [
        c for f in IDENTITY_FIELDS if not options.may_lack(f) for c in options.sources(f)
    ]
    _, frame, line_of = _read_table(path, need, "a file to link")
    problems = _Problems(path, line_of)
    identities, report = _check_identities(frame, problems, options)
    problems.raise_if_any()
    return IdentityFile(frame[options.record_column].str.strip().tolist(), identities, report)


def load_identity_file(path: Path) -> tuple[list[str], list[Identity]]:
    """Record ids and identities from a CSV with ``LINK_FILE_COLUMNS`` (others ignored)."""
    read = read_identity_file(path)
    return read.record_ids, read.identities


def department_options(spec: InputSpec, *, blank_invalid: bool = False) -> ReadOptions:
    """How a department file's identities are read under the schema's ``[input]``:
    its date order and postcode style (and the party's ``blank_invalid``). A
    department file's column names are fixed by its contract
    (`headcount.departments`), so the mapping is not used."""
    return ReadOptions(
        date_order=spec.date_order, postcodes=spec.postcodes, blank_invalid=blank_invalid
    )


def load_department_file(
    path: Path,
    party: str,
    reference_date: dt.date | None = None,
    options: ReadOptions = ReadOptions(),
) -> DepartmentData:
    """Read and check ``party``'s file; InvalidInput naming file, line and column.

    Derived attributes (``age_band``, ``sex``) come from the identity columns;
    ages are at ``reference_date`` (default: today). ``options`` (see
    `department_options`) sets the date order and the postcode style.
    """
    if party not in ATTRIBUTES:
        raise InvalidInput(f"{path}: no file contract for department {party!r}")
    raw, frame, line_of = _read_table(path, columns(party), f"a {party} file")
    problems = _Problems(path, line_of)
    problem = problems.add
    identities, report = _check_identities(frame, problems, options)

    for attr in ATTRIBUTES[party]:
        col = frame[attr.name].str.strip()
        if attr.is_numeric:
            nums = pd.to_numeric(col, errors="coerce")
            bad = col[(col != "") & nums.isna()]
            for row, value in bad.head(MAX_PROBLEMS).items():
                problem(
                    int(str(row)), attr.name, f"expected a number, got {value!r}", "not a number"
                )
            lo, hi = attr.minimum, attr.maximum
            out = nums[
                (nums < (lo if lo is not None else -float("inf")))
                | (nums > (hi if hi is not None else float("inf")))
            ]
            for row in out.head(MAX_PROBLEMS).index:
                problem(int(str(row)), attr.name, f"value out of range [{lo}, {hi}]")
        else:
            allowed = set(attr.categories)
            bad = col[(col != "") & ~col.isin(allowed)]
            for row, value in bad.head(MAX_PROBLEMS).items():
                problem(
                    int(str(row)),
                    attr.name,
                    f"{value!r} is not one of {list(attr.categories)} (or empty)",
                    f"value is not one of {list(attr.categories)} (or empty)",
                )
        frame[attr.name] = col

    problems.raise_if_any()
    attrs = frame[[a.name for a in ATTRIBUTES[party]]].reset_index(drop=True)
    attrs["age_band"] = _age_bands(identities, reference_date or dt.date.today())
    attrs["sex"] = [_SEX_LABELS[i.sex] for i in identities]
    assert set(IDENTITY_COLUMNS) <= set(frame.columns)
    return DepartmentData(
        party,
        path,
        hashlib.sha256(raw).digest(),
        tuple(identities),
        tuple(frame["address"].tolist()),
        attrs,
        report,
    )
