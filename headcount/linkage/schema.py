"""The linkage schema: one declarative TOML file every party and the coordinator share.

A schema fixes everything that must be equal on all sides of a linkage epoch
for encodings to be comparable: the CLK layout (fields, n-gram sizes, hashes
per field, filter length), the hardening applied to it, the match-key
hierarchy, the blocking parameters and the thresholds. `load_schema` reads and
checks a file, reporting every problem at once; `LinkageSchema.fingerprint`
is what each epoch records, so two parties that disagree on any of it are
refused before anything is compared.

File format (``schemas/default.toml`` is the shipped default)::

    format = "headcount-linkage-schema/1"   # required, exactly this
    name = "default"                        # [a-z0-9_-], 1-32 characters

    [clk]
    filter_bits = 1024                      # multiple of 64 in 256..8192

    [[clk.fields]]                          # one table per encoded field
    name = "first_name"                     # an Identity field
    ngram = 2                               # 1 = whole value, 2-4 = n-grams
    hashes = 25                             # bits per n-gram, 1-64 (the weight)

    [clk.hardening]                         # every key optional, all off by default
    balance = false
    xor_fold = false
    salt_source = ""                        # "", "birth_year" or "sex"
    salted_fields = []                      # fields salted when salt_source is set
    flip_probability = 0.0                  # in [0, 0.5)
    decoy_share = 0.0                       # decoys added per real record, [0, 1)

    [[match_keys]]                          # strictest first, 1-32 levels
    name = "mk1"
    components = ["first_name", "last_name", "date_of_birth", "sex", "postcode"]
    tolerates = "formatting only"           # optional note

    [blocking]
    method = "lsh"                          # "lsh" or "none" (compare all pairs)
    bands = 64                              # 1..1024
    bits_per_band = 18                      # 1..64

    [linkage]                               # the shipped default's values:
    threshold = 0.7                         # Dice score links must reach, (0, 1]
    auto_threshold = true                   # use the quality estimate's threshold
    candidate_floor = 0.5                   # floor for quality estimation, < threshold
    dedup = false                           # find and count once each department's
                                            # own records of one person

    [input]                                 # optional: how files' columns are read
    date_order = "auto"                     # "auto" (per file), "day-first", "month-first"
    postcodes = "uk"                        # "uk" or "any" (any country's code)

    [input.columns]                         # identity field = column, or columns joined
    first_name = "given_name"               # fields: first_name, last_name,
    address = ["street_number", "address_1"]  # date_of_birth, sex, postcode, address,
    reference = "soc_sec_id"                # locality, reference (absent = own name)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from headcount.errors import ConfigError
from headcount.linkage.blocking import (
    DEFAULT_BANDS,
    DEFAULT_BITS_PER_BAND,
    MAX_BANDS,
    MAX_BITS_PER_BAND,
)
from headcount.linkage.clk_schema import DEFAULT_SCHEMA, SALT_SOURCES, ClkSchema, FieldSpec
from headcount.linkage.matchkeys import DEFAULT_MATCH_KEYS, MatchKeySpec, derive_support_keys

__all__ = [
    "DEFAULT_LINKAGE_SCHEMA",
    "DEFAULT_SCHEMA_PATH",
    "FORMAT",
    "SCHEMA_VERSION",
    "BlockingSpec",
    "InputSpec",
    "LinkageSchema",
    "dumps_schema",
    "federation_schema",
    "load_schema",
    "parse_schema",
]

FORMAT = "headcount-linkage-schema/1"  # the file format a schema file declares
SCHEMA_VERSION = "linkage-schema/v1"  # hashed into every fingerprint
BLOCKING_METHODS = ("lsh", "none")
# The repository's copy of the default schema; tests check it loads to
# DEFAULT_LINKAGE_SCHEMA. Not used at run time: the default lives in code so
# an installed package needs no data file.
DEFAULT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "default.toml"

_NAME_RE = re.compile(r"[a-z0-9_-]{1,32}")
_MAX_DECOY_SHARE = 1.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
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
        if not _is_int(self.bands) or not 1 <= self.bands <= MAX_BANDS:
            raise ValueError(f"bands must be an int in 1..{MAX_BANDS}")
        if not _is_int(self.bits_per_band) or not 1 <= self.bits_per_band <= MAX_BITS_PER_BAND:
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
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError("name must be 1-32 characters of [a-z0-9_-]")
        if not isinstance(self.clk, ClkSchema):
            raise ValueError("clk must be a ClkSchema")
        if not isinstance(self.blocking, BlockingSpec):
            raise ValueError("blocking must be a BlockingSpec")
        if not _is_number(self.decoy_share) or not 0.0 <= self.decoy_share < _MAX_DECOY_SHARE:
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
        if not _is_number(self.threshold) or not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be a number in (0, 1]")
        if not isinstance(self.auto_threshold, bool):
            raise ValueError("auto_threshold must be a bool")
        if not isinstance(self.dedup, bool):
            raise ValueError("dedup must be a bool")
        if not _is_number(self.candidate_floor) or not 0.0 < self.candidate_floor < self.threshold:
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


def load_schema(path: Path) -> LinkageSchema:
    """Read and check a linkage schema file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or fails any check;
            the message names the file and lists every problem found.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: linkage schema file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read linkage schema: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_schema(doc, str(path))


