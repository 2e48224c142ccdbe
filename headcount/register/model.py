"""What the transparency register shows, read from a copy of the audit log.

The register trusts nothing it reads: it opens the coordinator's SQLite file
read-only, checks the hash chain and every signature with ``verify_chain``
against the federation's audit public key, and marks every event from the
first bad one onwards as unverified. Bodies are read defensively (a tampered
body may hold any JSON), so a broken log still renders, with the failure shown.

Everything here comes from the signed log, not from the coordinator's other
tables, so the public sees only what the chain vouches for.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from headcount.config import FederationConfig
from headcount.domain.audit import AuditEvent, verify_chain
from headcount.domain.projects import ProjectDoc, verify_decision
from headcount.errors import FailedPrecondition, HeadcountError, InvalidRequest
from headcount.privacy.accountant import compose, period_of
from headcount.protect.sdc import SdcPolicy

log = logging.getLogger(__name__)

_BAD_SEQ_RE = re.compile(r"at seq (\d+)")
_BUSY_TIMEOUT_S = 30.0

# Query outcomes, as the register names them.
RELEASED = "released"
REFUSED = "refused"
ABORTED = "aborted"  # the coordinator stopped mid-query; no table, budgets may be charged
NO_OUTCOME = "no outcome recorded"  # failed, or still running when the register was built

# Epoch statuses.
EPOCH_COMPLETED = "completed"
EPOCH_ABORTED = "aborted"
EPOCH_RUNNING = "not completed"  # running when the register was built, or failed

# Project statuses at the time the register is built.
APPROVED = "approved"
AWAITING = "awaiting approval"
EXPIRED = "expired"
REVOKED = "revoked"
PROJECT_ORDER = (APPROVED, AWAITING, EXPIRED, REVOKED)


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of checking the whole stored chain.

    ``first_bad_seq`` is the position where the chain breaks (None when it
    verifies); every event before it verified, none from it on is trusted.
    """

    events: int
    head: str  # head hash of the verified chain; "" when it fails
    key_hex: str  # the federation's audit public key, raw hex
    first_bad_seq: int | None = None
    first_bad_kind: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and not self.message

    def trusted(self, seq: int) -> bool:
        """Whether the event at ``seq`` lies in the verified part of the chain."""
        return self.ok or (self.first_bad_seq is not None and seq < self.first_bad_seq)


@dataclass(frozen=True, slots=True)
class Approval:
    party: str
    seq: int
    at: str
    signature_ok: bool  # checked against the department's certificate


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str
    title: str
    purpose: str
    analyst: str
    parties: tuple[str, ...]
    expires: str  # ISO date
    status: str  # one of PROJECT_ORDER
    approvals: tuple[Approval, ...]
    seq: int  # the project_proposed event
    at: str
    trusted: bool


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One department's privacy budget in one period (epsilon), across every epoch."""

    period: str
    party: str
    budget: float
    spent: float  # queries released or without outcome; refusals are not charged
    queries: int

    @property
    def left(self) -> float:
        return self.budget - self.spent


@dataclass(frozen=True, slots=True)
class Epoch:
    epoch_id: str
    seq: int  # the epoch event (epoch_started or epoch_aborted if it never completed)
    at: str
    status: str  # EPOCH_COMPLETED, EPOCH_ABORTED or EPOCH_RUNNING
    records: Mapping[str, int]  # each department's own size, which it publishes
    threshold: float | None
    trusted: bool


@dataclass(frozen=True, slots=True)
class Cell:
    group: str
    column: str
    value: int | None  # None: suppressed
    status: str  # released, primary or secondary
    mean: float | None
    sum: float | None
    interval: tuple[int, int] | None = None  # holds the true count in 95% of releases
    mean_interval: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    column_attribute: str
    measure_attribute: str
    cells: tuple[Cell, ...]
    total: int | None
    epsilon: float | None
    noise_scale: float | None
    total_interval: tuple[int, int] | None = None


def _pair(value: Any) -> tuple[float, float] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return float(value[0]), float(value[1])
    return None


def _int_pair(value: Any) -> tuple[int, int] | None:
    pair = _pair(value)
    return None if pair is None else (int(pair[0]), int(pair[1]))


