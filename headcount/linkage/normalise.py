"""Normalise raw identifiers into the canonical form the encoders hash.

Every party must turn the same person into the same strings before encoding, or
keyed encodings of one child will never meet. Normalisation therefore folds the
variation that departments' systems introduce (case, accents, punctuation,
titles, date formats, postcode spacing) and rejects values it cannot interpret,
rather than guessing: a silently mangled date links the wrong child.

Name variants (nicknames) are folded by `canonical_first_name`, which the
deterministic match-keys use; the Bloom-filter encodings keep the recorded name
and tolerate small spelling differences instead.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from nicknames import name_triplets

from headcount.errors import InvalidInput

__all__ = [
    "DATE_ORDERS",
    "POSTCODE_STYLES",
    "DateOrder",
    "Identity",
    "accepted_date_formats",
    "canonical_first_name",
    "detect_date_order",
    "is_uk_postcode",
    "name_variants",
    "normalise_date",
    "normalise_identity",
    "normalise_name",
    "normalise_postcode",
    "normalise_reference",
    "normalise_sex",
    "salvage_date",
]

# Letters that NFKD leaves whole (they are letters in their own right, not a base
# letter plus a combining mark), mapped to what an English-language clerk would type.
_FOLD: dict[str, str] = {
    "ł": "l",
    "ø": "o",
    "đ": "d",
    "ð": "d",
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "ı": "i",
    "þ": "th",
    "ŧ": "t",
    "ħ": "h",
}

# Characters that separate name parts ("Mary-Jane", "Smith/Jones", "Smith,John"):
# they become a space. Every other non-letter (apostrophes, dots, digits) is
# dropped, so "O'Brien" and "OBrien" meet.
_SEPARATORS = frozenset("-_/,;&+")
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr"})

_NAME_RE = re.compile(r"(?:[a-z]+(?: [a-z]+)*)?")
_ADDRESS_RE = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?")
_REFERENCE_RE = re.compile(r"[A-Z0-9]{0,32}")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Date styles, by the order of day and month. Year-first and textual forms are
# unambiguous and accepted in every order; numeric day/month/year forms are read
# in the order the file uses, which `detect_date_order` finds per file (never
# guessed per value: 04/05/2011 means one thing throughout a file). %b and %B
# read English month names under the default C locale, which this module
# assumes (nothing in Headcount calls locale.setlocale).
DATE_ORDERS = ("day-first", "month-first")
_YEAR_FIRST: tuple[str, ...] = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d")
_NUMERIC: dict[str, tuple[str, ...]] = {
    "day-first": ("%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y"),
    "month-first": ("%m/%d/%Y", "%m-%d-%Y", "%m.%d.%Y"),
}
_TEXTUAL: tuple[str, ...] = ("%d %b %Y", "%d %B %Y", "%b %d %Y", "%B %d %Y")
_DATE_FORMATS: tuple[str, ...] = _YEAR_FIRST + _NUMERIC["day-first"] + _TEXTUAL[:2]
_COMPACT_DATE_RE = re.compile(r"\d{8}")
_NUMERIC_DATE_RE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-]\d{4}")
_SHOWN = {
    "day-first": "DD/MM/YYYY, DD-MM-YYYY, DD.MM.YYYY",
    "month-first": "MM/DD/YYYY, MM-DD-YYYY, MM.DD.YYYY",
}


def accepted_date_formats(order: str = "day-first") -> str:
    """The date styles `normalise_date` accepts in ``order``, for error messages."""
    return (
        "YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD, YYYYMMDD, "
        + _SHOWN[order]
        + ", 7 Mar 2011, 7 March 2011, Mar 7 2011"
    )


_SEX_CODES: dict[str, str] = {
    "f": "f",
    "female": "f",
    "w": "f",
    "woman": "f",
    "girl": "f",
    "m": "m",
    "male": "m",
    "man": "m",
    "boy": "m",
    "": "",
    "u": "",
    "unknown": "",
    "not known": "",
    "not stated": "",
    # ISO/IEC 5218, which NHS and DfE extracts use: 0 not known, 1 male,
    # 2 female, 9 not applicable.
    "0": "",
    "1": "m",
    "2": "f",
    "9": "",
}

# UK postcode without its space: outward code (area letters, district digit, optional
# district letter/digit) then inward code (sector digit, two unit letters), plus the
# Girobank special case. Deliberately a little looser than the Royal Mail letter
# restrictions so that a real but unusual code is never rejected.
_POSTCODE_RE = re.compile(r"(?:[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}|GIR0AA)")
_NON_ALNUM_RE = re.compile(r"[^0-9A-Za-z]")


@dataclass(frozen=True, slots=True)
class Identity:
    """One person's identifiers in canonical form; build with `normalise_identity`.

    Names hold lowercase ``a-z`` words separated by single spaces; the date is ISO
    ``YYYY-MM-DD``; sex is ``"f"``, ``"m"``; the postcode is 2-10 upper-case
    letters and digits (a UK or any other country's code). Any field may be ``""`` when missing.

    Raises:
        ValueError: a field is not already in canonical form (a programming
            error: raw user data goes through `normalise_identity`).
    """

    first_name: str
    last_name: str
    date_of_birth: str
    sex: str
    postcode: str
    # Fields a schema may add for files that hold them (blank otherwise): the
    # address line(s) as `normalise_address` gives them, the locality (town,
    # suburb) as a name, and a reference number in upper-case letters and digits.
    address: str = ""
    locality: str = ""
    reference: str = ""
    # What could be read of a date of birth that is not a date (``1996-09-51``,
    # ``1985-06-Z6``), kept when a file is read with invalid values blanked:
    # ``YYYY-MM-DD`` with ``0000``/``00`` for the parts that could not be
    # read (`salvage_date`); only when ``date_of_birth`` is blank.
    birth_partial: str = ""

    def __post_init__(self) -> None:
        for field in ("first_name", "last_name"):
            if not _NAME_RE.fullmatch(getattr(self, field)):
                raise ValueError(f"{field} is not a normalised name")
        if self.date_of_birth:
            if not _ISO_DATE_RE.fullmatch(self.date_of_birth):
                raise ValueError("date_of_birth is not an ISO date")
            date.fromisoformat(self.date_of_birth)  # raises ValueError if impossible
        if self.birth_partial and (
            self.date_of_birth or not _ISO_DATE_RE.fullmatch(self.birth_partial)
        ):
            raise ValueError("birth_partial is YYYY-MM-DD, and only beside a blank date_of_birth")
        if self.sex not in ("", "f", "m"):
            raise ValueError("sex must be 'f', 'm' or ''")
        if self.postcode and not _ANY_POSTCODE_RE.fullmatch(self.postcode):
            raise ValueError("postcode is not a normalised postcode")
        if not _ADDRESS_RE.fullmatch(self.address):
            raise ValueError("address is not a normalised address")
        if not _NAME_RE.fullmatch(self.locality):
            raise ValueError("locality is not a normalised name")
        if not _REFERENCE_RE.fullmatch(self.reference):
            raise ValueError("reference is not a normalised reference number")


def normalise_name(raw: str) -> str:
    """Fold a personal name to lowercase ASCII words separated by single spaces.

    Accents are folded (``é`` to ``e``, ``ł`` to ``l``, ``ß`` to ``ss``), hyphens
    and similar separators become spaces, other punctuation and digits are
    dropped, and the titles mr, mrs, ms, miss and dr are removed. Letters outside
    the Latin script are dropped too, so such a name may normalise to ``""``.
    Never raises; the result is a fixed point of this function.
    """
    # casefold first: it maps "ẞ" and "ß" to "ss" and upper-case "Ł" to "ł".
    folded = unicodedata.normalize("NFKD", raw.casefold())
    chars: list[str] = []
    for ch in folded:
        if "a" <= ch <= "z":
            chars.append(ch)
        elif ch in _FOLD:
            chars.append(_FOLD[ch])
        elif ch in _SEPARATORS or ch.isspace() or unicodedata.category(ch) == "Pd":
            chars.append(" ")
        # Anything else (combining marks left by NFKD, apostrophes, dots, digits,
        # other scripts) carries no spelling a clerk would reproduce: drop it.
    words = "".join(chars).split()
    return " ".join(w for w in words if w not in _TITLES)


def normalise_date(raw: str, order: str = "day-first") -> str:
    """Parse a date of birth into ISO ``YYYY-MM-DD``; ``""`` when blank.

    Accepted (surrounding whitespace ignored): year first with ``-``, ``/`` or
    ``.`` (``2011-03-07``), compact ``20110307``, English month names
    (``7 Mar 2011``, ``March 7 2011``), and numeric day and month in ``order``
    (``"day-first"``: ``07/03/2011``, ``07-03-2011``, ``07.03.2011``;
    ``"month-first"``: ``03/07/2011`` and so on). `detect_date_order` finds a
    file's order.

    Raises:
        InvalidInput: the value is in none of these formats, or names a date that
            does not exist (``2011-02-30``); the message lists the accepted styles.
    """
    if order not in _NUMERIC:
        raise ValueError(f"order must be one of {DATE_ORDERS}")
    text = raw.strip()
    if not text:
        return ""
    if _COMPACT_DATE_RE.fullmatch(text):
        # strptime's %m and %d accept one digit, so "%Y%m%d" would read "2011111"
        # ambiguously; only an exact eight-digit string is taken as compact.
        return _parse_date(text, ("%Y%m%d",), raw, order)
    return _parse_date(text, _YEAR_FIRST + _NUMERIC[order] + _TEXTUAL, raw, order)


def _parse_date(text: str, formats: tuple[str, ...], raw: str, order: str) -> str:
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise InvalidInput(
        f"unrecognised or impossible date of birth {raw!r}"
        f" (accepted: {accepted_date_formats(order)})"
    )


# Letters a scanner or a hurried clerk puts for digits (O for 0, l for 1, ...):
# read back as the digit before a date's parts are judged.
_OCR_DIGITS = str.maketrans("OoDQIlizZSsbBGgq", "0000111225568699")
_DATE_PARTS_RE = re.compile(r"(\w{1,4})[/.-](\w{1,4})[/.-](\w{1,4})")


def salvage_date(raw: str, order: str = "day-first") -> str:
    """The parts of an unreadable numeric date that can still be read.

    For a value `normalise_date` refuses (``1996-09-51``, ``1985-06-Z6``,
    ``30/02/2001``), letters commonly misread for digits are read as those
    digits (``O`` as 0, ``l`` as 1, ``Z`` as 2, ``S`` as 5, ...); then the
    year (four digits, 1000-2999), month (1-12) and day (1-31) that are each
    valid on their own, as
    ``YYYY-MM-DD`` with ``0000`` or ``00`` for the others; ``""`` when no part
    is readable or the value has no day/month/year shape. A clerk's slip in
    one part then costs the record that part, not its whole date of birth.
    """
    if order not in _NUMERIC:
        raise ValueError(f"order must be one of {DATE_ORDERS}")
    text = raw.strip().translate(_OCR_DIGITS)
    if len(text) == 8 and "/" not in text and "-" not in text and "." not in text:
        year, month, day = text[:4], text[4:6], text[6:8]
    elif (m := _DATE_PARTS_RE.fullmatch(text)) is not None:
        a, b, c = m.groups()
        if len(a) == 4:
            year, month, day = a, b, c
        elif len(c) == 4:
            year, (day, month) = c, ((a, b) if order == "day-first" else (b, a))
        else:
            return ""
    else:
        return ""

    def number(part: str, low: int, high: int, width: int) -> str:
        if not part.isascii() or not part.isdigit() or not low <= int(part) <= high:
            return "0" * width
        return f"{int(part):0{width}d}"

    parts = (number(year, 1000, 2999, 4), number(month, 1, 12, 2), number(day, 1, 31, 2))
    return "" if parts == ("0000", "00", "00") else "-".join(parts)


@dataclass(frozen=True, slots=True)
class DateOrder:
    """The order of day and month in one file's numeric dates, and the evidence."""

    order: str  # "day-first" or "month-first"
    day_first: int  # values only a day-first reading makes valid (first part > 12)
    month_first: int  # values only a month-first reading makes valid
    decided: bool  # False: no value told the orders apart; ``order`` is the default

    def describe(self) -> str:
        if not self.decided:
            return f"{self.order} (no date in the file tells day from month; the default)"
        return f"{self.order} ({max(self.day_first, self.month_first)} dates can only be read so)"


def detect_date_order(
    values: Iterable[str], default: str = "day-first", *, strict: bool = True
) -> DateOrder:
    """The numeric date order one file uses, found from its values.

    A value like ``25/03/2011`` is only valid day-first, ``03/25/2011`` only
    month-first; ``04/05/2011`` could be either and counts for neither. A file
    whose unambiguous values all (or all but 1%, typos) agree is read in that
    order; one with no unambiguous value is read in ``default``.

    With ``strict`` off, such a file is read in its majority order instead
    (the caller blanks what that order cannot read).

    Raises:
        InvalidInput: (strict) more than 1% of the unambiguous values disagree
            with the rest: the file mixes styles, and reading it either way would
            silently misread dates (the message gives both counts, no value).
    """
    if default not in _NUMERIC:
        raise ValueError(f"default must be one of {DATE_ORDERS}")
    day = month = 0
    for value in values:
        m = _NUMERIC_DATE_RE.fullmatch(value.strip())
        if m is None:
            continue
        a, b = int(m.group(1)), int(m.group(2))
        if 12 < a <= 31 and 1 <= b <= 12:
            day += 1
        elif 12 < b <= 31 and 1 <= a <= 12:
            month += 1
    if day == month == 0:
        return DateOrder(default, 0, 0, False)
    if strict and min(day, month) > 0.01 * (day + month):
        raise InvalidInput(
            f"dates are written both day-first ({day} values) and month-first ({month} values);"
            " fix the file or state the order (--date-order)"
        )
    return DateOrder("day-first" if day >= month else "month-first", day, month, True)


def normalise_sex(raw: str) -> str:
    """Map a recorded sex to ``"f"``, ``"m"`` or ``""`` (not known).

    Case and surrounding whitespace are ignored. Female, F, W, Woman, Girl and
    ISO/IEC 5218 ``2`` give ``"f"``; Male, M, Man, Boy and ``1`` give ``"m"``;
    blank, U, Unknown, Not known, Not stated, ``0`` and ``9`` give ``""``.

    Raises:
        InvalidInput: any other value.
    """
    key = " ".join(raw.split()).casefold()
    try:
        return _SEX_CODES[key]
    except KeyError:
        raise InvalidInput(f"unrecognised sex {raw!r}") from None


POSTCODE_STYLES = ("uk", "any")
_ANY_POSTCODE_RE = re.compile(r"[A-Z0-9]{2,10}")


def normalise_postcode(raw: str, style: str = "uk") -> str:
    """Canonicalise a postcode: upper case, spaces and punctuation removed.

    ``style`` ``"uk"`` checks the shape of a UK postcode (``"sw1a 1aa"`` gives
    ``"SW1A1AA"``); ``"any"`` takes any country's code of 2 to 10 letters and
    digits once cleaned (``"2600"``, ``"75008"``, ``"K1A 0B1"``, ``"1012 AB"``).
    Blank gives ``""``.

    Raises:
        InvalidInput: the value is not blank but does not have that shape.
    """
    if style not in POSTCODE_STYLES:
        raise ValueError(f"style must be one of {POSTCODE_STYLES}")
    cleaned = _NON_ALNUM_RE.sub("", raw.strip()).upper()
    if not cleaned and not raw.strip():
        return ""
    if style == "any":
        if not _ANY_POSTCODE_RE.fullmatch(cleaned):
            raise InvalidInput(f"not a postcode (2-10 letters and digits) {raw!r}")
        return cleaned
    if not _POSTCODE_RE.fullmatch(cleaned):
        raise InvalidInput(f'not a UK postcode {raw!r} (use postcodes "any" for other countries)')
    return cleaned


def is_uk_postcode(postcode: str) -> bool:
    """Whether a normalised postcode has a UK shape (so an outward code exists)."""
    return bool(_POSTCODE_RE.fullmatch(postcode))


def normalise_reference(raw: str) -> str:
    """A reference number (national id, case or pupil number): upper-case letters
    and digits, spaces and punctuation removed; ``""`` when blank.

    Raises:
        InvalidInput: more than 32 letters and digits remain, or none do from a
            value that was not blank.
    """
    cleaned = _NON_ALNUM_RE.sub("", unicodedata.normalize("NFKD", raw)).upper()
    if not raw.strip():
        return ""
    if not cleaned or len(cleaned) > 32 or not cleaned.isascii():
        raise InvalidInput(f"not a reference number (1-32 letters and digits) {raw!r}")
    return cleaned


def normalise_identity(
    first_name: str,
    last_name: str,
    date_of_birth: str,
    sex: str,
    postcode: str,
    *,
    date_order: str = "day-first",
    postcodes: str = "uk",
) -> Identity:
    """Normalise one record's raw identifiers into an `Identity` (dates read in
    ``date_order``, postcodes checked as ``postcodes``: see `normalise_postcode`).

    Raises:
        InvalidInput: the date, sex or postcode cannot be interpreted (the
            message quotes the offending value).
    """
    return Identity(
        first_name=normalise_name(first_name),
        last_name=normalise_name(last_name),
        date_of_birth=normalise_date(date_of_birth, date_order),
        sex=normalise_sex(sex),
        postcode=normalise_postcode(postcode, postcodes),
    )


def canonical_first_name(name: str) -> str:
    """Fold a first name to one representative of its nickname group.

    The name is normalised with `normalise_name` first, so raw text is accepted.
    Each word is then replaced by its group's canonical form (see
    `name_variants`): "Bill" and "Robert" both give ``"robert"``, "Tommy" gives
    ``"thomas"``; in "Mary Ann" each word is folded separately. Words the
    nickname table does not know are kept as they are.

    Returns:
        Lowercase ``a-z`` words separated by single spaces, possibly ``""``; a
        fixed point of this function. Never raises.
    """
    canonical = _nickname_table()[0]
    return " ".join(canonical.get(word, word) for word in normalise_name(name).split())


def name_variants(first_name: str) -> tuple[str, ...]:
    """Every known name sharing ``first_name``'s canonical form, sorted.

    Groups come from the ``nicknames`` package (a maintained table of English
    nicknames, about 1,100 formal names). For a one-word name the result holds
    the normalised name itself and every single-word name in the table whose
    `canonical_first_name` is the same; a name the table does not know gives
    just itself. A name of several words gives just its normalised form: the
    product of per-word groups is not expanded. Blank (or wholly non-Latin)
    input gives ``()``. Never raises.
    """
    normalised = normalise_name(first_name)
    if not normalised:
        return ()
    if " " in normalised:
        return (normalised,)
    canonical, groups = _nickname_table()
    return groups.get(canonical.get(normalised, normalised), (normalised,))


# Rank used to orient the nickname graph: a name with more nicknames is taken as
# the more formal one, then the longer ("thomas" over "tom"), then the
# alphabetically first. A total order, so the result does not depend on the
# order of the package's rows or on set iteration (hash randomisation).
def _formality(name: str, nicknames: dict[str, set[str]]) -> tuple[int, int, tuple[int, ...]]:
    return (len(nicknames.get(name, ())), len(name), tuple(-ord(c) for c in name))


@functools.cache
def _nickname_table() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(name -> canonical form, canonical form -> sorted group) for the table.

    Built once per process from the ``nicknames`` package's ``has_nickname``
    rows. The raw table lists many pairs both ways round ("tom" has nickname
    "thomas" and "thomas" has nickname "tom") and many nicknames under several
    formal names ("al" under albert, alexander, alfred, ...), so its undirected
    components chain unrelated names together (one holds over a thousand names,
    making "maria" a variant of "sarah"). Instead each edge is kept only from
    the more formal name to the less formal one (see `_formality`), which makes
    the graph acyclic, and a name's canonical form is found by repeatedly
    moving to its most formal parent until a name with no parent is reached.
    That is deterministic, idempotent (a root maps to itself), and never joins
    two formal names that the table does not link. An ambiguous nickname goes
    to one of its formal names only, so "sam" meets "samantha" but not
    "samuel"; the Bloom-filter stage still scores such pairs.
    """
    nicknames: dict[str, set[str]] = {}
    for formal, relationship, nickname in name_triplets():
        if relationship != "has_nickname":
            continue
        # Initials ("l.r.") would fold into unrelated words ("lr"); only plain
        # one-word names take part.
        if not (formal.isalpha() and nickname.isalpha()):
            continue
        a, b = normalise_name(formal), normalise_name(nickname)
        if a and b and a != b and " " not in a + b:
            nicknames.setdefault(a, set()).add(b)
    parents: dict[str, list[str]] = {}
    for formal, nicks in nicknames.items():
        rank = _formality(formal, nicknames)
        for nick in nicks:
            if rank > _formality(nick, nicknames):
                parents.setdefault(nick, []).append(formal)
    best_parent = {
        nick: max(options, key=lambda n: _formality(n, nicknames))
        for nick, options in parents.items()
    }
    canonical: dict[str, str] = {}
    for name in _all_names(nicknames):
        root = name
        # Each step strictly increases _formality, so this terminates.
        while root in best_parent:
            root = best_parent[root]
        canonical[name] = root
    members: dict[str, list[str]] = {}
    for name, root in canonical.items():
        members.setdefault(root, []).append(name)
    groups = {root: tuple(sorted(names)) for root, names in members.items()}
    return canonical, groups


def _all_names(nicknames: dict[str, set[str]]) -> Iterable[str]:
    return sorted(set(nicknames).union(*nicknames.values()))
