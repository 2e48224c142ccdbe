"""The linkage schema: one declarative TOML file every party and the coordinator share.

A schema fixes everything that must be equal on all sides of a linkage epoch
for encodings to be comparable: the CLK layout (fields, n-gram sizes, hashes
per field, filter length), the hardening applied to it, the match-key
hierarchy, the blocking parameters and the thresholds. `LinkageSchema.fingerprint`
is what each epoch records, so two parties that disagree on any of it are
refused before anything is compared.

The file format, and reading and writing it, are in
`headcount.linkage.schema_file` (`load_schema` reads and checks a file,
reporting every problem at once).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from headcount.linkage.blocking import (
    DEFAULT_BANDS,
    DEFAULT_BITS_PER_BAND,
    MAX_BANDS,
    MAX_BITS_PER_BAND,
)
from headcount.linkage.clk_schema import DEFAULT_SCHEMA, ClkSchema
from headcount.linkage.matchkeys import DEFAULT_MATCH_KEYS, MatchKeySpec, derive_support_keys

__all__ = [
    "BLOCKING_METHODS",
    "DATE_ORDER_CHOICES",
    "DEFAULT_LINKAGE_SCHEMA",
    "FORMAT",
    "INPUT_FIELDS",
    "MAX_DECOY_SHARE",
    "NAME_RE",
    "POSTCODE_CHOICES",
    "SCHEMA_VERSION",
    "BlockingSpec",
    "InputSpec",
    "LinkageSchema",
    "is_int",
    "is_number",
]

FORMAT = "headcount-linkage-schema/1"  # the file format a schema file declares
SCHEMA_VERSION = "linkage-schema/v1"  # hashed into every fingerprint
BLOCKING_METHODS = ("lsh", "none")

NAME_RE = re.compile(r"[a-z0-9_-]{1,32}")
MAX_DECOY_SHARE = 1.0


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True, slots=True)
class BlockingSpec:
    """How candidate pairs are chosen before Dice scoring.

    Attributes:
        method: ``"lsh"`` (keyed Hamming-LSH, `headcount.linkage.blocking`,
            for party pairs of at least `engine.AUTO_BLOCKING_PAIRS` record
            pairs; smaller ones are scored in full) or ``"none"`` (every pair
            is scored).
        bands: LSH bands, 1..1024.
        bits_per_band: sampled bits per band, 1..64.

    Raises:
        ValueError: an unknown method or a parameter out of range.
    """

    method: str = "lsh"
    bands: int = DEFAULT_BANDS
    bits_per_band: int = DEFAULT_BITS_PER_BAND

    def __post_init__(self) -> None:
        if self.method not in BLOCKING_METHODS:
            raise ValueError(f"method must be one of {list(BLOCKING_METHODS)}")
        if not is_int(self.bands) or not 1 <= self.bands <= MAX_BANDS:
            raise ValueError(f"bands must be an int in 1..{MAX_BANDS}")
        if not is_int(self.bits_per_band) or not 1 <= self.bits_per_band <= MAX_BITS_PER_BAND:
            raise ValueError(f"bits_per_band must be an int in 1..{MAX_BITS_PER_BAND}")


INPUT_FIELDS = (
    "first_name",
    "last_name",
    "date_of_birth",
    "sex",
    "postcode",
    "address",
    "locality",
    "reference",
)
DATE_ORDER_CHOICES = ("auto", "day-first", "month-first")
POSTCODE_CHOICES = ("uk", "any")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How a file's columns become identity fields (the schema's ``[input]``).

    Attributes:
        columns: identity field -> the column, or columns joined with a space
            (an address in parts), that hold it; a field not named is read from
            the column of its own name, and may be absent when the reader allows.
        date_order: ``"auto"`` (found per file), ``"day-first"`` or ``"month-first"``.
        postcodes: ``"uk"`` (UK shape checked) or ``"any"`` (any country's code).

    Raises:
        ValueError: an unknown field or choice, or an empty column name.
    """

    columns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    date_order: str = "auto"
    postcodes: str = "uk"

    def __post_init__(self) -> None:
        for name, sources in self.columns:
            if name == "record_id" and len(sources) != 1:
                raise ValueError("record_id is read from exactly one column")
            if name not in (*INPUT_FIELDS, "record_id"):
                raise ValueError(f"unknown identity field {name!r}; fields: {list(INPUT_FIELDS)}")
            if not sources or not all(isinstance(c, str) and c.strip() for c in sources):
                raise ValueError(f"field {name!r} needs one or more non-empty column names")
        if self.date_order not in DATE_ORDER_CHOICES:
            raise ValueError(f"date_order must be one of {list(DATE_ORDER_CHOICES)}")
        if self.postcodes not in POSTCODE_CHOICES:
            raise ValueError(f"postcodes must be one of {list(POSTCODE_CHOICES)}")

    def mapping(self) -> dict[str, tuple[str, ...]]:
        return dict(self.columns)


