"""The federation configuration file: one TOML file every process reads.

``load(path)`` parses and validates the whole file and reports every problem at
once (as a ``ConfigError`` listing them), so an operator fixes a config in one
pass. Relative paths are resolved against the file's directory. Only this
module reads the environment (``HEADCOUNT_CONFIG``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from headcount.departments import ATTRIBUTES, attributes
from headcount.errors import ConfigError, NotAuthorised

log = logging.getLogger(__name__)

ALLOWED_PAILLIER_BITS = (2048, 3072)
# 1024-bit keys exist only so the test suite runs in reasonable time on two
# cores; a config must say `insecure_test_keys = true` to use them.
TEST_PAILLIER_BITS = 1024

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Address = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+:[0-9]{1,5}$")]
# Prometheus /metrics is plain HTTP: loopback unless the operator says otherwise.
MetricsPort = Annotated[int, Field(ge=0, le=65535)]  # 0: no metrics endpoint
MetricsHost = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,253}$")]
DEFAULT_METRICS_HOST = "127.0.0.1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Credential(_Frozen):
    cert: Path
    key: Path


class OutputPolicy(_Frozen):
    """Statistical disclosure control applied before any count is released."""

    suppress_below: int = Field(10, ge=1, le=1000)
    rounding_base: int = Field(5, ge=1, le=1000)
    secondary_suppression: bool = True


# Each department's privacy loss per period: e^1/(1+e^1), nobody can be more
# than 73% sure of a fact about a child that a coin toss gives at 50%.
DEFAULT_EPSILON_PER_PERIOD = 1.0
DEFAULT_QUERY_EPSILON = 0.25
PERIODS = ("year", "quarter", "month")


class PrivacyPolicy(_Frozen):
    """Differential privacy: each department's budget per period (a calendar year
    by default), across epochs, analysts and projects; the default per query;
    the most population records one flagged household may add to a count."""

    epsilon_per_period: float = Field(DEFAULT_EPSILON_PER_PERIOD, gt=0, le=100)
    period: str = "year"
    default_query_epsilon: float = Field(DEFAULT_QUERY_EPSILON, gt=0, le=100)
    household_cap: int = Field(1, ge=1, le=20)
    # Every per-record ciphertext an origin sends carries a zero-knowledge proof
    # that it holds one of the values an honest record can (0 or 1 for a count),
    # checked by the node that receives it: a department cannot make one record
    # count k times (docs/privacy.md, "Amplification"). Off only to measure its cost.
    contribution_proofs: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_epoch_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and "epsilon_per_epoch" in data:
            raise ValueError(
                "epsilon_per_epoch is gone: a budget per epoch reset with every epoch. "
                "Set epsilon_per_period (the budget of each department per calendar year "
                "by default; docs/privacy.md)"
            )
        return data

    @model_validator(mode="after")
    def _query_fits_budget(self) -> Self:
        if self.period not in PERIODS:
            raise ValueError(f"period is one of {PERIODS}, not {self.period!r}")
        if self.default_query_epsilon > self.epsilon_per_period:
            raise ValueError("default_query_epsilon exceeds epsilon_per_period")
        return self


class PartyConfig(_Frozen):
    name: Name
    address: Address
    tls: Credential
    data: Path
    database: Path
    # Whose file contract the data follows (headcount/departments.py); the
    # party's name when omitted. Several parties may share a department: one
    # per period snapshot (e.g. "immigration-2024" and "immigration-2026").
    department: Name = ""
    period: str = Field("", max_length=32)  # a label such as "2024"; "" for none
    # Ages (age_band) are computed at this date, the snapshot's extract date;
    # None: the federation's reference_date.
    reference_date: dt.date | None = None
    # Blank an unreadable date, sex or postcode (counted in the node's log and
    # by `headcount node check`) instead of refusing the whole file.
    blank_invalid: bool = False
    approved_attributes: tuple[str, ...] = ()  # may be filtered and grouped on
    approved_measures: tuple[str, ...] = ()  # numeric attributes that may be averaged
    metrics_port: MetricsPort = 0
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST

    @model_validator(mode="before")
    @classmethod
    def _department_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "min_population" in data:
            # An exact minimum-population refusal was an oracle on the data
            # (docs/privacy.md); small populations are protected by the noise.
            log.warning(
                "party %s: min_population is no longer used and is ignored", data.get("name")
            )
            data = {k: v for k, v in data.items() if k != "min_population"}
        if isinstance(data, dict) and not data.get("department") and "name" in data:
            return {**data, "department": data["name"]}
        return data

    @model_validator(mode="after")
    def _attributes_exist(self) -> Self:
        dept = self.department
        known = {a.name: a for a in attributes(dept)} if dept in ATTRIBUTES else {}
        for attr in self.approved_attributes:
            if attr not in known:
                raise ValueError(f"party {self.name}: {attr!r} is not an attribute of its file")
            if known[attr].is_numeric:
                raise ValueError(
                    f"party {self.name}: {attr!r} is numeric and near-unique; approve it as "
                    "a measure (approved_measures), not for filtering or grouping"
                )
        for attr in self.approved_measures:
            if attr not in known or not known[attr].is_numeric:
                raise ValueError(f"party {self.name}: {attr!r} is not a numeric attribute")
        return self


class CoordinatorConfig(_Frozen):
    address: Address
    tls: Credential
    database: Path
    audit_key: Path  # Ed25519 private key that signs the audit log (PEM)
    metrics_port: MetricsPort = 0
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST


class AnalystConfig(_Frozen):
    """An analyst the federation admits (Five Safes: safe people).

    ``accreditation`` names the accreditation the person holds (e.g. a
    researcher accreditation reference) and ``accredited_until`` its end; with
    ``require_projects`` on, the coordinator and every node refuse projects and
    queries of an analyst with none recorded or an expired one.
    """

    name: Name
    tls: Credential
    accreditation: str = Field("", max_length=200)
    accredited_until: dt.date | None = None

    def accredited_on(self, day: dt.date) -> bool:
        return (
            bool(self.accreditation)
            and self.accredited_until is not None
            and (day <= self.accredited_until)
        )


class FederationConfig(_Frozen):
    """The whole federation: who takes part, where, and the rules they follow."""

    name: Name
    ca_cert: Path
    audit_public_key: str = Field(pattern=r"^[0-9a-f]{64}$")  # Ed25519, raw hex
    paillier_bits: int = 2048
    insecure_test_keys: bool = False
    # Five Safes, safe projects: every query must cite a project each of its
    # departments' data stewards approved.
    require_projects: bool = True
    # Ages (and so the derived age_band) are computed at this date: the
    # federation's extract date, the same for every node.
    reference_date: dt.date
    # The linkage schema every node and the coordinator use (fields, weights,
    # hardening, match-keys, blocking); its fingerprint is checked each epoch.
    linkage_schema: Path | None = None
    # Where the coordinator runs comparisons: "local", or "dask://HOST:PORT"
    # for an existing Dask cluster (which then receives the CLKs: keep it on
    # the coordinator's private network).
    linkage_executor: str = Field("local", pattern=r"^(local|dask://\S+)$")
    rpc_timeout_s: float = Field(300.0, gt=0)
    max_message_bytes: int = Field(16 * 2**20, ge=2**16, le=2**30)
    output: OutputPolicy = OutputPolicy()
    privacy: PrivacyPolicy = PrivacyPolicy()
    coordinator: CoordinatorConfig
    operator: Credential
    parties: tuple[PartyConfig, ...] = Field(min_length=2)
    analysts: tuple[AnalystConfig, ...] = ()

    @field_validator("paillier_bits")
    @classmethod
    def _key_size(cls, bits: int) -> int:
        if bits not in (*ALLOWED_PAILLIER_BITS, TEST_PAILLIER_BITS):
            raise ValueError(f"must be one of {ALLOWED_PAILLIER_BITS}")
        return bits

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.paillier_bits == TEST_PAILLIER_BITS and not self.insecure_test_keys:
            raise ValueError(
                f"paillier_bits = {TEST_PAILLIER_BITS} needs insecure_test_keys = true; "
                f"production keys are {ALLOWED_PAILLIER_BITS}"
            )
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names):
            raise ValueError(f"party names must be unique, got {names}")
        addresses = [p.address for p in self.parties] + [self.coordinator.address]
        if len(set(addresses)) != len(addresses):
            raise ValueError("every party and the coordinator need their own address")
        return self

    def check_accredited(self, analyst: str, day: dt.date | None = None) -> None:
        """NotAuthorised unless ``analyst`` is an accredited analyst on ``day``
        (today by default): Five Safes, safe people."""
        day = day or dt.date.today()
        known = {a.name: a for a in self.analysts}
        entry = known.get(analyst)
        if entry is None:
            raise NotAuthorised(f"{analyst!r} is not an analyst of this federation")
        if not entry.accredited_on(day):
            until = entry.accredited_until
            raise NotAuthorised(
                f"analyst {analyst!r} has no current accreditation"
                + (f" (it ended on {until})" if until and entry.accreditation else "")
                + "; the federation admits accredited people only (Five Safes: safe people)"
            )

    def party(self, name: str) -> PartyConfig:
        """The party called ``name``; ConfigError naming the known ones if none."""
        for p in self.parties:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.parties)
        raise ConfigError(f"no party {name!r} in federation {self.name!r} (known: {known})")

    @property
    def party_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties)

    @property
    def audit_verifier(self) -> Ed25519PublicKey:
        """The public key every audit event must be signed by."""
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.audit_public_key))


def _resolve(value: Any, base: Path, key: str = "") -> Any:
    # Relative paths are relative to the config file, so a federation directory
    # can be moved or mounted elsewhere (as docker/ does) without editing it.
    path_keys = {"cert", "key", "data", "database", "ca_cert", "audit_key", "linkage_schema"}
    if isinstance(value, dict):
        return {k: _resolve(v, base, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, base, key) for v in value]
    if key in path_keys and isinstance(value, str) and not Path(value).is_absolute():
        return str(base / value)
    return value


def _missing_files(cfg: FederationConfig) -> list[str]:
    must_exist: list[tuple[str, Path]] = [("ca_cert", cfg.ca_cert)]
    if cfg.linkage_schema is not None:
        must_exist.append(("linkage_schema", cfg.linkage_schema))
    # Certificates only: private keys are each process's own and checked by
    # the process that loads one (headcount.tls), so a department's machine
    # needs no other party's key.
    must_exist += [("coordinator.tls.cert", cfg.coordinator.tls.cert)]
    must_exist += [(f"party {p.name} tls.cert", p.tls.cert) for p in cfg.parties]
    return [f"{what}: file not found: {path}" for what, path in must_exist if not path.is_file()]


def default_path() -> Path:
    """Where to find the config when none is given: $HEADCOUNT_CONFIG or ./federation.toml."""
    return Path(os.environ.get("HEADCOUNT_CONFIG", "federation.toml"))


def load(path: Path | None = None) -> FederationConfig:
    """Parse and validate the federation file; ConfigError listing every problem."""
    path = path or default_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (create one with `headcount federation init`)"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        cfg = FederationConfig.model_validate(_resolve(raw, path.resolve().parent))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError(
            f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        ) from None
    missing = _missing_files(cfg)
    if missing:
        raise ConfigError(f"{path}: {len(missing)} problem(s):\n  " + "\n  ".join(missing))
    return cfg
