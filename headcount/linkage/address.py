"""Addresses to keyed household keys, so records of one household link across
departments without any address leaving a node.

An address is normalised (case, accents, punctuation, common UK street-type
abbreviations, flat prefixes) and joined with the normalised postcode; the
household key is HMAC-SHA256 of that string under a key derived from the
linkage secret, truncated to 16 bytes. Records with no postcode or no address
get no key: they join no household.

Exact keys (rather than a Bloom filter) because a household is defined by
sharing one address; fuzzy address matching would merge neighbours. A person
recorded at an old address in one department is, correctly, not placed in the
household of the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HOUSEHOLD_KEY_BYTES = 16

# Canonical short forms, as Royal Mail and most registers abbreviate them.
_STREET_TYPES: dict[str, str] = {
    "road": "rd",
    "street": "st",
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


def normalise_address(address: str) -> str:
    """Lower-case ASCII words with street types abbreviated; "" when blank.

    ``"Flat 7, 72 Whittaker Road"`` and ``"flat 7 72 whittaker rd"`` both give
    ``"7 72 whittaker rd"``; ``"12B"`` and ``"12 b"`` agree too. Never raises;
    the result is a fixed point of this function.
    """
    words: list[str] = []
    for raw in re.split(r"[\s,;/]+", address):
        # Digit and letter runs are words of their own, so "12B" = "12 b".
        for run in _RUNS.findall(_fold(raw)):
            if run.isdigit():
                words.append(run)
            elif run not in _FLAT_WORDS:
                words.append(_STREET_TYPES.get(run, run))
    return " ".join(words)


def household_secret(secret: bytes) -> bytes:
    """The key for household keys, separate from every CLK field key."""
    if len(secret) < 32:
        raise ValueError("the linkage secret must be at least 32 bytes")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"headcount/household/v1"
    ).derive(secret)


def household_keys(
    addresses: Sequence[str], postcodes: Sequence[str], secret: bytes
) -> list[bytes]:
    """One 16-byte keyed household key per record, or b"" when address or postcode is
    missing. ``postcodes`` are already normalised (upper case, no spaces)."""
    key = household_secret(secret)
    out: list[bytes] = []
    for address, postcode in zip(addresses, postcodes, strict=True):
        norm = normalise_address(address)
        if not norm or not postcode:
            out.append(b"")
            continue
        message = f"{postcode}|{norm}".encode()
        out.append(hmac.new(key, message, hashlib.sha256).digest()[:HOUSEHOLD_KEY_BYTES])
    return out