@dataclass(frozen=True, slots=True)
class Query:
    seq: int  # the query event (or the refusal, if no query event exists)
    query_id: str
    epoch_id: str
    at: str
    project_id: str
    role: str
    analyst: str
    purpose: str
    parties: tuple[str, ...]
    epsilon: float | None
    status: str  # RELEASED, REFUSED, ABORTED or NO_OUTCOME
    reason: str  # why it was refused or aborted
    table: Table | None
    budget_left: Mapping[str, float]  # per department, after the release
    spec: Mapping[str, Any]
    event_seqs: tuple[int, ...]  # every event about this query
    trusted: bool

    @property
    def page(self) -> str:
        """File name of the query's own page (from the seq: never from log text)."""
        return f"query-{self.seq}.html"


_DEFAULT_POLICY = SdcPolicy()


@dataclass(frozen=True, slots=True)
class Register:
    federation: str
    built_at: str  # UTC ISO time
    epsilon_per_period: float
    verification: Verification
    events: tuple[AuditEvent, ...]
    malformed: tuple[int, ...]  # seqs of stored rows that are not events at all
    projects: tuple[Project, ...] = ()
    epochs: tuple[Epoch, ...] = ()
    queries: tuple[Query, ...] = ()
    period: str = "year"
    budgets: tuple[BudgetLine, ...] = ()  # newest period first
    policy: SdcPolicy = _DEFAULT_POLICY  # the federation's small-number rule, for the labels


def _budgets(
    queries: Sequence[Query], parties: Sequence[str], budget: float, period: str
) -> tuple[BudgetLine, ...]:
    """Spent and left per department per period: every query that reached a
    department counts (refusals charge nothing), whatever its epoch."""
    by_period: dict[str, dict[str, list[float]]] = {}
    for q in queries:
        if q.status == REFUSED or q.epsilon is None:
            continue
        try:
            day = dt.datetime.fromisoformat(q.at).date()
        except ValueError:
            continue
        per_party = by_period.setdefault(period_of(day, period), {})
        for party in q.parties:
            per_party.setdefault(party, []).append(q.epsilon)
    now = period_of(dt.datetime.now(dt.UTC).date(), period)
    by_period.setdefault(now, {})
    lines = []
    for label in sorted(by_period, reverse=True):
        for party in parties:
            charges = by_period[label].get(party, [])
            lines.append(BudgetLine(label, party, budget, compose(charges), len(charges)))
    return tuple(lines)


# -- reading ------------------------------------------------------------------------------
def read_rows(db_path: Path) -> list[tuple[Any, ...]]:
    """Every stored audit row in seq order, from the file opened read-only.

    Raises ``FailedPrecondition`` if the file is missing or is not SQLite. A
    database without an audit table is an empty log.
    """
    if not db_path.is_file():
        raise FailedPrecondition(
            f"no audit log at {db_path}: has the coordinator run? (or pass --db)"
        )
    uri = db_path.resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S)) as conn:
            try:
                return conn.execute(
                    "SELECT seq, kind, body, at, prev_hash, hash, signature FROM audit_events"
                    " ORDER BY seq"
                ).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
    except sqlite3.DatabaseError as exc:
        hint = ""
        shm = db_path.with_name(db_path.name + "-shm")
        if (
            isinstance(exc, sqlite3.OperationalError)
            and not shm.exists()
            and not os.access(db_path.parent, os.W_OK)
        ):
            # The WAL's -wal and -shm files exist only while a writer holds the
            # file open, and this reader may not create them (a read-only mount:
            # "unable to open database file"; a directory of another user's:
            # "attempt to write a readonly database").
            hint = (
                " (from a directory this process cannot write, SQLite opens it only while"
                " the coordinator serves: it keeps the file's -wal and -shm beside it)"
            )
        raise FailedPrecondition(f"{db_path} is not a readable audit log: {exc}{hint}") from None


def _to_event(row: Sequence[Any]) -> AuditEvent:
    seq, kind, body, at, prev_hash, hash_, signature = row
    return AuditEvent(
        seq, kind, json.loads(body), at, prev_hash, hash_, signature if signature else ""
    )


