"""Tests for headcount.linkage.schema: the declarative linkage schema file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from headcount.errors import ConfigError
from headcount.linkage.clk_schema import DEFAULT_SCHEMA, ClkSchema, FieldSpec
from headcount.linkage.matchkeys import DEFAULT_MATCH_KEYS, MatchKeySpec
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, BlockingSpec, LinkageSchema
from headcount.linkage.schema_file import (
    DEFAULT_SCHEMA_PATH,
    dumps_schema,
    load_schema,
    parse_schema,
)

REPO_DEFAULT = Path(__file__).resolve().parents[3] / "schemas" / "default.toml"

HARDENED = LinkageSchema(
    name="hardened-test",
    clk=ClkSchema(
        filter_bits=2048,
        fields=(FieldSpec("first_name", 2, 20), FieldSpec("last_name", 3, 12)),
        balance=True,
        xor_fold=True,
        salt_source="birth_year",
        salted_fields=("first_name",),
        flip_probability=0.015,
    ),
    decoy_share=0.05,
    match_keys=(MatchKeySpec("exact", ("first_name", "last_name"), "nothing"),),
    blocking=BlockingSpec("none", 16, 20),
    threshold=0.75,
    auto_threshold=True,
    candidate_floor=0.45,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _default_doc() -> dict[str, object]:
    return tomllib.loads(REPO_DEFAULT.read_text(encoding="utf-8"))


# --- the default --------------------------------------------------------------------


def test_shipped_default_file_loads_to_the_default_schema() -> None:
    assert REPO_DEFAULT.resolve() == DEFAULT_SCHEMA_PATH
    loaded = load_schema(REPO_DEFAULT)
    assert loaded == DEFAULT_LINKAGE_SCHEMA
    assert loaded.fingerprint() == DEFAULT_LINKAGE_SCHEMA.fingerprint()
    # Notes are documentation, but the shipped file keeps the code's notes.
    assert [k.tolerates for k in loaded.match_keys] == [k.tolerates for k in DEFAULT_MATCH_KEYS]


def test_default_schema_folds_the_plain_layout() -> None:
    # The default is the plain clk/v1 layout, XOR-folded (docs/attacks.md:
    # folding defeats the measured attacks on stored CLKs), with the threshold
    # lowered to 0.7 for folded scores.
    assert DEFAULT_LINKAGE_SCHEMA.clk == replace(DEFAULT_SCHEMA, xor_fold=True)
    assert DEFAULT_LINKAGE_SCHEMA.clk.fields == DEFAULT_SCHEMA.fields
    assert DEFAULT_LINKAGE_SCHEMA.clk.clk_bits == DEFAULT_SCHEMA.filter_bits // 2
    assert DEFAULT_LINKAGE_SCHEMA.match_keys == DEFAULT_MATCH_KEYS
    assert DEFAULT_LINKAGE_SCHEMA.threshold == 0.7
    assert DEFAULT_LINKAGE_SCHEMA.decoy_share == 0.0


@pytest.mark.parametrize("schema", [DEFAULT_LINKAGE_SCHEMA, HARDENED])
def test_dump_and_load_round_trip(schema: LinkageSchema, tmp_path: Path) -> None:
    text = dumps_schema(schema)
    assert load_schema(_write(tmp_path, text)) == schema


# --- fingerprint --------------------------------------------------------------------


def test_fingerprint_is_sha256_of_canonical_json_with_version() -> None:
    doc = DEFAULT_LINKAGE_SCHEMA.to_json()
    assert doc["version"] == "linkage-schema/v1"
    assert doc["clk"]["fingerprint"] == DEFAULT_LINKAGE_SCHEMA.clk.fingerprint()
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert DEFAULT_LINKAGE_SCHEMA.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "other"},
        {"clk": ClkSchema(filter_bits=2048)},
        {"clk": ClkSchema(balance=True)},
        {"decoy_share": 0.1},
        {"match_keys": DEFAULT_MATCH_KEYS[:-1]},
        {"match_keys": tuple(reversed(DEFAULT_MATCH_KEYS))},
        {"blocking": BlockingSpec(bands=32)},
        {"blocking": BlockingSpec(method="none")},
        {"threshold": 0.85},
        {"auto_threshold": False},
        {"candidate_floor": 0.4},
    ],
)
def test_fingerprint_changes_with_every_setting(changes: dict[str, object]) -> None:
    changed = dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, **changes)  # type: ignore[arg-type]
    assert changed.fingerprint() != DEFAULT_LINKAGE_SCHEMA.fingerprint()


def test_fingerprint_ignores_match_key_notes() -> None:
    quiet = tuple(dataclasses.replace(k, tolerates="") for k in DEFAULT_MATCH_KEYS)
    changed = dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, match_keys=quiet)
    assert changed.fingerprint() == DEFAULT_LINKAGE_SCHEMA.fingerprint()


# --- checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Has Spaces"}, "name"),
        ({"decoy_share": 1.0}, "decoy_share"),
        ({"match_keys": ()}, "match_keys"),
        ({"match_keys": (DEFAULT_MATCH_KEYS[0], DEFAULT_MATCH_KEYS[0])}, "distinct"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 0.8, "candidate_floor": 0.8}, "candidate_floor"),
        ({"auto_threshold": 1}, "auto_threshold"),
        ({"clk": "default"}, "ClkSchema"),
    ],
)
def test_bad_schemas_cannot_be_built(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [(("minhash",), "method"), (("lsh", 0), "bands"), (("lsh", 64, 65), "bits_per_band")],
)
def test_bad_blocking_is_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BlockingSpec(*args)  # type: ignore[arg-type]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = REPO_DEFAULT.read_text(encoding="utf-8")
    text = text.replace('format = "headcount-linkage-schema/1"', 'format = "v0"')
    text = text.replace("filter_bits = 1024", "filter_bits = 1000")
    text = text.replace('name = "sex"\nngram = 1', 'name = "gender"\nngram = 1')
    text = text.replace("hashes = 25", "hashes = 0")
    text = text.replace('salt_source = ""', 'salt_source = "postcode"')
    text = text.replace('"first_initial"', '"initial"')
    text = text.replace("bands = 64", "bands = 0")
    text = text.replace("threshold = 0.7 ", "threshold = 1.5 ")
    text += "\n[extra]\nkey = 1\n"
    with pytest.raises(ConfigError) as caught:
        load_schema(_write(tmp_path, text))
    message = str(caught.value)
    assert str(tmp_path / "schema.toml") in message
    for expected in (
        "format",
        "clk.fields[0]: hashes",
        "clk.fields[3]: unknown identity field 'gender'",
        "match_keys[3]",
        "unknown component",
        "blocking: bands",
        "linkage.threshold",
        "extra: unknown key",
    ):
        assert expected in message, expected
    assert message.count("\n  - ") >= 8


def test_problems_the_dataclasses_check_are_reported_too(tmp_path: Path) -> None:
    # Rules ClkSchema enforces (here: salted fields must be schema fields)
    # reach the report through the same list.
    text = (
        REPO_DEFAULT.read_text(encoding="utf-8")
        .replace('salt_source = ""', 'salt_source = "birth_year"')
        .replace("salted_fields = []", 'salted_fields = ["address"]')
    )
    with pytest.raises(ConfigError, match=r"clk: salted_fields \['address'\] are not fields"):
        load_schema(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("format"), "format: is required"),
        (lambda d: d.pop("match_keys"), "match_keys: is required"),
        (lambda d: d["clk"].pop("fields"), "clk.fields: is required"),
        (lambda d: d["clk"].update(fields=[]), "non-empty array"),
        (lambda d: d["clk"].update(filter_bits="1024"), "must be an int"),
        (lambda d: d["clk"].update(filter_bits=True), "must be an int"),
        (lambda d: d["clk"]["fields"][0].update(weight=3), r"clk.fields\[0\].weight: unknown key"),
        (lambda d: d["clk"]["hardening"].update(balance="yes"), "true or false"),
        (lambda d: d["clk"]["hardening"].update(decoy_share=1.5), "decoy_share"),
        (lambda d: d["match_keys"].append(d["match_keys"][0]), "used more than once"),
        (lambda d: d["match_keys"][0].update(components="first_name"), "array of component"),
        (lambda d: d["linkage"].update(candidate_floor=0.9), "candidate_floor"),
        (lambda d: d["linkage"].pop("threshold"), "linkage.threshold: is required"),
        (lambda d: d.update(blocking=3), "blocking: must be a table"),
        (lambda d: d.update(name="UPPER"), "name"),
    ],
)
def test_each_kind_of_problem_is_named(edit: object, message: str) -> None:
    doc = _default_doc()
    edit(doc)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        parse_schema(doc, "test.toml")


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_schema(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_schema(_write(tmp_path, "format = \n"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_schema(bad)


def test_optional_sections_take_their_defaults() -> None:
    doc = _default_doc()
    del doc["blocking"]
    del doc["clk"]["hardening"]  # type: ignore[attr-defined]
    doc["linkage"] = {"threshold": 0.8}
    # Omitted hardening keys are off: the plain layout of LinkageSchema()
    # (the shipped default turns folding on explicitly).
    assert parse_schema(doc) == LinkageSchema()


# --- input ------------------------------------------------------------------------


def test_the_input_table_names_columns_and_reads_back(tmp_path: Path) -> None:
    from headcount.linkage.schema import InputSpec
    from headcount.linkage.schema_file import DEFAULT_SCHEMA_PATH

    intl = load_schema(DEFAULT_SCHEMA_PATH.parent / "intl-example.toml")
    assert intl.input.mapping()["address"] == ("street_number", "address_1", "address_2")
    assert intl.input.postcodes == "any"
    assert load_schema(_write(tmp_path, dumps_schema(intl))) == intl
    # Only the postcode style changes encodings, so only it is fingerprinted.
    names_only = dataclasses.replace(
        DEFAULT_LINKAGE_SCHEMA, input=InputSpec(columns=(("first_name", ("given",)),))
    )
    assert names_only.fingerprint() == DEFAULT_LINKAGE_SCHEMA.fingerprint()
    any_postcode = dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, input=InputSpec(postcodes="any"))
    assert any_postcode.fingerprint() != DEFAULT_LINKAGE_SCHEMA.fingerprint()


def test_a_bad_input_table_is_refused_with_every_problem(tmp_path: Path) -> None:
    text = dumps_schema(DEFAULT_LINKAGE_SCHEMA) + (
        '\n[input]\ndate_order = "sideways"\ncolour = 1\n\n'
        '[input.columns]\nnationality = "nat"\nfirst_name = 3\n'
    )
    with pytest.raises(ConfigError) as info:
        load_schema(_write(tmp_path, text))
    message = str(info.value)
    assert "input.colour: unknown key" in message
    assert "input.columns.first_name: must be a column name" in message
    # The dataclass's own checks report once the table's types are right.
    fixed = text.replace("first_name = 3", 'first_name = "given"').replace("colour = 1\n", "")
    with pytest.raises(ConfigError, match="unknown identity field 'nationality'"):
        load_schema(_write(tmp_path, fixed))
    with pytest.raises(ConfigError, match="date_order must be one of"):
        load_schema(_write(tmp_path, fixed.replace('nationality = "nat"\n', "")))


def test_supporting_keys_are_uploaded_only_with_dedup() -> None:
    from headcount.linkage.matchkeys import SUPPORT_KEYS

    off = replace(DEFAULT_LINKAGE_SCHEMA, dedup=False)
    on = replace(DEFAULT_LINKAGE_SCHEMA, dedup=True)
    assert off.support_keys() == ()
    assert "support_keys" not in off.to_json()
    names = [k.name for k in on.support_keys()]
    # The default CLK has no reference or locality field: no key needing them.
    assert names and set(names) <= {k.name for k in SUPPORT_KEYS}
    assert "suplastdob" in names and not any(n.startswith("supref") for n in names)
    assert [k["name"] for k in on.to_json()["support_keys"]] == names
    assert on.fingerprint() != off.fingerprint()
