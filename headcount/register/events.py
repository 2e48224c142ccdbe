"""Typed views of audit events, one per kind, for the register's pages.

An event whose body is exactly its kind's (`headcount.domain.events`, as the
coordinator logs it) is read through that kind's dataclass (``_typed``). A
tampered log may fill a body with anything, so a body its kind refuses is
read defensively instead, field by field (``_VIEWS``: a field of the wrong
type reads as missing), keeping what its kind does not name as ``extra``
rows: nothing in the log is hidden from the page, and nothing reaches it
except as text the templates escape. Both readers give the same view of a
well-formed body. A kind this module does not know is shown as an escaped
key/value table (``UnknownDetail``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from headcount.domain.audit import AuditEvent
from headcount.domain.events import (
    CeremonyHeld,
    EpochAborted,
    EpochLinked,
    EpochStarted,
    Event,
    ProjectApproved,
    ProjectProposed,
    ProjectRevoked,
    QueryAborted,
    QueryAnnounced,
    QueryRefused,
    TableReleased,
    UnknownEvent,
    parse_event,
)
from headcount.errors import InvalidRequest
from headcount.privacy.noise import guessing_bound
from headcount.register.model import Register, Table, parse_table

# Bounds on what the generic key/value table shows of one value.
_MAX_ROWS = 200
_MAX_DEPTH = 6
_MAX_TEXT = 2_000


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a key/value table: a dotted path and a scalar as text."""

    key: str
    value: str