def verify_rows(
    rows: Sequence[Sequence[Any]], key: Ed25519PublicKey
) -> tuple[list[AuditEvent], list[int], Verification]:
    """Parse and verify stored rows: (events that parse, seqs that do not, outcome)."""
    events: list[AuditEvent] = []
    malformed: list[int] = []
    first_malformed: int | None = None  # position in rows
    for position, row in enumerate(rows):
        try:
            events.append(_to_event(row))
        except (InvalidRequest, ValueError, TypeError):
            malformed.append(row[0] if isinstance(row[0], int) else position)
            if first_malformed is None:
                first_malformed = position
    key_hex = key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    prefix = events if first_malformed is None else events[:first_malformed]
    try:
        head = verify_chain(prefix, key)
    except HeadcountError as exc:
        # verify_chain stops at the first bad position and names it.
        match = _BAD_SEQ_RE.search(str(exc))
        bad = int(match.group(1)) if match else 0
        kind = prefix[bad].kind if bad < len(prefix) else ""
        return events, malformed, Verification(len(rows), "", key_hex, bad, kind, str(exc))
    if first_malformed is not None:
        message = f"audit chain broken at seq {first_malformed}: stored event is malformed"
        return events, malformed, Verification(len(rows), "", key_hex, first_malformed, "", message)
    return events, malformed, Verification(len(rows), head, key_hex)


# -- defensive body access ---------------------------------------------------------------------
def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_table(raw: Any) -> Table | None:
    """A released table from its audit JSON; None if it is not one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None
    cells = []
    for c in raw["cells"]:
        if not isinstance(c, dict):
            return None
        cells.append(
            Cell(
                _str(c, "group"),
                _str(c, "column"),
                _int(c.get("value")),
                _str(c, "status"),
                _float(c.get("mean")),
                _float(c.get("sum")),
                _int_pair(c.get("interval")),
                _pair(c.get("mean_interval")),
            )
        )
    return Table(
        _str(raw, "title"),
        _str(raw, "column_attribute"),
        _str(raw, "measure_attribute"),
        tuple(cells),
        _int(raw.get("total")),
        _float(raw.get("epsilon")),
        _float(raw.get("noise_scale")),
        _int_pair(raw.get("total_interval")),
    )


# -- deriving what the public sees ------------------------------------------------------------
def _projects(
    events: Sequence[AuditEvent], ver: Verification, cfg: FederationConfig, today: dt.date
) -> tuple[Project, ...]:
    proposed: dict[str, tuple[AuditEvent, ProjectDoc | None, dict[str, Any]]] = {}
    approvals: dict[str, list[Approval]] = {}
    revoked: set[str] = set()
    for e in events:
        if e.kind == "project_proposed":
            raw = _mapping(e.body.get("project"))
            pid = _str(raw, "project_id")
            try:
                doc: ProjectDoc | None = ProjectDoc.from_json(dict(raw))
            except (HeadcountError, KeyError, TypeError, ValueError, AttributeError):
                doc = None
            proposed.setdefault(pid, (e, doc, dict(raw)))
        elif e.kind == "project_approved":
            pid, party = _str(e.body, "project_id"), _str(e.body, "party")
            entry = proposed.get(pid)
            ok = entry is not None and entry[1] is not None
            if ok and entry is not None and entry[1] is not None:
                ok = _approval_verifies(entry[1], party, _str(e.body, "signature"), cfg)
            approvals.setdefault(pid, []).append(Approval(party, e.seq, e.at, ok))
        elif e.kind == "project_revoked":
            revoked.add(_str(e.body, "project_id"))
    out = []
    for pid, (e, doc, raw) in proposed.items():
        parties = _strs(raw.get("parties"))
        approved_by = {a.party for a in approvals.get(pid, []) if a.signature_ok}
        expires = _str(raw, "expires")
        if pid in revoked:
            status = REVOKED
        elif doc is not None and doc.expires < today:
            status = EXPIRED
        elif doc is not None and approved_by >= set(parties):
            status = APPROVED
        else:
            status = AWAITING
        out.append(
            Project(
                pid,
                _str(raw, "title"),
                _str(raw, "purpose"),
                _str(raw, "analyst"),
                parties,
                expires,
                status,
                tuple(approvals.get(pid, [])),
                e.seq,
                e.at,
                ver.trusted(e.seq),
            )
        )
    out.sort(key=lambda p: (PROJECT_ORDER.index(p.status), p.seq))
    return tuple(out)


def _approval_verifies(
    doc: ProjectDoc, party: str, signature_hex: str, cfg: FederationConfig
) -> bool:
    """Whether the department's own certificate key signed this approval."""
    if party not in cfg.party_names:
        return False
    try:
        cert_pem = cfg.party(party).tls.cert.read_bytes()
        verify_decision(doc, "approve", party, bytes.fromhex(signature_hex), cert_pem)
    except (HeadcountError, ValueError, OSError):
        return False
    return True


