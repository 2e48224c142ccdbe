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

Everything flows from one seed (numpy's ``Generator``): the same input, spec
and seed give byte-identical output.

Command line::

    python -m headcount.tools.corrupt IN.csv OUT.csv \\
        --columns first_name=name,last_name=name,date_of_birth=date,postcode=code \\
        --rate 0.3 --seed 1 --id-column record_id --truth truth.csv
"""

from __future__ import annotations

import argparse
import calendar
import csv
import datetime as dt
import io
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcount.errors import HeadcountError, InvalidInput, InvalidRequest

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

KINDS = ("name", "date", "code", "text")
ERRORS = (
    "keyboard",
    "insert",
    "delete",
    "transpose",
    "ocr",
    "phonetic",
    "missing",
    "swap",
    "date_transpose",
    "date_shift",
    "invalid_date",
    "truncate",
)
_CHARACTER = frozenset({"keyboard", "insert", "delete", "transpose", "ocr", "missing", "truncate"})
_APPLIES: dict[str, frozenset[str]] = {
    "name": _CHARACTER | {"phonetic"},
    "text": _CHARACTER | {"phonetic"},
    "code": _CHARACTER,
    "date": frozenset(
        {
            "keyboard",
            "transpose",
            "ocr",
            "missing",
            "date_transpose",
            "date_shift",
            "invalid_date",
        }
    ),
}
# Impossible dates make a reader refuse or blank the value, which is a
# different test from a misspelling: asked for explicitly.
DEFAULT_ERRORS = frozenset(ERRORS) - {"invalid_date"}
# Relative frequency of each error among those a record's columns can take.
# Keying slips dominate hand-entered registers; truncation is the rarest.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "keyboard": 3.0,
    "insert": 1.0,
    "delete": 1.5,
    "transpose": 1.5,
    "ocr": 1.0,
    "phonetic": 2.0,
    "missing": 1.5,
    "swap": 1.0,
    "date_transpose": 1.5,
    "date_shift": 1.5,
    "invalid_date": 1.0,
    "truncate": 0.5,
}
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


# --- keyboard, OCR and phonetic tables ------------------------------------------

# QWERTY rows with each row's horizontal offset in key widths; two keys are
# neighbours when side by side or touching on the row above or below.
_KEY_ROWS = (("1234567890", 0.0), ("qwertyuiop", 0.5), ("asdfghjkl", 0.75), ("zxcvbnm", 1.25))


def _keyboard_neighbours() -> dict[str, str]:
    where = {
        ch: (r, c + offset)
        for r, (keys, offset) in enumerate(_KEY_ROWS)
        for c, ch in enumerate(keys)
    }
    out: dict[str, str] = {}
    for ch, (r, x) in where.items():
        near = []
        for other, (r2, x2) in where.items():
            if other == ch or other.isdigit() != ch.isdigit():
                continue  # digits are typed among digits, letters among letters
            if (r2 == r and abs(x2 - x) == 1) or (abs(r2 - r) == 1 and abs(x2 - x) <= 0.75):
                near.append(other)
        out[ch] = "".join(sorted(near))
    return out


_NEIGHBOURS = _keyboard_neighbours()

# Confusions of optical character recognition, each read both ways.
_OCR_PAIRS = (
    ("0", "O"),
    ("0", "o"),
    ("0", "D"),
    ("1", "l"),
    ("1", "I"),
    ("l", "I"),
    ("5", "S"),
    ("8", "B"),
    ("2", "Z"),
    ("6", "b"),
    ("rn", "m"),
    ("cl", "d"),
    ("vv", "w"),
    ("ri", "n"),
    ("li", "h"),
    ("e", "c"),
    ("u", "v"),
)
_OCR: dict[str, tuple[str, ...]] = {}
for _a, _b in _OCR_PAIRS:
    _OCR[_a] = (*_OCR.get(_a, ()), _b)
    _OCR[_b] = (*_OCR.get(_b, ()), _a)
_OCR_RE = re.compile("|".join(sorted(map(re.escape, _OCR), key=len, reverse=True)))

# Spellings by ear, matched on the lower-cased value: (pattern, replacement).
_PHONETIC: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        ("ph", "f"),
        (r"(?<=[aeiou])f", "ph"),
        ("ck", "k"),
        (r"(?<=[aeiou])k", "ck"),
        (r"ie\b", "y"),
        (r"(?<=[^aeiou])y\b", "ie"),
        (r"ey\b", "y"),
        (r"c(?=[aou])", "k"),
        (r"k(?=[aou])", "c"),
        (r"(?<=[aeiou])s(?=[aeiou])", "z"),
        (r"z", "s"),
        ("ee", "ea"),
        ("ea", "ee"),
        ("ai", "ay"),
        ("ay", "ai"),
        (r"(?<=\w)th", "t"),
        (r"(?<=[aeiou])t(?=[aeiou])", "th"),
        ("ei", "ie"),
        (r"(?<=\w)ie(?=\w)", "ei"),
        ("x", "ks"),
        ("ks", "x"),
        (r"(?<=\w)y(?=\w)", "i"),
        (r"(?<=\w)i(?=\w)", "y"),
    )
)
_DOUBLED_RE = re.compile(r"([b-df-hj-np-tv-z])\1")
_DOUBLABLE_RE = re.compile(r"(?<=[aeiou])([bdfglmnprst])(?=[aeiouy])")
_VOWEL_RE = re.compile(r"(?<=\w)[aeiou]")
_VOWEL_SWAPS = {"a": "eo", "e": "ai", "i": "ey", "o": "au", "u": "o"}


def _match_case(source: str, replacement: str) -> str:
    """``replacement`` in the case ``source`` was written in."""
    letters = [c for c in source if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and (len(letters) > 1 or len(source) == 1):
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


# --- dates ----------------------------------------------------------------------

_YEAR_FIRST_RE = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})")
_COMPACT_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_YEAR_LAST_RE = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})")


@dataclass(frozen=True, slots=True)
class _DateText:
    """A date as written: its parts and how to write other parts the same way."""

    year: int
    month: int
    day: int
    layout: str  # "ymd", "dmy" or "mdy"
    sep: str  # "" for YYYYMMDD
    lead: str  # text around the date (whitespace), kept as it was
    trail: str

    def render(self, year: int, month: int, day: int) -> str:
        y, m, d = f"{year:04d}", f"{month:02d}", f"{day:02d}"
        parts = {"ymd": (y, m, d), "dmy": (d, m, y), "mdy": (m, d, y)}[self.layout]
        return self.lead + self.sep.join(parts) + self.trail

    def valid(self) -> bool:
        return _is_date(self.year, self.month, self.day)


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _parse_date(value: str, order: str) -> _DateText | None:
    text = value.strip()
    lead, trail = value[: len(value) - len(value.lstrip())], value[len(value.rstrip()) :]
    if m := _COMPACT_RE.fullmatch(text):
        return _DateText(int(m[1]), int(m[2]), int(m[3]), "ymd", "", lead, trail)
    if m := _YEAR_FIRST_RE.fullmatch(text):
        return _DateText(int(m[1]), int(m[3]), int(m[4]), "ymd", m[2], lead, trail)
    if m := _YEAR_LAST_RE.fullmatch(text):
        a, b = int(m[1]), int(m[3])
        if order == "day-first":
            return _DateText(int(m[4]), b, a, "dmy", m[2], lead, trail)
        return _DateText(int(m[4]), a, b, "mdy", m[2], lead, trail)
    return None


# --- one error on one value -----------------------------------------------------


def _eligible(ch: str, kind: str) -> bool:
    """Characters an error may land on: letters in names and text, digits in dates."""
    if kind == "date":
        return ch.isdigit()
    if kind == "code":
        return ch.isalnum()
    return ch.isalpha()


def _pick(rng: np.random.Generator, n: int) -> int:
    return int(rng.integers(n))


def _positions(value: str, kind: str) -> list[int]:
    return [i for i, ch in enumerate(value) if _eligible(ch, kind)]


def _keyboard(value: str, kind: str, rng: np.random.Generator) -> str | None:
    spots = [i for i in _positions(value, kind) if _NEIGHBOURS.get(value[i].lower())]
    if not spots:
        return None
    i = spots[_pick(rng, len(spots))]
    near = _NEIGHBOURS[value[i].lower()]
    new = near[_pick(rng, len(near))]
    return value[:i] + (new.upper() if value[i].isupper() else new) + value[i + 1 :]


def _insert(value: str, kind: str, rng: np.random.Generator) -> str | None:
    spots = _positions(value, kind)
    if not spots:
        return None
    i = spots[_pick(rng, len(spots))]
    ch = value[i]
    near = _NEIGHBOURS.get(ch.lower(), "")
    # Half the time the key is pressed twice, else a neighbour is caught too.
    new = ch.lower() if not near or rng.random() < 0.5 else near[_pick(rng, len(near))]
    new = new.upper() if ch.isupper() and value[i + 1 : i + 2].isupper() else new
    at = i + int(rng.integers(2))  # before or after the key it came with
    return value[:at] + new + value[at:]


def _delete(value: str, kind: str, rng: np.random.Generator) -> str | None:
    spots = _positions(value, kind)
    if len(spots) < 2:
        return None
    i = spots[_pick(rng, len(spots))]
    return value[:i] + value[i + 1 :]


def _transpose(value: str, kind: str, rng: np.random.Generator) -> str | None:
    spots = [
        i
        for i in range(len(value) - 1)
        if _eligible(value[i], kind)
        and _eligible(value[i + 1], kind)
        and value[i].lower() != value[i + 1].lower()
    ]
    if not spots:
        return None
    i = spots[_pick(rng, len(spots))]
    a, b = value[i], value[i + 1]
    if a.isupper() and b.islower():  # "Smith" -> "Msith" would be odd; keep the capital first
        a, b = a.lower(), b.upper()
    return value[:i] + b + a + value[i + 2 :]


def _ocr(value: str, kind: str, rng: np.random.Generator) -> str | None:
    found = list(_OCR_RE.finditer(value))
    if not found:
        return None
    m = found[_pick(rng, len(found))]
    options = _OCR[m.group()]
    return value[: m.start()] + options[_pick(rng, len(options))] + value[m.end() :]


def _phonetic(value: str, kind: str, rng: np.random.Generator) -> str | None:
    low = value.lower()
    edits: list[tuple[int, int, str]] = []
    for pattern, repl in _PHONETIC:
        edits.extend((m.start(), m.end(), repl) for m in pattern.finditer(low))
    edits.extend((m.start(), m.end(), m.group()[0]) for m in _DOUBLED_RE.finditer(low))
    edits.extend((m.start(), m.end(), m.group() * 2) for m in _DOUBLABLE_RE.finditer(low))
    for m in _VOWEL_RE.finditer(low):
        for other in _VOWEL_SWAPS[m.group()]:
            edits.append((m.start(), m.end(), other))
    if not edits:
        return None
    start, end, repl = edits[_pick(rng, len(edits))]
    return value[:start] + _match_case(value[start:end], repl) + value[end:]


def _truncate(value: str, kind: str, rng: np.random.Generator) -> str | None:
    text = value.strip()
    if kind == "name":
        if len(text) < 2:
            return None
        # Half the time the initial alone, as forms with a short field record it.
        keep = 1 if rng.random() < 0.5 else 1 + _pick(rng, len(text) - 1)
    elif kind == "text":
        if len(text) < 4:
            return None
        keep = 3 + _pick(rng, len(text) - 3)
    else:
        if len(text) < 2:
            return None
        keep = 1 + _pick(rng, len(text) - 1)
    return text[:keep].rstrip()


def _date_transpose(value: str, order: str, rng: np.random.Generator) -> str | None:
    d = _parse_date(value, order)
    if d is None or not d.valid() or d.day > 12 or d.day == d.month:
        return None
    return d.render(d.year, d.day, d.month)


def _date_shift(value: str, order: str, rng: np.random.Generator) -> str | None:
    d = _parse_date(value, order)
    if d is None or not d.valid():
        return None
    day = dt.date(d.year, d.month, d.day)
    step = 1 if rng.random() < 0.5 else -1
    if rng.random() < 0.5 and _is_date(d.year + step, d.month, d.day):
        moved = day.replace(year=d.year + step)
    else:
        moved = day + dt.timedelta(days=step)
    return d.render(moved.year, moved.month, moved.day)


def _invalid_date(value: str, order: str, rng: np.random.Generator) -> str | None:
    d = _parse_date(value, order)
    if d is None or not 1 <= d.month <= 12:
        return None
    length = calendar.monthrange(d.year, d.month)[1]
    # A day the month lacks (30 February, 31 April), else a day no month has
    # (a keyed 93): never a month over 12, which in a DD/MM file would read
    # as a month-first date rather than an impossible one.
    if length < 31 and rng.random() < 0.6:
        day = int(rng.integers(length + 1, 32))
    else:
        day = int(rng.integers(32, 100))
    return d.render(d.year, d.month, day)


def corrupt_value(
    value: str, kind: str, error: str, rng: np.random.Generator, *, date_order: str = "day-first"
) -> str | None:
    """``value`` with one ``error`` (see the module's table), or None where it cannot apply.

    ``kind`` is the column's kind (`KINDS`); ``swap`` is a record-level error
    and not taken here. A returned value always differs from ``value``.

    Raises:
        InvalidRequest: an unknown kind or error, or an error the kind does not take.
    """
    if kind not in _APPLIES:
        raise InvalidRequest(f"kind must be one of {list(KINDS)}")
    if error not in _APPLIES[kind]:
        raise InvalidRequest(f"a {kind} column does not take the error {error!r}")
    if not value.strip():
        return None
    new: str | None
    if error == "missing":
        new = ""
    elif error == "date_transpose":
        new = _date_transpose(value, date_order, rng)
    elif error == "date_shift":
        new = _date_shift(value, date_order, rng)
    elif error == "invalid_date":
        new = _invalid_date(value, date_order, rng)
    else:
        new = _CHARACTER_OPS[error](value, kind, rng)
    return None if new == value else new


_CHARACTER_OPS = {
    "keyboard": _keyboard,
    "insert": _insert,
    "delete": _delete,
    "transpose": _transpose,
    "ocr": _ocr,
    "phonetic": _phonetic,
    "truncate": _truncate,
}


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
        (c, e) for c, k in spec.columns.items() for e in ERRORS if e in _APPLIES[k] & spec.errors
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
