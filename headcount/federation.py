"""``headcount federation init``: a CA, certificates and one federation file.

Everything a federation needs to start is written under one directory:

    ca/ca.pem, ca/ca.key            the federation CA (keep ca.key offline)
    certs/<name>.pem                one per party, coordinator, operator, analyst (public)
    keys/<name>.key                 each certificate's private key
    keys/coordinator-audit.key      Ed25519 key signing the audit log (public half in the config)
    data/<party>.csv                where each node reads its department file
    linkage-schema.toml             fields, weights, hardening, match-keys (shared by all)
    state/<name>.sqlite             each process's own state
    federation.toml                 the validated configuration

On a real deployment each department generates its own key and the CA signs a
request; this command creates all keys in one place for demos and tests.
Certificates and private keys live in separate folders so a deployment can
give every process all the certificates and only its own key
(docker/compose.yaml does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from headcount.config import (
    DEFAULT_EPSILON_PER_PERIOD,
    DEFAULT_QUERY_EPSILON,
    FederationConfig,
    load,
)
from headcount.departments import ATTRIBUTES, DEPARTMENTS, attributes
from headcount.errors import InvalidRequest
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from headcount.linkage.schema_file import dumps_schema
from headcount.tls import Role, create_ca, issue, write_private

CONFIG_NAME = "federation.toml"
_PERIOD = re.compile(r"[a-z0-9_]{1,8}")
_YEAR = re.compile(r"(19|20)[0-9]{2}")


@dataclass(frozen=True, slots=True)
class InitOptions:
    name: str = "demo"
    parties: tuple[str, ...] = DEPARTMENTS
    analysts: tuple[str, ...] = ("commissioner",)
    # Five Safes, safe people: the accreditation recorded for those analysts.
    accreditation: str = "demo accreditation (replace with the analyst's own)"
    accreditation_days: int = 365
    host: str = "127.0.0.1"
    # Address each process by its own name (coordinator:PORT, education:PORT)
    # instead of ``host``: for a container network such as docker/compose.yaml.
    # Every certificate already names its holder, so TLS checks still pass.
    service_hosts: bool = False
    base_port: int = 0  # 0: pick free ports now
    paillier_bits: int = 2048
    insecure_test_keys: bool = False
    reference_date: dt.date | None = None  # None: today
    suppress_below: int = 10
    rounding_base: int = 5
    secondary_suppression: bool = True
    require_projects: bool = True
    epsilon_per_period: float = DEFAULT_EPSILON_PER_PERIOD
    default_query_epsilon: float = DEFAULT_QUERY_EPSILON
    household_cap: int = 1
    # Find each department's own records of one person and count them once
    # (the linkage schema's [linkage] dedup).
    dedup: bool = False
    # Period snapshots: each department in period_departments becomes one
    # party per label ("immigration-2024", "immigration-2025", ...), all
    # following that department's file contract. A label that is a year puts
    # the snapshot's reference date in that year (reference_date's day and
    # month), so ages are those at the snapshot's extract date.
    periods: tuple[str, ...] = ()
    period_departments: tuple[str, ...] = ("education", "immigration")


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now."""
    # Bind all at once so the kernel hands out distinct ports; they are released
    # before the servers start, which is fine on a loopback demo.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _approved(department: str) -> list[str]:
    # Categorical attributes only: numeric ones (e.g. absence_rate) are
    # near-unique per record and would make a group-by a lookup.
    return [a.name for a in attributes(department) if not a.is_numeric]


def _party_doc(
    spec: PartySpec, address: str, tls: dict[str, str], reference: dt.date
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": spec.name,
        "address": address,
        "tls": tls,
        "data": f"data/{spec.name}.csv",
        "database": f"state/{spec.name}.sqlite",
    }
    if spec.department != spec.name:
        doc["department"] = spec.department
    if spec.period:
        doc["period"] = spec.period
        snapshot_date = period_reference_date(spec.period, reference)
        if snapshot_date is not None:
            doc["reference_date"] = snapshot_date
    doc["approved_attributes"] = _approved(spec.department)
    doc["approved_measures"] = [a.name for a in attributes(spec.department) if a.is_numeric]
    return doc


@dataclass(frozen=True, slots=True)
class PartySpec:
    """One party to create: its name, department and (optional) period."""

    name: str
    department: str
    period: str = ""


def party_specs(opts: InitOptions) -> tuple[PartySpec, ...]:
    """The parties ``opts`` asks for, period snapshots expanded in label order."""
    out: list[PartySpec] = []
    for dept in opts.parties:
        if opts.periods and dept in opts.period_departments:
            out.extend(PartySpec(f"{dept}-{label}", dept, label) for label in opts.periods)
        else:
            out.append(PartySpec(dept, dept))
    return tuple(out)