@dataclass(frozen=True, slots=True)
class LinkageSchema:
    """Everything parties must agree on to link: see the module docstring.

    Attributes:
        name: a label, ``[a-z0-9_-]`` 1-32 characters (part of the fingerprint).
        clk: the CLK layout and hardening.
        decoy_share: decoy CLKs each node adds per real record, in [0, 1).
        match_keys: the match-key hierarchy, strictest first, names distinct.
        blocking: candidate selection.
        threshold: Dice score a link must reach, in (0, 1].
        auto_threshold: whether the coordinator may use the threshold the
            quality estimate picks instead of ``threshold``.
        candidate_floor: floor of the candidate set the quality estimate is
            fitted to, in (0, threshold).
        input: how files' columns are read (column names, date order, postcode
            style); the postcode style changes encodings and is fingerprinted.
        dedup: whether each department's own records of one person are found
            and counted once (`headcount.linkage.dedup`) before departments
            are linked.

    Raises:
        ValueError: a value is out of range or of the wrong type.
    """

    name: str = "default"
    clk: ClkSchema = DEFAULT_SCHEMA
    decoy_share: float = 0.0
    match_keys: tuple[MatchKeySpec, ...] = DEFAULT_MATCH_KEYS
    blocking: BlockingSpec = field(default_factory=BlockingSpec)
    threshold: float = 0.8
    auto_threshold: bool = False
    candidate_floor: float = 0.5
    input: InputSpec = field(default_factory=InputSpec)
    dedup: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.input, InputSpec):
            raise ValueError("input must be an InputSpec")
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise ValueError("name must be 1-32 characters of [a-z0-9_-]")
        if not isinstance(self.clk, ClkSchema):
            raise ValueError("clk must be a ClkSchema")
        if not isinstance(self.blocking, BlockingSpec):
            raise ValueError("blocking must be a BlockingSpec")
        if not is_number(self.decoy_share) or not 0.0 <= self.decoy_share < MAX_DECOY_SHARE:
            raise ValueError("decoy_share must be a number in [0, 1)")
        if (
            not isinstance(self.match_keys, tuple)
            or not self.match_keys
            or not all(isinstance(k, MatchKeySpec) for k in self.match_keys)
        ):
            raise ValueError("match_keys must be a non-empty tuple of MatchKeySpec")
        names = [k.name for k in self.match_keys]
        if len(set(names)) != len(names):
            raise ValueError("match-key names must be distinct")
        if not is_number(self.threshold) or not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be a number in (0, 1]")
        if not isinstance(self.auto_threshold, bool):
            raise ValueError("auto_threshold must be a bool")
        if not isinstance(self.dedup, bool):
            raise ValueError("dedup must be a bool")
        if not is_number(self.candidate_floor) or not 0.0 < self.candidate_floor < self.threshold:
            raise ValueError("candidate_floor must be a number in (0, threshold)")
        object.__setattr__(self, "decoy_share", float(self.decoy_share))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "candidate_floor", float(self.candidate_floor))

    def support_keys(self) -> tuple[MatchKeySpec, ...]:
        """The supporting keys nodes upload after the match-keys, for
        deduplication only (none when ``dedup`` is off): the
        `matchkeys.SUPPORT_KEYS` whose fields are all CLK fields here."""
        if not self.dedup:
            return ()
        return derive_support_keys({f.name for f in self.clk.fields})

    def to_json(self) -> dict[str, Any]:
        """The schema as a JSON-ready document (what `fingerprint` hashes).

        Of ``input``, only a non-UK postcode style is hashed (it changes how
        postcodes normalise): column names differ from file to file and the
        date order is found per file, and neither changes an encoding.
        """
        extra: dict[str, Any] = {}
        if self.input.postcodes != "uk":
            extra["postcodes"] = self.input.postcodes
        if self.dedup:  # absent when off, so older schemas keep their fingerprints
            extra["dedup"] = True
            extra["support_keys"] = [
                {"name": k.name, "components": list(k.components)} for k in self.support_keys()
            ]
        return extra | {
            "version": SCHEMA_VERSION,
            "name": self.name,
            "clk": {**self.clk.to_json(), "fingerprint": self.clk.fingerprint()},
            "decoy_share": repr(self.decoy_share),
            "match_keys": [
                {"name": k.name, "components": list(k.components)} for k in self.match_keys
            ],
            "blocking": {
                "method": self.blocking.method,
                "bands": self.blocking.bands,
                "bits_per_band": self.blocking.bits_per_band,
            },
            # repr() of a float round-trips exactly, so equal schemas hash
            # equally whatever platform wrote them.
            "threshold": repr(self.threshold),
            "auto_threshold": self.auto_threshold,
            "candidate_floor": repr(self.candidate_floor),
        }

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the canonical JSON of `to_json`, version included.

        Match-key notes (``tolerates``) are documentation and not hashed; every
        other setting is.
        """
        canonical = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# The default hardens the CLKs by XOR-folding: it defeats the graph-matching,
# frequency and pattern-mining attacks measured in docs/attacks.md
# (benchmarks/bench_attacks.py: graph matching 99.5% -> 0.1% re-identification)
# at no measured F1 cost with the engine. Folded scores run lower, so the
# threshold is 0.7 rather than the 0.8 unfolded filters use. The threshold a
# run uses is the one the quality estimate picks (auto_threshold: the highest
# estimated F1, headcount.linkage.quality), 0.7 only when no estimate can be
# fitted; the best threshold moves with the data's errors (0.55-0.70 on the
# profiles measured). Its candidates start at 0.5, below any threshold it
# may pick: folding lifts chance scores (18% of random pairs reach 0.5), but
# only each sampled record's best few are kept, and a record's best chance
# pair (0.55-0.65 at a few thousand records) must be seen whole.
DEFAULT_LINKAGE_SCHEMA = LinkageSchema(
    clk=replace(DEFAULT_SCHEMA, xor_fold=True),
    threshold=0.7,
    auto_threshold=True,
    candidate_floor=0.5,
)