def parse_schema(doc: dict[str, Any], source: str = "<schema>") -> LinkageSchema:
    """Build a `LinkageSchema` from a parsed TOML document.

    Raises:
        ConfigError: listing every problem, each prefixed with ``source`` and
            the offending key.
    """
    checker = _Checker()
    schema = checker.schema(doc)
    if checker.problems or schema is None:
        listed = "\n  - ".join(checker.problems)
        raise ConfigError(
            f"{source}: {len(checker.problems)} problem(s) in linkage schema:\n  - {listed}"
        )
    return schema


def dumps_schema(schema: LinkageSchema) -> str:
    """The schema as TOML text that `parse_schema` reads back to an equal schema."""
    clk = schema.clk
    lines = [
        f'format = "{FORMAT}"',
        f'name = "{schema.name}"',
        "",
        "[clk]",
        f"filter_bits = {clk.filter_bits}",
    ]
    for spec in clk.fields:
        lines += [
            "",
            "[[clk.fields]]",
            f'name = "{spec.name}"',
            f"ngram = {spec.ngram}",
            f"hashes = {spec.hashes}",
        ]
    lines += [
        "",
        "[clk.hardening]",
        f"balance = {_toml_bool(clk.balance)}",
        f"xor_fold = {_toml_bool(clk.xor_fold)}",
        f"salt_source = {json.dumps(clk.salt_source)}",
        f"salted_fields = {json.dumps(list(clk.salted_fields))}",
        f"flip_probability = {clk.flip_probability!r}",
        f"decoy_share = {schema.decoy_share!r}",
    ]
    for key in schema.match_keys:
        lines += [
            "",
            "[[match_keys]]",
            f'name = "{key.name}"',
            f"components = {json.dumps(list(key.components))}",
            f"tolerates = {json.dumps(key.tolerates)}",
        ]
    lines += [
        "",
        "[blocking]",
        f'method = "{schema.blocking.method}"',
        f"bands = {schema.blocking.bands}",
        f"bits_per_band = {schema.blocking.bits_per_band}",
        "",
        "[linkage]",
        f"threshold = {schema.threshold!r}",
        f"auto_threshold = {_toml_bool(schema.auto_threshold)}",
        f"candidate_floor = {schema.candidate_floor!r}",
        f"dedup = {_toml_bool(schema.dedup)}",
        "",
    ]
    if schema.input != InputSpec():
        lines += [
            "[input]",
            f'date_order = "{schema.input.date_order}"',
            f'postcodes = "{schema.input.postcodes}"',
            "",
            "[input.columns]",
            *(
                f"{name} = {json.dumps(cols[0] if len(cols) == 1 else list(cols))}"
                for name, cols in schema.input.columns
            ),
            "",
        ]
    return "\n".join(lines)


# --- checking ---------------------------------------------------------------------

_T = TypeVar("_T")
_MISSING: Any = object()


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


