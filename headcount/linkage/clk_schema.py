"""The CLK layout (`ClkSchema`): filter size, per-field encodings and hardening options.

Every party in a linkage epoch must use the same layout; its `fingerprint`
says whether two parties do. What each hardening option does, and in which
order, is in `headcount.linkage.clk`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass

from headcount.linkage.normalise import Identity

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_SCHEMA",
    "EXTRA_FIELDS",
    "REFERENCE_HASHES",
    "SALT_SOURCES",
    "SCHEMA_VERSION",
    "ClkSchema",
    "FieldSpec",
    "with_present_fields",
]

SCHEMA_VERSION = "clk/v1"

_IDENTITY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Identity) if f.name != "birth_partial"
)
_MAX_HASHES = 64
_MAX_NGRAM = 4

# Stable record values a salt may be taken from; each maps an Identity to the
# salt string ("" when the value is missing). Only values that rarely carry
# recording errors qualify: a salt that differs between two records of one
# child makes every salted field disagree.
SALT_SOURCES: dict[str, Callable[[Identity], str]] = {
    "birth_year": lambda identity: identity.date_of_birth[:4],
    "sex": lambda identity: identity.sex,
}
_MAX_FLIP_PROBABILITY = 0.5


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one `Identity` field is encoded.

    Attributes:
        name: an `Identity` field name.
        ngram: 1 encodes the whole value as a single token; 2 to 4 encode the
            value's n-grams, padded with ``"_"`` at both ends. Names drop their
            spaces first; a date of birth also adds the tokens ``y:YYYY``,
            ``m:MM``, ``d:DD`` and the unordered day/month pair; a postcode adds
            its outward code as a token.
        hashes: bits set per n-gram or token (k), 1 to 64; a field's weight in
            the Dice score grows with it.

    Raises:
        ValueError: on an unknown field name or an out-of-range value.
    """

    name: str
    ngram: int
    hashes: int

    def __post_init__(self) -> None:
        if self.name not in _IDENTITY_FIELDS:
            raise ValueError(f"unknown identity field {self.name!r}")
        if not _is_int(self.ngram) or not 1 <= self.ngram <= _MAX_NGRAM:
            raise ValueError(f"ngram must be an int in 1..{_MAX_NGRAM}")
        if not _is_int(self.hashes) or not 1 <= self.hashes <= _MAX_HASHES:
            raise ValueError(f"hashes must be an int in 1..{_MAX_HASHES}")


# Defaults chosen by a sweep on 3,000 synthetic children (Faker en_GB, in
# households with siblings, 15% of them twins) against copies carrying 0-2
# realistic errors each (typo, transposed day/month, date off by a day, missing or
# moved postcode, missing sex). At Dice >= 0.8 these gave precision 0.987 and
# recall 0.997 before one-to-one matching (1.000 / 0.997 after); equal name
# weights (20/20) let more siblings and twins over the threshold (precision 0.968).
# - First names weigh most: within a household they are the only field that
#   tells twins apart, and bigrams keep them tolerant of typos.
# - Surnames weigh less than first names because siblings and unrelated
#   families share them, but more than the remaining fields.
# - Date-of-birth bigrams are shared by most children born in the same decade
#   ("_2", "20", "-0"), so each sets fewer bits; the y/m/d/dm tokens carry the
#   discriminating part.
# - Sex has two values and separates nobody on its own: a light single token.
# - Postcodes change when families move, so they carry little weight.
DEFAULT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("first_name", ngram=2, hashes=25),
    FieldSpec("last_name", ngram=2, hashes=15),
    FieldSpec("date_of_birth", ngram=2, hashes=10),
    FieldSpec("sex", ngram=1, hashes=2),
    FieldSpec("postcode", ngram=2, hashes=6),
)


REFERENCE_HASHES = 20  # about a first name's weight: a reference number is near-unique
# Fields encoded only where every file holds them (`with_present_fields`):
# an address line weighs little, as families move; a locality less still.
EXTRA_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("address", ngram=2, hashes=6),
    FieldSpec("locality", ngram=2, hashes=4),
    FieldSpec("reference", ngram=2, hashes=REFERENCE_HASHES),
)


def with_present_fields(schema: ClkSchema, present: Collection[str]) -> ClkSchema:
    """The default layout plus `EXTRA_FIELDS` that every file holds (``present``).

    A schema whose fields were chosen by hand is returned as it is.
    """
    if schema.fields != DEFAULT_FIELDS:
        return schema
    extra = tuple(f for f in EXTRA_FIELDS if f.name in present)
    return dataclasses.replace(schema, fields=schema.fields + extra) if extra else schema


