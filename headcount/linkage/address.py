"""Addresses to keyed household keys, so records of one household link across
departments without any address leaving a node.

An address is normalised (case, accents, punctuation, common UK street-type
abbreviations, flat prefixes wherever they stand) and joined with the
normalised postcode; the household key is HMAC-SHA256 of that string under a
key derived from the linkage secret, truncated to 16 bytes. A record with no
postcode borrows one only from its own file (see :func:`household_keys`);
otherwise records with no postcode or no address get no key: they join no
household.

Exact keys (rather than a Bloom filter) because a household is defined by
sharing one address; fuzzy address matching would merge neighbours. A person
recorded at an old address in one department gets that address's key here;
the coordinator later resolves one household per person from the keys of the
person's linked records (`headcount.linkage.households`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HOUSEHOLD_KEY_BYTES = 16

# Canonical short forms, as Royal Mail and most registers abbreviate them.
_STREET_TYPES: dict[str, str] = {
    "road": "rd",
    "street": "st",
    "saint": "st",
    "avenue": "ave",
    "lane": "ln",
    "drive": "dr",
    "close": "cl",
    "court": "ct",
    "place": "pl",
    "crescent": "cres",
    "gardens": "gdns",
    "terrace": "ter",
    "square": "sq",
    "grove": "gr",
    "park": "pk",
    "mount": "mt",
    "parade": "pde",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
}
_FLAT_WORDS = {"flat", "apartment", "apt", "unit", "studio"}
# Hyphens and full stops separate words ("Stratford-upon-Avon", "St.John's");
# apostrophes do not ("John's" = "Johns").
_SEPARATORS = re.compile(r"[\s,;/.\-\u2010-\u2015]+")
_RUNS = re.compile(r"[0-9]+|[a-z]+")
# Letters NFKD does not decompose into a base letter plus a mark.
_LETTERS = {"ł": "l", "ø": "o", "đ": "d", "ð": "d", "æ": "ae", "œ": "oe", "ı": "i", "þ": "th"}


def _fold(text: str) -> str:
    """Lower-case ASCII letters and digits only: accents folded, the rest dropped."""
    out = []
    for ch in unicodedata.normalize("NFKD", text.casefold()):
        if "a" <= ch <= "z" or "0" <= ch <= "9":
            out.append(ch)
        elif ch in _LETTERS:
            out.append(_LETTERS[ch])
    return "".join(out)


def _is_designator(runs: list[str]) -> bool:
    """A flat's number or letter: "7", "7b", "a" (not a word such as "road")."""
    return runs[0].isdigit() or (len(runs) == 1 and len(runs[0]) == 1)


def _word(run: str) -> str:
    # "07" = "7"; street types to their short forms.
    return (run.lstrip("0") or "0") if run.isdigit() else _STREET_TYPES.get(run, run)


def normalise_address(address: str) -> str:
    """Lower-case ASCII words with street types abbreviated, flat first; "" when blank.

    ``"Flat 7, 72 Whittaker Road"``, ``"flat 7 72 whittaker rd"`` and
    ``"72 Whittaker Road, Flat 07"`` all give ``"7 72 whittaker rd"``; ``"12B"``
    and ``"12 b"`` agree too, as do ``"St John's Rd"`` and ``"Saint-Johns Road"``.
    Never raises; the result is a fixed point of this function.
    """
    # Digit and letter runs are words of their own, so "12B" = "12 b".
    tokens = [runs for raw in _SEPARATORS.split(address) if (runs := _RUNS.findall(_fold(raw)))]
    flat: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(tokens):
        runs = tokens[i]
        i += 1
        if runs[0] not in _FLAT_WORDS:
            words.extend(_word(r) for r in runs if r not in _FLAT_WORDS)
            continue
        # The flat's designator follows its word ("Flat7", "Flat 7"); it goes
        # first wherever the flat stands, so "72 X Rd, Flat 7" = "Flat 7, 72 X Rd".
        designator = runs[1:]
        if not designator and i < len(tokens) and _is_designator(tokens[i]):
            designator = tokens[i]
            i += 1
        flat.extend(_word(r) for r in designator if r not in _FLAT_WORDS)
    return " ".join(flat + words)


def household_secret(secret: bytes) -> bytes:
    """The key for household keys, separate from every CLK field key."""
    if len(secret) < 32:
        raise ValueError("the linkage secret must be at least 32 bytes")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"headcount/household/v1"
    ).derive(secret)


def household_keys(
    addresses: Sequence[str],
    postcodes: Sequence[str],
    secret: bytes,
    localities: Sequence[str] | None = None,
) -> list[bytes]:
    """One 16-byte keyed household key per record, or b"" when it has none.

    ``postcodes`` are already normalised (upper case, no spaces). A record with
    an address but no postcode takes the postcode of the records of the same
    call (one department's file) at the same normalised address, and the same
    locality when ``localities`` (e.g. local authorities, one per record) are
    given, if they all have one postcode; otherwise, like a record with no
    address, it gets b"". The fallback uses nothing but the node's own file, so
    the keys a node sends look the same as before and it learns nothing from
    any other party; each record still has at most one key.
    """
    if localities is None:
        localities = [""] * len(addresses)
    key = household_secret(secret)
    norms = [normalise_address(a) for a in addresses]
    # (locality, address) -> postcodes the file records there.
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for norm, postcode, place in zip(norms, postcodes, localities, strict=True):
        if norm and postcode:
            seen[(place, norm)].add(postcode)
    out: list[bytes] = []
    for norm, postcode, place in zip(norms, postcodes, localities, strict=True):
        if norm and not postcode:
            found = seen.get((place, norm), set())
            # Only an unambiguous postcode: two would mean two households.
            postcode = next(iter(found)) if len(found) == 1 else ""
        if not norm or not postcode:
            out.append(b"")
            continue
        message = f"{postcode}|{norm}".encode()
        out.append(hmac.new(key, message, hashlib.sha256).digest()[:HOUSEHOLD_KEY_BYTES])
    return out