class _Checker:
    """Walks a parsed document, collecting every problem instead of stopping at one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def table(self, doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            self.problem(where, "must be a table")
            return {}
        return value

    def unknown(self, doc: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in sorted(set(doc) - allowed):
            self.problem(f"{where}{key}" if where else key, "unknown key")

    def get(
        self,
        doc: dict[str, Any],
        key: str,
        where: str,
        check: Callable[[object], bool],
        expected: str,
        default: _T = _MISSING,
    ) -> _T | None:
        if key not in doc:
            if default is _MISSING:
                self.problem(where, "is required")
                return None
            return default
        value = doc[key]
        if not check(value):
            self.problem(where, f"must be {expected}, got {value!r}")
            return None
        result: _T = value
        return result

    def build(self, where: str, factory: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
        """Call a constructor, turning its ValueError into a reported problem."""
        try:
            return factory(*args, **kwargs)
        except ValueError as exc:
            self.problem(where, str(exc))
            return None

    def schema(self, doc: dict[str, Any]) -> LinkageSchema | None:
        self.unknown(
            doc, {"format", "name", "clk", "match_keys", "blocking", "linkage", "input"}, ""
        )
        input_spec = self.input(self.table(doc, "input", "input"))
        fmt = self.get(doc, "format", "format", lambda v: isinstance(v, str), "a string")
        if fmt is not None and fmt != FORMAT:
            self.problem("format", f"must be {FORMAT!r}, got {fmt!r}")
        name = self.get(doc, "name", "name", lambda v: isinstance(v, str), "a string")
        if name is not None and not _NAME_RE.fullmatch(name):
            self.problem("name", "must be 1-32 characters of [a-z0-9_-]")
        clk, decoy_share = self.clk(self.table(doc, "clk", "clk"))
        keys = self.match_keys(doc.get("match_keys", _MISSING))
        blocking = self.blocking(self.table(doc, "blocking", "blocking"))
        linkage = self.table(doc, "linkage", "linkage")
        self.unknown(
            linkage, {"threshold", "auto_threshold", "candidate_floor", "dedup"}, "linkage."
        )
        dedup = self.get(
            linkage,
            "dedup",
            "linkage.dedup",
            lambda v: isinstance(v, bool),
            "true or false",
            False,
        )
        threshold = self.get(
            linkage, "threshold", "linkage.threshold", _is_number, "a number in (0, 1]"
        )
        auto = self.get(
            linkage,
            "auto_threshold",
            "linkage.auto_threshold",
            lambda v: isinstance(v, bool),
            "true or false",
            False,
        )
        floor = self.get(
            linkage, "candidate_floor", "linkage.candidate_floor", _is_number, "a number", 0.5
        )
        # Checked here as well as in LinkageSchema so that these problems are
        # listed together with any others rather than only once the rest is fixed.
        if threshold is not None and not 0.0 < threshold <= 1.0:
            self.problem("linkage.threshold", f"must be in (0, 1], got {threshold!r}")
        if floor is not None and threshold is not None and not 0.0 < floor < threshold:
            self.problem(
                "linkage.candidate_floor",
                f"must be in (0, threshold) so the quality fit sees non-matches, got {floor!r}",
            )
        if self.problems:
            return None
        assert name is not None and clk is not None and keys is not None
        assert blocking is not None and threshold is not None and auto is not None
        assert floor is not None and decoy_share is not None and input_spec is not None
        assert dedup is not None
        return self.build(
            "linkage",
            lambda: LinkageSchema(
                name=name,
                clk=clk,
                decoy_share=decoy_share,
                match_keys=keys,
                blocking=blocking,
                threshold=threshold,
                auto_threshold=auto,
                candidate_floor=floor,
                input=input_spec,
                dedup=dedup,
            ),
        )

    def input(self, doc: dict[str, Any]) -> InputSpec | None:
        self.unknown(doc, {"columns", "date_order", "postcodes"}, "input.")
        columns = self.table(doc, "columns", "input.columns")
        pairs: list[tuple[str, tuple[str, ...]]] = []
        for name, value in columns.items():
            where = f"input.columns.{name}"
            if isinstance(value, str):
                pairs.append((name, (value,)))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                pairs.append((name, tuple(value)))
            else:
                self.problem(where, "must be a column name or a list of column names")
        order = self.get(
            doc, "date_order", "input.date_order", lambda v: isinstance(v, str), "a string", "auto"
        )
        postcodes = self.get(
            doc, "postcodes", "input.postcodes", lambda v: isinstance(v, str), "a string", "uk"
        )
        if order is None or postcodes is None:
            return None
        return self.build("input", InputSpec, tuple(pairs), date_order=order, postcodes=postcodes)

    def clk(self, doc: dict[str, Any]) -> tuple[ClkSchema | None, float | None]:
        self.unknown(doc, {"filter_bits", "fields", "hardening"}, "clk.")
        bits = self.get(doc, "filter_bits", "clk.filter_bits", _is_int, "an int", 1024)
        raw_fields = doc.get("fields", _MISSING)
        fields: list[FieldSpec] = []
        if raw_fields is _MISSING:
            self.problem("clk.fields", "is required (one [[clk.fields]] table per field)")
        elif not isinstance(raw_fields, list) or not raw_fields:
            self.problem("clk.fields", "must be a non-empty array of tables")
        else:
            for i, item in enumerate(raw_fields):
                where = f"clk.fields[{i}]"
                if not isinstance(item, dict):
                    self.problem(where, "must be a table")
                    continue
                self.unknown(item, {"name", "ngram", "hashes"}, f"{where}.")
                fname = self.get(
                    item, "name", f"{where}.name", lambda v: isinstance(v, str), "a string"
                )
                ngram = self.get(item, "ngram", f"{where}.ngram", _is_int, "an int")
                hashes = self.get(item, "hashes", f"{where}.hashes", _is_int, "an int")
                if fname is None or ngram is None or hashes is None:
                    continue
                spec = self.build(where, FieldSpec, fname, ngram, hashes)
                if spec is not None:
                    fields.append(spec)
        hard = self.table(doc, "hardening", "clk.hardening")
        self.unknown(
            hard,
            {
                "balance",
                "xor_fold",
                "salt_source",
                "salted_fields",
                "flip_probability",
                "decoy_share",
            },
            "clk.hardening.",
        )

        def is_bool(v: object) -> bool:
            return isinstance(v, bool)

        balance = self.get(
            hard, "balance", "clk.hardening.balance", is_bool, "true or false", False
        )
        fold = self.get(hard, "xor_fold", "clk.hardening.xor_fold", is_bool, "true or false", False)
        salt = self.get(
            hard,
            "salt_source",
            "clk.hardening.salt_source",
            lambda v: isinstance(v, str),
            "a string",
            "",
        )
        salted: list[str] | None = self.get(
            hard,
            "salted_fields",
            "clk.hardening.salted_fields",
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "an array of field names",
            [],
        )
        flip = self.get(
            hard, "flip_probability", "clk.hardening.flip_probability", _is_number, "a number", 0.0
        )
        decoys = self.get(
            hard, "decoy_share", "clk.hardening.decoy_share", _is_number, "a number", 0.0
        )
        if decoys is not None and not 0.0 <= decoys < _MAX_DECOY_SHARE:
            self.problem("clk.hardening.decoy_share", "must be in [0, 1)")
            decoys = None
        # ClkSchema checks these too, but only once every field is valid; checked
        # here so that they are listed alongside field problems.
        before = len(self.problems)
        if bits is not None and not (256 <= bits <= 8192 and bits % 64 == 0):
            self.problem("clk.filter_bits", f"must be a multiple of 64 in 256..8192, got {bits}")
        if salt is not None and salt and salt not in SALT_SOURCES:
            self.problem(
                "clk.hardening.salt_source", f"must be '' or one of {sorted(SALT_SOURCES)}"
            )
        if flip is not None and not 0.0 <= flip < 0.5:
            self.problem("clk.hardening.flip_probability", f"must be in [0, 0.5), got {flip}")
        if len(self.problems) > before:
            return None, decoys
        all_fields_ok = isinstance(raw_fields, list) and len(fields) == len(raw_fields) > 0
        if (
            not all_fields_ok
            or bits is None
            or balance is None
            or fold is None
            or salt is None
            or salted is None
            or flip is None
        ):
            return None, decoys
        schema = self.build(
            "clk",
            lambda: ClkSchema(
                filter_bits=bits,
                fields=tuple(fields),
                balance=balance,
                xor_fold=fold,
                salt_source=salt,
                salted_fields=tuple(salted),
                flip_probability=float(flip),
            ),
        )
        return schema, decoys

    def match_keys(self, raw: object) -> tuple[MatchKeySpec, ...] | None:
        if raw is _MISSING:
            self.problem("match_keys", "is required (one [[match_keys]] table per level)")
            return None
        if not isinstance(raw, list) or not raw:
            self.problem("match_keys", "must be a non-empty array of tables")
            return None
        specs: list[MatchKeySpec] = []
        for i, item in enumerate(raw):
            where = f"match_keys[{i}]"
            if not isinstance(item, dict):
                self.problem(where, "must be a table")
                continue
            self.unknown(item, {"name", "components", "tolerates"}, f"{where}.")
            name = self.get(item, "name", f"{where}.name", lambda v: isinstance(v, str), "a string")
            components = self.get(
                item,
                "components",
                f"{where}.components",
                lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                "an array of component names",
            )
            tolerates = self.get(
                item,
                "tolerates",
                f"{where}.tolerates",
                lambda v: isinstance(v, str),
                "a string",
                "",
            )
            if name is None or components is None or tolerates is None:
                continue
            spec = self.build(where, MatchKeySpec, name, tuple(components), tolerates)
            if spec is not None:
                specs.append(spec)
        names = [s.name for s in specs]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.problem("match_keys", f"level name {dup!r} is used more than once")
        if len(specs) != len(raw):
            return None
        return tuple(specs)

    def blocking(self, doc: dict[str, Any]) -> BlockingSpec | None:
        self.unknown(doc, {"method", "bands", "bits_per_band"}, "blocking.")
        method = self.get(
            doc, "method", "blocking.method", lambda v: isinstance(v, str), "a string", "lsh"
        )
        bands = self.get(doc, "bands", "blocking.bands", _is_int, "an int", DEFAULT_BANDS)
        bits = self.get(
            doc, "bits_per_band", "blocking.bits_per_band", _is_int, "an int", DEFAULT_BITS_PER_BAND
        )
        if method is None or bands is None or bits is None:
            return None
        return self.build("blocking", BlockingSpec, method, bands, bits)


def federation_schema(path: Path | None) -> LinkageSchema:
    """A federation's linkage schema: the file its config names
    (``linkage_schema``), or the built-in default when it names none."""
    return DEFAULT_LINKAGE_SCHEMA if path is None else load_schema(path)
