"""The linkage schema file: read (`load_schema`, `parse_schema`) and written (`dumps_schema`).

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

Every problem in a file is reported at once (`headcount.linkage.schema_checks`).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from headcount.errors import ConfigError
from headcount.linkage.schema import (
    DEFAULT_LINKAGE_SCHEMA,
    FORMAT,
    InputSpec,
    LinkageSchema,
)
from headcount.linkage.schema_checks import SchemaChecker

__all__ = [
    "DEFAULT_SCHEMA_PATH",
    "dumps_schema",
    "federation_schema",
    "load_schema",
    "parse_schema",
]

# The repository's copy of the default schema; tests check it loads to
# DEFAULT_LINKAGE_SCHEMA. Not used at run time: the default lives in code so
# an installed package needs no data file.
DEFAULT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "default.toml"


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
    checker = SchemaChecker()
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


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def federation_schema(path: Path | None) -> LinkageSchema:
    """A federation's linkage schema: the file its config names
    (``linkage_schema``), or the built-in default when it names none."""
    return DEFAULT_LINKAGE_SCHEMA if path is None else load_schema(path)