def _queries(events: Sequence[AuditEvent], ver: Verification) -> tuple[Query, ...]:
    by_id: dict[str, dict[str, AuditEvent]] = {}
    order: list[str] = []
    for e in events:
        if e.kind not in ("query", "release", "refusal", "query_aborted"):
            continue
        qid = _str(e.body, "query_id")
        if qid not in by_id:
            by_id[qid] = {}
            order.append(qid)
        by_id[qid].setdefault(e.kind, e)
    out = []
    for qid in order:
        found = by_id[qid]
        first = found.get("query") or min(found.values(), key=lambda e: e.seq)
        release, refusal = found.get("release"), found.get("refusal")
        aborted = found.get("query_aborted")
        body = first.body
        if release is not None:
            status = RELEASED
        elif refusal is not None:
            status = REFUSED
        elif aborted is not None:
            status = ABORTED
        else:
            status = NO_OUTCOME
        seqs = tuple(sorted(e.seq for e in found.values()))
        left = _mapping(release.body.get("budget_remaining")) if release else {}
        out.append(
            Query(
                seq=first.seq,
                query_id=qid,
                epoch_id=_str(body, "epoch_id")
                or (_str(release.body, "epoch_id") if release else ""),
                at=first.at,
                project_id=_str(body, "project_id"),
                role=_str(body, "role") or ("analyst" if _str(body, "analyst") else ""),
                analyst=_str(body, "analyst"),
                purpose=_str(body, "purpose"),
                parties=_strs(body.get("parties")),
                epsilon=_float(body.get("epsilon")),
                status=status,
                reason=_str((refusal or aborted or first).body, "reason"),
                table=parse_table(release.body.get("table")) if release else None,
                budget_left={p: f for p, v in left.items() if (f := _float(v)) is not None},
                spec=_mapping(body.get("spec")),
                event_seqs=seqs,
                trusted=all(ver.trusted(s) for s in seqs),
            )
        )
    return tuple(out)


def _epochs(events: Sequence[AuditEvent], ver: Verification) -> tuple[Epoch, ...]:
    started: dict[str, AuditEvent] = {}
    done: dict[str, AuditEvent] = {}
    aborted: dict[str, AuditEvent] = {}
    order: list[str] = []
    kinds = {"epoch_started": started, "epoch": done, "epoch_aborted": aborted}
    for e in events:
        if e.kind not in kinds:
            continue
        eid = _str(e.body, "epoch_id")
        if not any(eid in found for found in kinds.values()):
            order.append(eid)
        kinds[e.kind].setdefault(eid, e)
    out = []
    for eid in order:
        event = done.get(eid) or started.get(eid) or aborted[eid]
        if eid in done:
            status = EPOCH_COMPLETED
        elif eid in aborted:
            status = EPOCH_ABORTED
        else:
            status = EPOCH_RUNNING
        body = event.body
        records = {
            p: i for p, n in _mapping(body.get("records")).items() if (i := _int(n)) is not None
        }
        out.append(
            Epoch(
                eid,
                event.seq,
                event.at,
                status,
                records,
                _float(body.get("threshold")),
                all(ver.trusted(found[eid].seq) for found in kinds.values() if eid in found),
            )
        )
    return tuple(out)


def load_register(
    cfg: FederationConfig, db_path: Path | None = None, *, now: dt.datetime | None = None
) -> Register:
    """Read, verify and interpret the audit log at ``db_path`` (default: the
    coordinator's state file). Raises ``FailedPrecondition`` if it cannot be read;
    a log that fails verification is returned with the failure recorded."""
    path = db_path or cfg.coordinator.database
    now = now or dt.datetime.now(dt.UTC)
    rows = read_rows(path)
    events, malformed, ver = verify_rows(rows, cfg.audit_verifier)
    if ver.ok:
        log.info("register: %d events verified, head %s", ver.events, ver.head)
    else:
        log.warning("register: audit log at %s fails verification: %s", path, ver.message)
    queries = _queries(events, ver)
    budget = cfg.privacy.epsilon_per_period
    return Register(
        period=cfg.privacy.period,
        budgets=_budgets(queries, cfg.party_names, budget, cfg.privacy.period),
        federation=cfg.name,
        built_at=now.astimezone(dt.UTC).isoformat(timespec="seconds"),
        epsilon_per_period=budget,
        verification=ver,
        events=tuple(events),
        malformed=tuple(malformed),
        projects=_projects(events, ver, cfg, now.date()),
        epochs=_epochs(events, ver),
        queries=queries,
        policy=SdcPolicy(
            cfg.output.suppress_below, cfg.output.rounding_base, cfg.output.secondary_suppression
        ),
    )