def period_reference_date(label: str, reference: dt.date) -> dt.date | None:
    """``reference`` moved to the year ``label`` names; None if it names no year."""
    if not _YEAR.fullmatch(label):
        return None
    try:
        return reference.replace(year=int(label))
    except ValueError:  # 29 February in a year that has none
        return reference.replace(year=int(label), day=28)


def init_federation(directory: Path, opts: InitOptions = InitOptions()) -> FederationConfig:
    """Create a new federation under ``directory``; InvalidRequest if one exists."""
    config_path = directory / CONFIG_NAME
    if config_path.exists():
        raise InvalidRequest(f"{config_path} already exists; choose another directory")
    unknown = [p for p in opts.parties if p not in ATTRIBUTES]
    if unknown:
        raise InvalidRequest(f"unknown department(s) {unknown}; known: {list(DEPARTMENTS)}")
    bad_labels = [p for p in opts.periods if not _PERIOD.fullmatch(p)]
    if bad_labels or len(set(opts.periods)) != len(opts.periods):
        raise InvalidRequest(
            f"period labels must be distinct, 1-8 of [a-z0-9_], got {list(opts.periods)}"
        )
    unknown = [p for p in opts.period_departments if p not in ATTRIBUTES]
    if unknown:
        raise InvalidRequest(f"unknown period department(s) {unknown}")
    specs = party_specs(opts)
    if len(specs) < 2:
        raise InvalidRequest("a federation needs at least two parties")
    reference = opts.reference_date or dt.date.today()
    directory.mkdir(parents=True, exist_ok=True)
    ca = create_ca(directory / "ca", opts.name)
    certs = directory / "certs"
    keys = directory / "keys"

    def cred(name: str, role: Role) -> dict[str, str]:
        issued = issue(ca, certs, name, role, key_directory=keys)
        return {
            "cert": str(issued.cert_path.relative_to(directory)),
            "key": str(issued.key_path.relative_to(directory)),
        }

    audit_key = Ed25519PrivateKey.generate()
    write_private(
        keys / "coordinator-audit.key",
        audit_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    )
    audit_public = audit_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    n = len(specs) + 1
    ports = (
        list(range(opts.base_port, opts.base_port + n))
        if opts.base_port
        else free_ports(opts.host, n)
    )
    doc: dict[str, Any] = {
        "name": opts.name,
        "ca_cert": "ca/ca.pem",
        "audit_public_key": audit_public,
        "paillier_bits": opts.paillier_bits,
        "insecure_test_keys": opts.insecure_test_keys,
        "require_projects": opts.require_projects,
        "reference_date": reference,
        "linkage_schema": "linkage-schema.toml",
        "output": {
            "suppress_below": opts.suppress_below,
            "rounding_base": opts.rounding_base,
            "secondary_suppression": opts.secondary_suppression,
        },
        "privacy": {
            "epsilon_per_period": opts.epsilon_per_period,
            "period": "year",
            "default_query_epsilon": opts.default_query_epsilon,
            "household_cap": opts.household_cap,
        },
        "coordinator": {
            "address": f"{'coordinator' if opts.service_hosts else opts.host}:{ports[0]}",
            "tls": cred("coordinator", Role.COORDINATOR),
            "database": "state/coordinator.sqlite",
            "audit_key": "keys/coordinator-audit.key",
        },
        "operator": cred("operator", Role.OPERATOR),
        "parties": [
            _party_doc(
                spec,
                f"{spec.name if opts.service_hosts else opts.host}:{port}",
                cred(spec.name, Role.PARTY),
                reference,
            )
            for spec, port in zip(specs, ports[1:], strict=True)
        ],
        "analysts": [
            {
                "name": a,
                "tls": cred(a, Role.ANALYST),
                # Safe people: replace with the person's real accreditation.
                "accreditation": opts.accreditation,
                "accredited_until": dt.date.today() + dt.timedelta(days=opts.accreditation_days),
            }
            for a in opts.analysts
        ],
    }
    schema = dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, dedup=opts.dedup)
    (directory / "linkage-schema.toml").write_text(dumps_schema(schema))
    (directory / "data").mkdir(exist_ok=True)
    (directory / "state").mkdir(exist_ok=True)
    config_path.write_text(
        "# Headcount federation, written by `headcount federation init`.\n"
        "# Paths are relative to this file.\n" + tomli_w.dumps(doc)
    )
    return load(config_path)