@dataclass(frozen=True, slots=True)
class ClkSchema:
    """A versioned CLK layout: filter size and per-field encodings.

    Every party in a linkage epoch must use the same schema; compare
    `fingerprint` values to check. The hardening options are all off by
    default (see `headcount.linkage.clk` for what each does and in which order).

    Attributes:
        filter_bits: Bloom filter length in bits before hardening, a multiple
            of 64 in 256..8192 (of 128 when ``xor_fold`` is set).
        fields: one `FieldSpec` per encoded field, each name at most once.
        balance: append the keyed-permuted bit-complement (doubles the length).
        xor_fold: fold the filter in half by XOR (halves the length).
        salt_source: ``""`` for no salting, else a key of `SALT_SOURCES`
            (``"birth_year"`` or ``"sex"``) whose value salts the fields named
            in ``salted_fields``.
        salted_fields: schema field names whose keys are salted; non-empty
            exactly when ``salt_source`` is set.
        flip_probability: probability, in [0, 0.5), that each output bit is
            flipped before balancing; 0.0 disables flips (and makes the
            encoding deterministic).

    Raises:
        ValueError: on a bad size, no fields, a repeated field, an unknown salt
            source or salted field, or a flip probability outside [0, 0.5).
    """

    filter_bits: int = 1024
    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS
    balance: bool = False
    xor_fold: bool = False
    salt_source: str = ""
    salted_fields: tuple[str, ...] = ()
    flip_probability: float = 0.0

    def __post_init__(self) -> None:
        if not _is_int(self.filter_bits) or not (
            256 <= self.filter_bits <= 8192 and self.filter_bits % 64 == 0
        ):
            raise ValueError("filter_bits must be a multiple of 64 in 256..8192")
        if not isinstance(self.fields, tuple) or not self.fields:
            raise ValueError("fields must be a non-empty tuple of FieldSpec")
        if not all(isinstance(f, FieldSpec) for f in self.fields):
            raise ValueError("fields must be a non-empty tuple of FieldSpec")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("each field may appear in a schema only once")
        if not isinstance(self.balance, bool) or not isinstance(self.xor_fold, bool):
            raise ValueError("balance and xor_fold must be bools")
        if self.xor_fold and self.filter_bits % 128:
            raise ValueError("filter_bits must be a multiple of 128 when xor_fold is set")
        if self.salt_source and self.salt_source not in SALT_SOURCES:
            raise ValueError(f"salt_source must be '' or one of {sorted(SALT_SOURCES)}")
        if not isinstance(self.salted_fields, tuple) or not all(
            isinstance(f, str) for f in self.salted_fields
        ):
            raise ValueError("salted_fields must be a tuple of field names")
        if bool(self.salt_source) != bool(self.salted_fields):
            raise ValueError("salt_source and salted_fields must be set together")
        unknown = sorted(set(self.salted_fields) - set(names))
        if unknown:
            raise ValueError(f"salted_fields {unknown} are not fields of this schema")
        if len(set(self.salted_fields)) != len(self.salted_fields):
            raise ValueError("each salted field may be named only once")
        p = self.flip_probability
        if isinstance(p, bool) or not isinstance(p, float | int):
            raise ValueError("flip_probability must be a number in [0, 0.5)")
        if not 0.0 <= p < _MAX_FLIP_PROBABILITY:  # also rejects NaN
            raise ValueError("flip_probability must be in [0, 0.5)")
        object.__setattr__(self, "flip_probability", float(p))

    @property
    def hardened(self) -> bool:
        """Whether any hardening option is on."""
        return (
            self.balance or self.xor_fold or bool(self.salt_source) or self.flip_probability > 0.0
        )

    @property
    def clk_bits(self) -> int:
        """Length in bits of the CLKs this schema produces, after hardening."""
        bits = self.filter_bits // 2 if self.xor_fold else self.filter_bits
        return bits * 2 if self.balance else bits

    def to_json(self) -> dict[str, object]:
        """The schema as the JSON-ready document its fingerprint hashes.

        The hardening object appears only when some option is on, so a plain
        schema keeps the ``clk/v1`` fingerprint it has always had.
        """
        doc: dict[str, object] = {
            "version": SCHEMA_VERSION,
            "filter_bits": self.filter_bits,
            "fields": [{"name": f.name, "ngram": f.ngram, "hashes": f.hashes} for f in self.fields],
        }
        if self.hardened:
            doc["hardening"] = {
                "balance": self.balance,
                "xor_fold": self.xor_fold,
                "salt_source": self.salt_source,
                "salted_fields": list(self.salted_fields),
                # repr() of a float round-trips exactly, so equal schemas hash
                # equally on every platform.
                "flip_probability": repr(self.flip_probability),
            }
        return doc

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the schema's canonical JSON, version included."""
        canonical = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


DEFAULT_SCHEMA = ClkSchema()
