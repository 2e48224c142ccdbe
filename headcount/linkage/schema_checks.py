"""Checks of a parsed linkage schema document that report every problem at once.

`ProblemList` collects problems while reading any TOML document, each named by
its key; `SchemaChecker` walks a linkage schema's tables with it and builds
the `LinkageSchema` only when nothing is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from headcount.linkage.blocking import DEFAULT_BANDS, DEFAULT_BITS_PER_BAND
from headcount.linkage.clk_schema import SALT_SOURCES, ClkSchema, FieldSpec
from headcount.linkage.matchkeys import MatchKeySpec
from headcount.linkage.schema import (
    FORMAT,
    MAX_DECOY_SHARE,
    NAME_RE,
    BlockingSpec,
    InputSpec,
    LinkageSchema,
    is_int,
    is_number,
)

__all__ = ["ProblemList", "SchemaChecker"]

_T = TypeVar("_T")
_MISSING: Any = object()


class ProblemList:
    """Reads a parsed document, collecting every problem instead of stopping at one.

    Each problem is ``"<where>: <message>"``, ``where`` naming the key
    (``clk.fields[2].ngram``); a read that fails returns None and the caller
    carries on, so one pass lists everything wrong with a file.
    """

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


class SchemaChecker(ProblemList):
    """Walks a parsed linkage schema document table by table (see `ProblemList`)."""

    def schema(self, doc: dict[str, Any]) -> LinkageSchema | None:
        self.unknown(
            doc, {"format", "name", "clk", "match_keys", "blocking", "linkage", "input"}, ""
        )
        input_spec = self.input(self.table(doc, "input", "input"))
        fmt = self.get(doc, "format", "format", lambda v: isinstance(v, str), "a string")
        if fmt is not None and fmt != FORMAT:
            self.problem("format", f"must be {FORMAT!r}, got {fmt!r}")
        name = self.get(doc, "name", "name", lambda v: isinstance(v, str), "a string")
        if name is not None and not NAME_RE.fullmatch(name):
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
            linkage, "threshold", "linkage.threshold", is_number, "a number in (0, 1]"
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
            linkage, "candidate_floor", "linkage.candidate_floor", is_number, "a number", 0.5
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
        bits = self.get(doc, "filter_bits", "clk.filter_bits", is_int, "an int", 1024)
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
                ngram = self.get(item, "ngram", f"{where}.ngram", is_int, "an int")
                hashes = self.get(item, "hashes", f"{where}.hashes", is_int, "an int")
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
            hard, "flip_probability", "clk.hardening.flip_probability", is_number, "a number", 0.0
        )
        decoys = self.get(
            hard, "decoy_share", "clk.hardening.decoy_share", is_number, "a number", 0.0
        )
        if decoys is not None and not 0.0 <= decoys < MAX_DECOY_SHARE:
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
        bands = self.get(doc, "bands", "blocking.bands", is_int, "an int", DEFAULT_BANDS)
        bits = self.get(
            doc, "bits_per_band", "blocking.bits_per_band", is_int, "an int", DEFAULT_BITS_PER_BAND
        )
        if method is None or bands is None or bits is None:
            return None
        return self.build("blocking", BlockingSpec, method, bands, bits)
