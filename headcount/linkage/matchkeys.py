"""Deterministic match-keys: a hierarchy of keyed exact-agreement tokens.

A match-key is a keyed hash of a few normalised fields joined together ("first
name + surname + date of birth + sex + postcode"). Two records agree on a key
exactly when they agree on every field in it, so a key that is unique on both
sides links two records with near-certainty, at the cost of one hash lookup.
National statistics offices link census and administrative data this way
before any probabilistic step (ONS's 2021 Census linkage uses a hierarchy of
such keys), each level looser than the last and aimed at one kind of recording
error: a nickname, a transposed day and month, a typo, a move.

Each key is ``HMAC-SHA256(level key, canonical join)[:16]``, where the level key
is derived by HKDF from the federation's linkage secret with the level's name
and components in the ``info``, so keys of different levels (and of the same
level name with other components) are unrelated, and the coordinator, which
holds no secret, cannot recompute a key for a guessed person. Keys are exact by
construction, so they leak equality: two records of one party with the same
key are visibly the same person (or twins). That is why `match_by_keys` refuses
to use a key value held by more than one record on a side.

This module defines the hierarchy and computes the keys; linking two parties
by them is `headcount.linkage.keylinks`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes as crypto_hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from headcount.linkage.normalise import Identity, canonical_first_name, is_uk_postcode

__all__ = [
    "COMPONENTS",
    "DEFAULT_MATCH_KEYS",
    "EXTRA_MATCH_KEYS",
    "KEY_BYTES",
    "MATCHKEY_VERSION",
    "REQUIRED_GUARDS",
    "SUPPORT_GUARDS",
    "SUPPORT_KEYS",
    "MatchKeySpec",
    "derive_match_keys",
    "derive_support_keys",
    "match_keys",
    "present_fields",
    "support_guards",
]

log = logging.getLogger(__name__)

MATCHKEY_VERSION = "matchkey/v1"
KEY_BYTES = 16  # 128-bit keys: collisions between distinct values are negligible
MIN_SECRET_BYTES = 32
_MAX_LEVELS = 32


def _compact(name: str) -> str:
    # Spaces go, as in the CLK n-grams: "mary ann", "mary-ann" and "maryann"
    # are one name to a clerk.
    return name.replace(" ", "")


def _dob_unordered(iso: str) -> str:
    # Year plus the day and month in sorted order: a date and its day/month
    # transposition (07/03 read as 03/07) give the same value.
    if not iso:
        return ""
    return iso[:4] + "-" + "-".join(sorted((iso[5:7], iso[8:10])))


def _day_month(i: Identity) -> str:
    # The day and month in sorted order (a transposition keeps it), also of a
    # date whose year could not be read; "" unless both were read.
    iso = i.date_of_birth or i.birth_partial
    month, day = iso[5:7], iso[8:10]
    if not iso or "00" in (month, day):
        return ""
    return "-".join(sorted((month, day)))


def _birth_year(i: Identity) -> str:
    # A date whose day or month could not be read still has its year.
    if i.date_of_birth:
        return i.date_of_birth[:4]
    year = i.birth_partial[:4]
    return "" if year == "0000" else year


# Every component a match-key may use: a name and a function from a normalised
# Identity to a canonical string, "" when the record lacks the value. Values
# hold only [a-z0-9A-Z-], so the "\x1f"-joined key text is unambiguous.
COMPONENTS: dict[str, Callable[[Identity], str]] = {
    "first_name": lambda i: _compact(i.first_name),
    "canonical_first_name": lambda i: _compact(canonical_first_name(i.first_name)),
    "first_initial": lambda i: i.first_name[:1],
    "last_name": lambda i: _compact(i.last_name),
    "date_of_birth": lambda i: i.date_of_birth,
    "dob_unordered": lambda i: _dob_unordered(i.date_of_birth),
    "birth_year_month": lambda i: i.date_of_birth[:7],
    "birth_year": lambda i: _birth_year(i),
    "birth_day_month": lambda i: _day_month(i),
    "sex": lambda i: i.sex,
    "postcode": lambda i: i.postcode,
    # Only a UK postcode has an outward code; another country's has none here.
    "postcode_outward": lambda i: i.postcode[:-3] if is_uk_postcode(i.postcode) else "",
    "address": lambda i: i.address.replace(" ", ""),
    "locality": lambda i: _compact(i.locality),
    "reference": lambda i: i.reference,
    # Both names in alphabetical order: a record with first and last name
    # swapped (a clerk's common slip) keeps the same value.
    "names_unordered": lambda i: (
        "-".join(sorted((_compact(i.first_name), _compact(i.last_name))))
        if i.first_name and i.last_name
        else ""
    ),
}


@dataclass(frozen=True, slots=True)
class MatchKeySpec:
    """One level of the match-key hierarchy.

    Attributes:
        name: a short identifier, ``[a-z0-9_]``, 1 to 32 characters; part of
            the key derivation.
        components: two or more distinct names from `COMPONENTS`, in the order
            they are joined.
        tolerates: a human-readable note of the error this level forgives
            (documentation only; not part of the key).

    Raises:
        ValueError: on a bad name, fewer than two components, an unknown or
            repeated component.
    """

    name: str
    components: tuple[str, ...]
    tolerates: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not 1 <= len(self.name) <= 32
            or not all(c.isascii() and (c.isalnum() or c == "_") for c in self.name)
            or self.name != self.name.lower()
        ):
            raise ValueError("match-key name must be 1-32 characters of [a-z0-9_]")
        if not isinstance(self.components, tuple) or len(self.components) < 2:
            raise ValueError(f"match-key {self.name!r} needs a tuple of two or more components")
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise ValueError(
                f"match-key {self.name!r}: unknown component(s) {unknown}; "
                f"known: {sorted(COMPONENTS)}"
            )
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"match-key {self.name!r} repeats a component")
        if not isinstance(self.tolerates, str):
            raise ValueError("tolerates must be a string")

    def info(self) -> bytes:
        """HKDF ``info`` for this level: version, name and components."""
        return f"headcount/{MATCHKEY_VERSION}/{self.name}/{'+'.join(self.components)}".encode(
            "ascii"
        )


# Strictest first. Measured on synthetic education x health extracts (see
# tests/unit/linkage/test_matchkeys.py): every level keeps precision >= 0.995,
# because ambiguous keys are refused and each key still pins down a name, a
# birth date (or most of one) and a place or sex.
DEFAULT_MATCH_KEYS: tuple[MatchKeySpec, ...] = (
    MatchKeySpec(
        "mk1",
        ("first_name", "last_name", "date_of_birth", "sex", "postcode"),
        "formatting only (case, accents, spacing, date and postcode format)",
    ),
    MatchKeySpec(
        "mk2",
        ("canonical_first_name", "last_name", "date_of_birth", "postcode"),
        "a nickname or missing sex",
    ),
    MatchKeySpec(
        "mk3",
        ("canonical_first_name", "last_name", "dob_unordered", "postcode"),
        "day and month transposed",
    ),
    MatchKeySpec(
        "mk4",
        ("first_initial", "last_name", "date_of_birth", "sex"),
        "a first-name typo after the initial, or a moved or missing postcode",
    ),
    MatchKeySpec(
        "mk5",
        ("first_name", "last_name", "date_of_birth", "postcode_outward"),
        "an inward-code typo or a move within the postcode district",
    ),
    MatchKeySpec(
        "mk6",
        ("first_name", "last_name", "birth_year_month", "postcode"),
        "a wrong day of birth",
    ),
    MatchKeySpec(
        "mk7",
        ("first_name", "date_of_birth", "sex", "postcode"),
        "a changed or mistyped surname",
    ),
)


# The identity field each component reads; "postcode_outward" stands for
# itself, as only UK postcodes have an outward code.
_SOURCE_FIELD: dict[str, str] = {
    "first_name": "first_name",
    "canonical_first_name": "first_name",
    "first_initial": "first_name",
    "last_name": "last_name",
    "date_of_birth": "date_of_birth",
    "dob_unordered": "date_of_birth",
    "birth_year_month": "date_of_birth",
    "birth_year": "date_of_birth",
    "birth_day_month": "date_of_birth",
    "sex": "sex",
    "postcode": "postcode",
    "postcode_outward": "postcode_outward",
    "address": "address",
    "locality": "locality",
    "reference": "reference",
    "names_unordered": "last_name",
}
# Levels for fields only some files hold, added by `derive_match_keys` where
# every file holds them. A reference number is exact where both sides record
# it; with the birth year it forgives every error in the names and the rest of
# the date. An address line stands in for a missing or different postcode.
EXTRA_MATCH_KEYS: tuple[MatchKeySpec, ...] = (
    MatchKeySpec("mkref", ("reference", "birth_year"), "any error outside the reference"),
    MatchKeySpec(
        "mkrefname", ("reference", "last_name"), "a wrong or missing date, and any name error"
    ),
    MatchKeySpec("mkswap", ("names_unordered", "date_of_birth"), "first and last name swapped"),
    MatchKeySpec(
        "mkaddr",
        ("first_name", "last_name", "birth_year", "address"),
        "a wrong day or month of birth, or a postcode not recorded",
    ),
    MatchKeySpec(
        "mkloc",
        ("canonical_first_name", "last_name", "date_of_birth", "locality"),
        "a nickname, a postcode or address not recorded",
    ),
)
MIN_DERIVED_COMPONENTS = 3


def present_fields(files: Sequence[Sequence[Identity]], share: float = 0.5) -> frozenset[str]:
    """The identity fields (and ``postcode_outward``) that at least ``share`` of
    the records of every file hold: what a match-key may rely on for these files."""
    present: set[str] | None = None
    for identities in files:
        n = max(1, len(identities))
        counts = {
            "address": sum(1 for i in identities if i.address),
            "locality": sum(1 for i in identities if i.locality),
            "reference": sum(1 for i in identities if i.reference),
            "first_name": sum(1 for i in identities if i.first_name),
            "last_name": sum(1 for i in identities if i.last_name),
            "date_of_birth": sum(1 for i in identities if i.date_of_birth),
            "sex": sum(1 for i in identities if i.sex),
            "postcode": sum(1 for i in identities if i.postcode),
            "postcode_outward": sum(1 for i in identities if is_uk_postcode(i.postcode)),
        }
        here = {f for f, c in counts.items() if c >= share * n}
        present = here if present is None else present & here
    return frozenset(present or ())


def derive_match_keys(
    specs: Sequence[MatchKeySpec],
    present: Collection[str],
    extras: Sequence[MatchKeySpec] = (),
) -> tuple[MatchKeySpec, ...]:
    """The hierarchy ``specs`` becomes for data holding only the ``present`` fields.

    Each level drops the components whose field is absent (a key needing a
    field one side never records finds nothing); a level left with fewer than
    ``MIN_DERIVED_COMPONENTS`` components, or the same components as a stricter
    level, goes. Each of ``extras`` whose fields are all present is added whole
    (the ``mkref`` levels first: an exact reference number is the strictest
    key). Every
    side must derive from the same ``present`` set.
    """
    out: list[MatchKeySpec] = []
    seen: set[tuple[str, ...]] = set()
    for extra in extras:
        held = all(_SOURCE_FIELD[c] in present for c in extra.components)
        if held and extra.name.startswith("mkref"):
            out.append(extra)
            seen.add(extra.components)
    for spec in specs:
        kept = tuple(c for c in spec.components if _SOURCE_FIELD[c] in present)
        if len(kept) < MIN_DERIVED_COMPONENTS or kept in seen:
            continue
        seen.add(kept)
        dropped = [c for c in spec.components if c not in kept]
        note = spec.tolerates + (f" (without {', '.join(dropped)})" if dropped else "")
        out.append(MatchKeySpec(spec.name, kept, note))
    for extra in extras:
        held = all(_SOURCE_FIELD[c] in present for c in extra.components)
        if held and not extra.name.startswith("mkref"):
            if extra.components not in seen and extra.name not in {s.name for s in out}:
                out.append(extra)
                seen.add(extra.components)
    return tuple(out)


# Supporting keys (deduplication): two fields agreeing exactly is not enough
# to call two records one person (a parent and child share a surname and a
# date can be shared by chance in a large file), but beside a CLK score a
# little under the threshold it is. Each pairs a stable identifier with one
# other field, so that one error anywhere else leaves some key intact.
SUPPORT_KEYS: tuple[MatchKeySpec, ...] = (
    MatchKeySpec("supreffirst", ("reference", "first_name"), "a wrong surname or date"),
    MatchKeySpec("suprefpost", ("reference", "postcode"), "wrong names and date"),
    MatchKeySpec("suprefaddr", ("reference", "address"), "wrong names and date"),
    MatchKeySpec("supreflocal", ("reference", "locality"), "wrong names and date"),
    # These two are guarded by the reference number (`SUPPORT_GUARDS`): they
    # are the agreements most often shared by two people by chance (common
    # names and a birth year; first names, which are few, and a date: the
    # birthday problem), the more so the larger the file.
    MatchKeySpec("supnamesyear", ("names_unordered", "birth_year"), "names swapped, day wrong"),
    MatchKeySpec("supfirstdob", ("first_name", "date_of_birth"), "a wrong surname"),
    MatchKeySpec("suplastdob", ("last_name", "date_of_birth"), "a wrong first name"),
    MatchKeySpec("supaddrdob", ("address", "date_of_birth"), "wrong names"),
    # Both names, or the first name, with a place: a parent and child of one
    # name at one address share these, so each is guarded by the date of
    # birth; a record without one conflicts with nobody, and that is the
    # duplicate these keys are for, its date lost.
    MatchKeySpec("supnamesaddr", ("first_name", "last_name", "address"), "a lost date"),
    MatchKeySpec("supnamespost", ("first_name", "last_name", "postcode"), "a lost date, a move"),
    MatchKeySpec("supnamesloc", ("first_name", "last_name", "locality"), "a lost date, a move"),
    MatchKeySpec("supfirstaddr", ("first_name", "address"), "a lost date, a wrong surname"),
    # Guard levels, which support nothing themselves. Within a group agreeing
    # on the first name, two distinct `supfirstyear` values are two birth
    # years and two distinct `supfirstday` values two birthdays; within one
    # agreeing on the birth year (the date of birth), two distinct
    # `suprefyear` (`suprefdob`) values are two reference numbers.
    MatchKeySpec("supfirstyear", ("first_name", "birth_year"), "(a guard)"),
    MatchKeySpec("supfirstday", ("first_name", "birth_day_month"), "(a guard)"),
    MatchKeySpec("suprefyear", ("reference", "birth_year"), "(a guard)"),
    MatchKeySpec("suprefdob", ("reference", "date_of_birth"), "(a guard)"),
)
# Supporting key -> its guard levels, read together: two records sharing the
# key conflict when each holds every guard and they differ on all of them (a
# record lacking a guard's fields conflicts with nobody), and a key shared by
# a group with a conflict in it supports none of the group's pairs: it cannot
# say which of them are one person. A parent and child of one name at one
# address differ in birth year and birthday, where a copy with a mistyped
# year keeps its birthday and one with a mistyped day or month its year. A
# guard fixes only what its key leaves free, given what the key holds.
SUPPORT_GUARDS: dict[str, tuple[str, ...]] = {
    "supnamesyear": ("suprefyear",),
    "supfirstdob": ("suprefdob",),
    "supnamesaddr": ("supfirstyear", "supfirstday"),
    "supnamespost": ("supfirstyear", "supfirstday"),
    "supnamesloc": ("supfirstyear", "supfirstday"),
    "supfirstaddr": ("supfirstyear", "supfirstday"),
}
# Guards a key may not go without: without dates of birth a parent and child
# of one name at one address could not be told apart, so those keys go too.
# A file without reference numbers has none to disagree on.
REQUIRED_GUARDS = frozenset({"supfirstyear", "supfirstday"})


def derive_support_keys(present: Collection[str]) -> tuple[MatchKeySpec, ...]:
    """The `SUPPORT_KEYS` whose fields the data holds (`present_fields`).

    A key goes when one of its `REQUIRED_GUARDS` cannot be derived, and a
    guard level goes when no key it guards is kept.
    """
    held = {
        spec.name
        for spec in SUPPORT_KEYS
        if all(_SOURCE_FIELD[c] in present for c in spec.components)
    }
    guard_levels = {g for guards in SUPPORT_GUARDS.values() for g in guards}
    keys = {
        name
        for name in held - guard_levels
        if all(g in held for g in SUPPORT_GUARDS.get(name, ()) if g in REQUIRED_GUARDS)
    }
    needed = {g for name in keys for g in SUPPORT_GUARDS.get(name, ()) if g in held}
    return tuple(spec for spec in SUPPORT_KEYS if spec.name in keys | needed)


def support_guards(specs: Sequence[MatchKeySpec]) -> dict[int, tuple[int, ...]]:
    """For supporting-key levels ``specs`` (in upload order): the index of each
    guarded level -> the indices of its guard levels present (`SUPPORT_GUARDS`).

    Raises:
        ValueError: a key is present without one of its `REQUIRED_GUARDS`.
    """
    where = {spec.name: i for i, spec in enumerate(specs)}
    out: dict[int, tuple[int, ...]] = {}
    for name, guards in SUPPORT_GUARDS.items():
        if name not in where:
            continue
        missing = [g for g in guards if g in REQUIRED_GUARDS and g not in where]
        if missing:
            raise ValueError(f"supporting key {name!r} needs its guard level(s) {missing}")
        out[where[name]] = tuple(where[g] for g in guards if g in where)
    return out


def match_keys(
    identities: Sequence[Identity],
    secret: bytes,
    specs: Sequence[MatchKeySpec] = DEFAULT_MATCH_KEYS,
) -> list[list[bytes | None]]:
    """Compute every match-key level for every identity.

    Args:
        identities: normalised records.
        secret: the federation linkage secret, at least 32 bytes.
        specs: the hierarchy, strictest first; every party must use the same.

    Returns:
        One list per level (in ``specs`` order) holding, per identity, its
        16-byte key, or ``None`` when the identity lacks a component's value.

    Raises:
        ValueError: ``secret`` is shorter than 32 bytes, ``specs`` is empty or
            longer than 32 levels, or two levels share a name.
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"linkage secret must be at least {MIN_SECRET_BYTES} bytes")
    _check_specs(specs)
    out: list[list[bytes | None]] = []
    for spec in specs:
        key = HKDF(algorithm=crypto_hashes.SHA256(), length=32, salt=None, info=spec.info()).derive(
            bytes(secret)
        )
        getters = [COMPONENTS[c] for c in spec.components]
        # Many records share a value tuple (twins aside, rarely; but blank
        # fields and repeated extracts do), and hashing is the dominant cost.
        cache: dict[tuple[str, ...], bytes | None] = {}
        level: list[bytes | None] = []
        for identity in identities:
            values = tuple(get(identity) for get in getters)
            if values not in cache:
                text = "\x1f".join(values).encode("ascii")
                digest = hmac.digest(key, text, "sha256")[:KEY_BYTES]
                cache[values] = digest if all(values) else None
            level.append(cache[values])
        out.append(level)
    log.debug("computed %d match-key levels for %d records", len(specs), len(identities))
    return out


def _check_specs(specs: Sequence[MatchKeySpec]) -> None:
    if not specs or len(specs) > _MAX_LEVELS:
        raise ValueError(f"a match-key hierarchy needs 1 to {_MAX_LEVELS} levels")
    if not all(isinstance(s, MatchKeySpec) for s in specs):
        raise ValueError("specs must be MatchKeySpec instances")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("match-key level names must be distinct")
