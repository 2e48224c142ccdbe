"""Normalise raw identifiers into the canonical form the encoders hash.

Every party must turn the same person into the same strings before encoding, or
keyed encodings of one child will never meet. Normalisation therefore folds the
variation that departments' systems introduce (case, accents, punctuation,
titles, date formats, postcode spacing) and rejects values it cannot interpret,
rather than guessing: a silently mangled date links the wrong child.

Name variants (nicknames, transliterations) are not handled here yet; the
Bloom-filter encoding tolerates small spelling differences instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

from headcount.errors import InvalidInput

__all__ = [
    "Identity",
    "normalise_date",
    "normalise_identity",
    "normalise_name",
    "normalise_postcode",
    "normalise_sex",
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
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Formats departments actually send, tried in order. They cannot disagree on a
# value: the four-digit year sits in a different place in each numeric format,
# and the compact form is only tried on exactly eight digits (see normalise_date).
# %b and %B read English month names under the default C locale, which this
# module assumes (nothing in Headcount calls locale.setlocale).
_DATE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d-%m-%Y",
    "%d %b %Y",
    "%d %B %Y",
)
_COMPACT_DATE_RE = re.compile(r"\d{8}")

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
    ``YYYY-MM-DD``; sex is ``"f"``, ``"m"``; the postcode is upper case without
    spaces. Any field may be ``""`` when missing.

    Raises:
        ValueError: a field is not already in canonical form (a programming
            error: raw user data goes through `normalise_identity`).
    """

    first_name: str
    last_name: str
    date_of_birth: str
    sex: str
    postcode: str

    def __post_init__(self) -> None:
        for field in ("first_name", "last_name"):
            if not _NAME_RE.fullmatch(getattr(self, field)):
                raise ValueError(f"{field} is not a normalised name")
        if self.date_of_birth:
            if not _ISO_DATE_RE.fullmatch(self.date_of_birth):
                raise ValueError("date_of_birth is not an ISO date")
            date.fromisoformat(self.date_of_birth)  # raises ValueError if impossible
        if self.sex not in ("", "f", "m"):
            raise ValueError("sex must be 'f', 'm' or ''")
        if self.postcode and not _POSTCODE_RE.fullmatch(self.postcode):
            raise ValueError("postcode is not a normalised UK postcode")


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


def normalise_date(raw: str) -> str:
    """Parse a date of birth into ISO ``YYYY-MM-DD``; ``""`` when blank.

    Accepted formats (surrounding whitespace ignored): ``2011-03-07``,
    ``07/03/2011``, ``07-03-2011``, ``07 Mar 2011``, ``07 March 2011`` and
    ``20110307``. Day-first throughout, as in UK data.

    Raises:
        InvalidInput: the value is in none of these formats, or names a date that
            does not exist (``2011-02-30``).
    """
    text = raw.strip()
    if not text:
        return ""
    if _COMPACT_DATE_RE.fullmatch(text):
        # strptime's %m and %d accept one digit, so "%Y%m%d" would read "2011111"
        # ambiguously; only an exact eight-digit string is taken as compact.
        return _parse_date(text, ("%Y%m%d",), raw)
    return _parse_date(text, _DATE_FORMATS, raw)


def _parse_date(text: str, formats: tuple[str, ...], raw: str) -> str:
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise InvalidInput(f"unrecognised or impossible date of birth {raw!r}")


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


def normalise_postcode(raw: str) -> str:
    """Canonicalise a UK postcode: upper case, spaces and punctuation removed.

    ``"sw1a 1aa"`` gives ``"SW1A1AA"``; blank gives ``""``.

    Raises:
        InvalidInput: the value is not blank but is not shaped like a UK
            postcode once cleaned.
    """
    cleaned = _NON_ALNUM_RE.sub("", raw.strip()).upper()
    if not cleaned and not raw.strip():
        return ""
    if not _POSTCODE_RE.fullmatch(cleaned):
        raise InvalidInput(f"not a UK postcode {raw!r}")
    return cleaned


def normalise_identity(
    first_name: str, last_name: str, date_of_birth: str, sex: str, postcode: str
) -> Identity:
    """Normalise one record's raw identifiers into an `Identity`.

    Raises:
        InvalidInput: the date, sex or postcode cannot be interpreted (the
            message quotes the offending value).
    """
    return Identity(
        first_name=normalise_name(first_name),
        last_name=normalise_name(last_name),
        date_of_birth=normalise_date(date_of_birth),
        sex=normalise_sex(sex),
        postcode=normalise_postcode(postcode),
    )
