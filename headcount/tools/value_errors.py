"""One recording error on one value: the error tables behind `headcount.tools.corrupt`.

Keyboard neighbours (QWERTY), OCR confusions, spellings by ear, and the date
errors (day and month exchanged, a day or a year off, a day the month does not
have). `corrupt_value` applies one named error to one value; the module doc of
`headcount.tools.corrupt` lists which errors each kind of column takes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from headcount.errors import InvalidRequest

__all__ = [
    "APPLIES",
    "DEFAULT_ERRORS",
    "DEFAULT_WEIGHTS",
    "ERRORS",
    "KINDS",
    "corrupt_value",
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
APPLIES: dict[str, frozenset[str]] = {
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
    if kind not in APPLIES:
        raise InvalidRequest(f"kind must be one of {list(KINDS)}")
    if error not in APPLIES[kind]:
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