# -- defensive body access ---------------------------------------------------------------------
def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _num(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _strs(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = body.get(key)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _map(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _pairs(raw: Mapping[str, Any], kind: type) -> tuple[tuple[str, Any], ...]:
    """(key, value) of a JSON object, values of ``kind`` only (bool is never a number)."""
    return tuple(
        (k, v)
        for k, v in sorted(raw.items())
        if isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool)
    )


def flatten(value: Any, prefix: str = "") -> tuple[Row, ...]:
    """A JSON value as (path, scalar text) rows, at most ``_MAX_ROWS`` of them."""
    rows: list[Row] = []

    def walk(v: Any, path: str, depth: int) -> None:
        if len(rows) >= _MAX_ROWS:
            return
        if isinstance(v, dict) and v and depth < _MAX_DEPTH:
            for k in sorted(v, key=str):
                walk(v[k], f"{path}.{k}" if path else str(k), depth + 1)
        elif isinstance(v, list) and v and depth < _MAX_DEPTH:
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]", depth + 1)
        else:
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
            if len(text) > _MAX_TEXT:
                text = text[:_MAX_TEXT] + f"… ({len(text):,} characters)"
            rows.append(Row(path or "(value)", text))

    walk(value, prefix, 0)
    if len(rows) >= _MAX_ROWS:
        rows.append(Row("…", "further fields not shown"))
    return tuple(rows)


def _named(kind: type[Event]) -> tuple[str, ...]:
    """The body fields ``kind`` names: its dataclass fields, which its body mirrors."""
    return tuple(f.name for f in fields(kind))


def _extra(body: Mapping[str, Any], *known: str) -> tuple[Row, ...]:
    """The fields of ``body`` not in ``known``, as rows (a view shows every field)."""
    rest = {k: v for k, v in body.items() if k not in known}
    return flatten(rest) if rest else ()


# -- one detail class per kind ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CeremonyDetail:
    ceremony_id: str
    parties: tuple[str, ...]
    commitments: tuple[tuple[str, str], ...]  # (party, hex digest of its contribution)
    confirmed: bool | None


@dataclass(frozen=True, slots=True)
class EpochStartedDetail:
    epoch_id: str
    ceremony_id: str
    parties: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EpochDetail:
    epoch_id: str
    ceremony_id: str
    records: tuple[tuple[str, int], ...]  # each department's own dataset size
    commitments: tuple[tuple[str, str], ...]
    schema_fingerprint: str
    threshold: float | None

    @property
    def total_records(self) -> int:
        return sum(n for _, n in self.records)


@dataclass(frozen=True, slots=True)
class AbortedDetail:
    """An epoch or a query the coordinator stopped; ``subject`` names which."""

    subject: str  # "epoch" or "query"
    identifier: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProjectProposedDetail:
    project_id: str
    title: str
    purpose: str
    analyst: str
    parties: tuple[str, ...]
    expires: str
    digest: str


@dataclass(frozen=True, slots=True)
class ProjectDecisionDetail:
    decision: str  # "approved" or "revoked"
    project_id: str
    party: str
    role: str
    digest: str
    signature: str


@dataclass(frozen=True, slots=True)
class QueryDetail:
    query_id: str
    epoch_id: str
    project_id: str
    analyst: str
    role: str
    purpose: str
    parties: tuple[str, ...]
    epsilon: float | None
    asked: tuple[tuple[str, str], ...]  # the specification in words
    sensitivity: float | None
    shareholders: tuple[str, ...]  # parties whose noise shares make up the noise
    categories: tuple[str, ...]  # the groups the origin packs counters for

    @property
    def guessing_bound(self) -> float | None:
        return None if self.epsilon is None or self.epsilon <= 0 else guessing_bound(self.epsilon)


@dataclass(frozen=True, slots=True)
class Budget:
    party: str
    spent: float | None  # by this query
    left: float | None  # in the period, after it


@dataclass(frozen=True, slots=True)
class ReleaseDetail:
    query_id: str
    epoch_id: str
    analyst: str
    purpose: str
    parties: tuple[str, ...]
    epsilon: float | None
    period: str
    budgets: tuple[Budget, ...]
    table: Table | None


@dataclass(frozen=True, slots=True)
class RefusalDetail:
    query_id: str
    analyst: str
    purpose: str
    reason: str
    abandoned_by: str  # the origin that signed its promise never to decrypt, if any


@dataclass(frozen=True, slots=True)
class UnknownDetail:
    rows: tuple[Row, ...]


Detail = (
    CeremonyDetail
    | EpochStartedDetail
    | EpochDetail
    | AbortedDetail
    | ProjectProposedDetail
    | ProjectDecisionDetail
    | QueryDetail
    | ReleaseDetail
    | RefusalDetail
    | UnknownDetail
)


def _ceremony(b: Mapping[str, Any]) -> tuple[CeremonyDetail, tuple[Row, ...]]:
    confirmed = b.get("confirmed")
    return CeremonyDetail(
        _str(b, "ceremony_id"),
        _strs(b, "parties"),
        _pairs(_map(b, "commitments"), str),
        confirmed if isinstance(confirmed, bool) else None,
    ), _extra(b, *_named(CeremonyHeld))


def _epoch_started(b: Mapping[str, Any]) -> tuple[EpochStartedDetail, tuple[Row, ...]]:
    return EpochStartedDetail(
        _str(b, "epoch_id"), _str(b, "ceremony_id"), _strs(b, "parties")
    ), _extra(b, *_named(EpochStarted))


def _epoch(b: Mapping[str, Any]) -> tuple[EpochDetail, tuple[Row, ...]]:
    return EpochDetail(
        _str(b, "epoch_id"),
        _str(b, "ceremony_id"),
        _pairs(_map(b, "records"), int),
        _pairs(_map(b, "commitments"), str),
        _str(b, "schema_fingerprint"),
        _num(b, "threshold"),
    ), _extra(b, *_named(EpochLinked))


def _epoch_aborted(b: Mapping[str, Any]) -> tuple[AbortedDetail, tuple[Row, ...]]:
    detail = AbortedDetail("epoch", _str(b, "epoch_id"), _str(b, "reason"))
    return detail, _extra(b, *_named(EpochAborted))


def _query_aborted(b: Mapping[str, Any]) -> tuple[AbortedDetail, tuple[Row, ...]]:
    detail = AbortedDetail("query", _str(b, "query_id"), _str(b, "reason"))
    return detail, _extra(b, *_named(QueryAborted))


def _project_proposed(b: Mapping[str, Any]) -> tuple[ProjectProposedDetail, tuple[Row, ...]]:
    p = _map(b, "project")
    known = {"project_id", "title", "purpose", "analyst", "parties", "expires"}
    detail = ProjectProposedDetail(
        _str(p, "project_id"),
        _str(p, "title"),
        _str(p, "purpose"),
        _str(p, "analyst"),
        _strs(p, "parties"),
        _str(p, "expires"),
        _str(b, "digest"),
    )
    # Fields of the project itself that this view does not name stay visible too.
    unnamed = {k: v for k, v in p.items() if k not in known}
    return detail, _extra(b, *_named(ProjectProposed)) + (
        flatten(unnamed, "project") if unnamed else ()
    )


def _decision(decision: str) -> Callable[[Mapping[str, Any]], tuple[Detail, tuple[Row, ...]]]:
    def view(b: Mapping[str, Any]) -> tuple[Detail, tuple[Row, ...]]:
        return ProjectDecisionDetail(
            decision,
            _str(b, "project_id"),
            _str(b, "party"),
            _str(b, "role"),
            _str(b, "digest"),
            _str(b, "signature"),
        ), _extra(b, *_named(ProjectApproved))

    return view


def _query(b: Mapping[str, Any]) -> tuple[QueryDetail, tuple[Row, ...]]:
    noise, packing = _map(b, "noise"), _map(b, "packing")
    return QueryDetail(
        _str(b, "query_id"),
        _str(b, "epoch_id"),
        _str(b, "project_id"),
        _str(b, "analyst"),
        _str(b, "role"),
        _str(b, "purpose"),
        _strs(b, "parties"),
        _num(b, "epsilon"),
        describe_spec(_map(b, "spec")),
        _num(noise, "sensitivity"),
        _strs(noise, "shareholders"),
        _strs(packing, "categories"),
    ), _extra(b, *_named(QueryAnnounced))


def _release(b: Mapping[str, Any]) -> tuple[ReleaseDetail, tuple[Row, ...]]:
    parties = _strs(b, "parties")
    epsilon = _num(b, "epsilon")
    budgets = _budgets(parties, epsilon, _map(b, "budget_remaining"))
    return ReleaseDetail(
        _str(b, "query_id"),
        _str(b, "epoch_id"),
        _str(b, "analyst"),
        _str(b, "purpose"),
        parties,
        epsilon,
        _str(b, "period"),
        budgets,
        parse_table(b.get("table")),
    ), _extra(b, *_named(TableReleased))


def _refusal(b: Mapping[str, Any]) -> tuple[RefusalDetail, tuple[Row, ...]]:
    abandonment = _map(b, "abandonment")
    return RefusalDetail(
        _str(b, "query_id"),
        _str(b, "analyst"),
        _str(b, "purpose"),
        _str(b, "reason"),
        _str(abandonment, "party"),
    ), _extra(b, *_named(QueryRefused))


_VIEWS: dict[str, Callable[[Mapping[str, Any]], tuple[Detail, tuple[Row, ...]]]] = {
    "ceremony": _ceremony,
    "epoch_started": _epoch_started,
    "epoch": _epoch,
    "epoch_aborted": _epoch_aborted,
    "project_proposed": _project_proposed,
    "project_approved": _decision("approved"),
    "project_revoked": _decision("revoked"),
    "query": _query,
    "release": _release,
    "refusal": _refusal,
    "query_aborted": _query_aborted,
}
KNOWN_KINDS: tuple[str, ...] = tuple(_VIEWS)


@dataclass(frozen=True, slots=True)
class EventView:
    """One audit event as the register shows it.

    ``partial`` names the template that renders ``detail``; ``extra`` holds the
    body's fields the kind does not name; ``query_page`` is the page of the
    query the event is about ("" if none).
    """

    event: AuditEvent
    trusted: bool
    first_bad: bool
    summary: str
    partial: str
    detail: Detail
    extra: tuple[Row, ...]
    query_page: str

    @property
    def seq(self) -> int:
        return self.event.seq

    @property
    def page(self) -> str:
        """File name of the event's own page (from the seq: never from log text)."""
        return event_page(self.event.seq)


def event_page(seq: int) -> str:
    return f"event-{seq}.html"


def _budgets(
    parties: tuple[str, ...], epsilon: float | None, left: Mapping[str, Any]
) -> tuple[Budget, ...]:
    return tuple(Budget(p, epsilon, _num(left, p)) for p in (parties or tuple(sorted(left))))


def _typed(e: Event) -> Detail:
    """The view of a well-formed event: the same as ``_VIEWS`` gives of its body."""
    if isinstance(e, CeremonyHeld):
        commitments = tuple(sorted(e.commitments.items()))
        return CeremonyDetail(e.ceremony_id, e.parties, commitments, e.confirmed)
    if isinstance(e, EpochStarted):
        return EpochStartedDetail(e.epoch_id, e.ceremony_id, e.parties)
    if isinstance(e, EpochLinked):
        return EpochDetail(
            e.epoch_id,
            e.ceremony_id,
            tuple(sorted(e.records.items())),
            tuple(sorted(e.commitments.items())),
            e.schema_fingerprint,
            float(e.threshold),
        )
    if isinstance(e, EpochAborted):
        return AbortedDetail("epoch", e.epoch_id, e.reason)
    if isinstance(e, QueryAborted):
        return AbortedDetail("query", e.query_id, e.reason)
    if isinstance(e, ProjectProposed):
        p = e.project
        return ProjectProposedDetail(
            p.project_id, p.title, p.purpose, p.analyst, p.parties, p.expires.isoformat(), e.digest
        )
    if isinstance(e, ProjectApproved | ProjectRevoked):
        decision = "approved" if isinstance(e, ProjectApproved) else "revoked"
        return ProjectDecisionDetail(decision, e.project_id, e.party, e.role, e.digest, e.signature)
    if isinstance(e, QueryAnnounced):
        noise, packing = e.noise or {}, e.packing or {}
        return QueryDetail(
            e.query_id,
            e.epoch_id,
            e.project_id or "",
            e.analyst or "",
            e.role or "",
            e.purpose,
            e.parties,
            float(e.epsilon),
            describe_spec(e.spec or {}),
            _num(noise, "sensitivity"),
            _strs(noise, "shareholders"),
            _strs(packing, "categories"),
        )
    if isinstance(e, TableReleased):
        epsilon = float(e.epsilon)
        return ReleaseDetail(
            e.query_id,
            e.epoch_id,
            e.analyst,
            e.purpose,
            e.parties,
            epsilon,
            e.period,
            _budgets(e.parties, epsilon, e.budget_remaining),
            parse_table(e.table),
        )
    abandoned_by = e.abandonment.party if e.abandonment is not None else ""
    return RefusalDetail(e.query_id, e.analyst, e.purpose, e.reason, abandoned_by)


def view_event(reg: Register, event: AuditEvent) -> EventView:
    """The typed view of ``event`` within the register ``reg``."""
    body = event.body if isinstance(event.body, Mapping) else {}
    detail: Detail
    extra: tuple[Row, ...] = ()
    try:
        typed: Event | UnknownEvent | None = parse_event(event.kind, body)
    except InvalidRequest:
        typed = None  # not this kind's body (a tampered log): read it field by field
    partial = f"events/{event.kind}.html"
    if isinstance(typed, UnknownEvent):
        detail, partial = UnknownDetail(flatten(dict(body))), "events/unknown.html"
    elif typed is not None:
        detail = _typed(typed)
    else:
        detail, extra = _VIEWS[event.kind](body)
    pages = {q.query_id: q.page for q in reg.queries}
    ver = reg.verification
    return EventView(
        event,
        ver.trusted(event.seq),
        event.seq == ver.first_bad_seq,
        summarise(event),
        partial,
        detail,
        extra,
        pages.get(_str(body, "query_id"), ""),
    )


# -- words -------------------------------------------------------------------------------------
def _short(identifier: str, n: int = 12) -> str:
    return identifier[:n] + ("…" if len(identifier) > n else "")


def summarise(e: AuditEvent) -> str:
    """One line about the event, for the list of all events."""
    b = e.body
    s = {k: v for k, v in b.items() if isinstance(v, str)}
    if e.kind == "ceremony":
        n = len(_strs(b, "parties"))
        confirmed = ", confirmed" if b.get("confirmed") is True else ", not confirmed"
        return f"key ceremony with {n} departments{confirmed}"
    if e.kind == "epoch_started":
        return f"linkage epoch {_short(s.get('epoch_id', ''))} started"
    if e.kind == "epoch":
        total = sum(n for _, n in _pairs(_map(b, "records"), int))
        return f"linkage epoch {_short(s.get('epoch_id', ''))}: {total:,} records linked"
    if e.kind == "project_proposed":
        return f"project {_str(_map(b, 'project'), 'project_id')} proposed"
    if e.kind in ("project_approved", "project_revoked"):
        verb = "approved" if e.kind == "project_approved" else "revoked"
        return f"{s.get('party', '')} {verb} project {s.get('project_id', '')}"
    if e.kind == "query":
        return f"query: {s.get('purpose', '')}"
    if e.kind == "release":
        return "table released"
    if e.kind == "refusal":
        return f"refused: {s.get('reason', '')}"
    if e.kind == "query_aborted":
        return f"query aborted: {s.get('reason', '')}"
    if e.kind == "epoch_aborted":
        return f"linkage epoch {_short(s.get('epoch_id', ''))} aborted: {s.get('reason', '')}"
    return ""


def describe_spec(spec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """What was counted, in words, from a query's recorded specification."""

    def filters(raw: Any) -> str:
        if not isinstance(raw, list):
            return ""
        out = []
        for f in raw:
            if isinstance(f, dict) and isinstance(f.get("attribute"), str):
                values = [v for v in f.get("values", []) if isinstance(v, str)]
                out.append(f"{f['attribute']} in {{{', '.join(values)}}}")
        return "; ".join(out)

    if not spec:
        return ()
    items: list[tuple[str, str]] = []
    measure = _str(spec, "measure") or "count"
    attribute = _str(spec, "measure_attribute")
    items.append(("Measure", f"{measure} of {attribute}" if attribute else measure))
    population = _str(spec, "population_party")
    pf = filters(spec.get("population_filters"))
    items.append(("Population", f"{population} records" + (f" where {pf}" if pf else "")))
    conditions = spec.get("conditions")
    for c in conditions if isinstance(conditions, list) else ():
        if isinstance(c, dict) and isinstance(c.get("party"), str):
            link = c.get("link") if isinstance(c.get("link"), str) else "person"
            cf = filters(c.get("filters"))
            what = "the same person as" if link == "person" else "in a household with"
            items.append(
                ("Condition", f"{what} a {c['party']} record" + (f" where {cf}" if cf else ""))
            )
    group = _str(spec, "group_by")
    if group:
        gf = filters(spec.get("group_filters"))
        where = f" (where {gf})" if gf else ""
        items.append(("Grouped by", f"{_str(spec, 'group_party')}.{group}{where}"))
    if _str(spec, "population_group_by"):
        items.append(("and by", f"{population}.{_str(spec, 'population_group_by')}"))
    return tuple(items)
