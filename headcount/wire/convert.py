"""Protobuf <-> dataclass conversions, and nothing else: the messages of
common.proto and coordinator.proto (PartyNode's own: `node_convert`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from headcount.crypto.ceremony import Identity
from headcount.domain.audit import AuditEvent, AuditTrail
from headcount.domain.measures import ReleasedCell
from headcount.domain.projects import ProjectDecision, ProjectProposal
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.domain.release import QueryOutcome, ReleasedTable
from headcount.domain.status import (
    CeremonySummary,
    FederationStatus,
    LinkageSummary,
    PairLinks,
    PartyStatus,
    ProjectView,
)
from headcount.errors import InvalidRequest
from headcount.wire import common_pb2 as c
from headcount.wire import coordinator_pb2 as co
from headcount.wire.node_values import Groups


def identity_to_pb(i: Identity) -> c.PartyIdentity:
    return c.PartyIdentity(
        party=i.party,
        x25519_public_key=i.x25519_public_key,
        paillier_n=i.paillier_n,
        certificate_pem=i.certificate_pem,
        signature=i.signature,
    )


def identity_from_pb(m: c.PartyIdentity) -> Identity:
    return Identity(m.party, m.x25519_public_key, m.paillier_n, m.certificate_pem, m.signature)


def identity_to_bytes(i: Identity) -> bytes:
    """An identity as the coordinator's store keeps it: the serialised message."""
    return identity_to_pb(i).SerializeToString()


def identity_from_bytes(raw: bytes) -> Identity:
    return identity_from_pb(c.PartyIdentity.FromString(raw))


def predicates_to_pb(ps: Iterable[Predicate]) -> list[c.Predicate]:
    return [c.Predicate(attribute=p.attribute, values=list(p.values)) for p in ps]


def predicates_from_pb(ms: Iterable[c.Predicate]) -> tuple[Predicate, ...]:
    return tuple(Predicate(m.attribute, tuple(m.values)) for m in ms)


def table_to_pb(t: ReleasedTable) -> c.ProtectedTable:
    return c.ProtectedTable(
        query_id=t.query_id,
        cells=[
            c.ProtectedCell(
                group=x.group,
                column=x.column,
                value=x.value or 0,
                status=x.status,
                mean=x.mean or 0.0,
                has_mean=x.mean is not None,
                sum=x.sum or 0.0,
                has_sum=x.sum is not None,
                noise_scale=x.noise_scale,
                interval_low=x.interval[0] if x.interval else 0,
                interval_high=x.interval[1] if x.interval else 0,
                has_interval=x.interval is not None,
                mean_low=x.mean_interval[0] if x.mean_interval else 0.0,
                mean_high=x.mean_interval[1] if x.mean_interval else 0.0,
                has_mean_interval=x.mean_interval is not None,
            )
            for x in t.cells
        ],
        total=t.total or 0,
        total_suppressed=t.total is None,
        epsilon=t.epsilon,
        noise_scale=t.noise_scale,
        mechanism=t.mechanism,
        suppression_threshold=t.suppression_threshold,
        rounding_base=t.rounding_base,
        column_attribute=t.column_attribute,
        measure_attribute=t.measure_attribute,
        shareholders=t.shareholders,
        interval_coverage=t.interval_coverage,
        total_low=t.total_interval[0] if t.total_interval else 0,
        total_high=t.total_interval[1] if t.total_interval else 0,
        sensitivity=t.sensitivity,
    )


def table_from_pb(m: c.ProtectedTable) -> ReleasedTable:
    """A released table; a cell's value only when it is released (as the node sends it)."""
    return ReleasedTable(
        query_id=m.query_id,
        cells=tuple(
            ReleasedCell(
                group=x.group,
                column=x.column,
                value=x.value if x.status == "released" else None,
                status=x.status,
                mean=x.mean if x.has_mean else None,
                sum=x.sum if x.has_sum else None,
                noise_scale=x.noise_scale,
                interval=(x.interval_low, x.interval_high) if x.has_interval else None,
                mean_interval=(x.mean_low, x.mean_high) if x.has_mean_interval else None,
            )
            for x in m.cells
        ),
        total=None if m.total_suppressed else m.total,
        total_interval=None if m.total_suppressed else (m.total_low, m.total_high),
        epsilon=m.epsilon,
        noise_scale=m.noise_scale,
        mechanism=m.mechanism,
        suppression_threshold=m.suppression_threshold,
        rounding_base=m.rounding_base,
        column_attribute=m.column_attribute,
        measure_attribute=m.measure_attribute,
        shareholders=m.shareholders,
        interval_coverage=m.interval_coverage,
        sensitivity=m.sensitivity,
    )


def groups_to_pb(groups: Iterable[tuple[str, bytes]]) -> list[c.GroupCiphertext]:
    return [c.GroupCiphertext(group=g, ciphertext=x) for g, x in groups]


def groups_from_pb(ms: Iterable[c.GroupCiphertext]) -> Groups:
    return tuple((m.group, m.ciphertext) for m in ms)


def query_to_pb(q: QuerySpec) -> co.QueryRequest:
    return co.QueryRequest(
        purpose=q.purpose,
        population_party=q.population_party,
        population_filters=predicates_to_pb(q.population_filters),
        group_party=q.group_party,
        group_by=q.group_by,
        group_filters=predicates_to_pb(q.group_filters),
        epsilon=q.epsilon,
        title=q.title,
        conditions=[
            co.Condition(party=x.party, link=x.link, filters=predicates_to_pb(x.filters))
            for x in q.conditions
        ],
        population_group_by=q.population_group_by,
        measure=q.measure,
        measure_attribute=q.measure_attribute,
        project_id=q.project_id,
    )


def query_from_pb(m: co.QueryRequest) -> QuerySpec:
    return QuerySpec(
        purpose=m.purpose,
        population_party=m.population_party,
        group_party=m.group_party,
        group_by=m.group_by,
        population_filters=predicates_from_pb(m.population_filters),
        group_filters=predicates_from_pb(m.group_filters),
        epsilon=m.epsilon,
        title=m.title,
        conditions=tuple(
            Condition(x.party, predicates_from_pb(x.filters), x.link) for x in m.conditions
        ),
        population_group_by=m.population_group_by,
        measure=m.measure or "count",
        measure_attribute=m.measure_attribute,
        project_id=m.project_id,
    )


def stated_purpose(m: co.QueryRequest) -> str:
    """The purpose a query request states, read even when the request is malformed
    (a refusal records it)."""
    return m.purpose


def query_result_to_pb(o: QueryOutcome) -> co.QueryResult:
    return co.QueryResult(
        query_id=o.query_id,
        epoch_id=o.epoch_id,
        title=o.title,
        table=table_to_pb(o.table),
        budget_remaining=o.budget_remaining,
    )


def query_result_from_pb(m: co.QueryResult) -> QueryOutcome:
    return QueryOutcome(m.query_id, m.epoch_id, m.title, table_from_pb(m.table), m.budget_remaining)


def linkage_request_to_pb(threshold: float) -> co.RunLinkageRequest:
    return co.RunLinkageRequest(threshold=threshold)


def linkage_request_from_pb(m: co.RunLinkageRequest) -> float:
    """The Dice threshold asked for; 0 means the federation's default."""
    return m.threshold


def status_to_pb(s: FederationStatus) -> co.FederationStatus:
    return co.FederationStatus(
        federation=s.federation,
        ceremony_id=s.ceremony_id,
        epoch_id=s.epoch_id,
        parties=[
            co.PartyStatus(
                party=p.party,
                healthy=p.healthy,
                records=p.records,
                epsilon_spent=p.epsilon_spent,
                epsilon_left=p.epsilon_left,
            )
            for p in s.parties
        ],
        queries=s.queries,
        audit_head=s.audit_head,
        period=s.period,
        epsilon_per_period=s.epsilon_per_period,
    )


def status_from_pb(m: co.FederationStatus) -> FederationStatus:
    return FederationStatus(
        federation=m.federation,
        ceremony_id=m.ceremony_id,
        epoch_id=m.epoch_id,
        parties=tuple(
            PartyStatus(p.party, p.healthy, p.records, p.epsilon_spent, p.epsilon_left)
            for p in m.parties
        ),
        queries=m.queries,
        audit_head=m.audit_head,
        period=m.period,
        epsilon_per_period=m.epsilon_per_period,
    )


def project_from_pb(m: co.Project) -> ProjectView:
    return ProjectView(
        project_id=m.project_id,
        title=m.title,
        purpose=m.purpose,
        analyst=m.analyst,
        parties=tuple(m.parties),
        expires=dt.date.fromisoformat(m.expires),
        approved_by=tuple(m.approved_by),
        revoked=m.revoked,
        status=m.status,
    )


def project_to_pb(p: ProjectView) -> co.Project:
    return co.Project(
        project_id=p.project_id,
        title=p.title,
        purpose=p.purpose,
        analyst=p.analyst,
        parties=list(p.parties),
        expires=p.expires.isoformat(),
        approved_by=list(p.approved_by),
        revoked=p.revoked,
        status=p.status,
    )


def project_list_to_pb(views: Iterable[ProjectView]) -> co.ProjectList:
    return co.ProjectList(projects=[project_to_pb(p) for p in views])


def project_list_from_pb(m: co.ProjectList) -> list[ProjectView]:
    return [project_from_pb(p) for p in m.projects]


def proposal_to_pb(p: ProjectProposal) -> co.ProjectProposal:
    return co.ProjectProposal(
        project_id=p.project_id,
        title=p.title,
        purpose=p.purpose,
        parties=list(p.parties),
        expires=p.expires.isoformat(),
    )


def proposal_from_pb(m: co.ProjectProposal) -> ProjectProposal:
    """A proposal as sent; InvalidRequest if its expiry is not an ISO date."""
    try:
        expires = dt.date.fromisoformat(m.expires)
    except ValueError:
        raise InvalidRequest("expires must be an ISO date (YYYY-MM-DD)") from None
    return ProjectProposal(m.project_id, m.title, m.purpose, tuple(m.parties), expires)


def decision_to_pb(d: ProjectDecision) -> co.ProjectDecision:
    return co.ProjectDecision(project_id=d.project_id, signature=d.signature)


def decision_from_pb(m: co.ProjectDecision) -> ProjectDecision:
    return ProjectDecision(m.project_id, m.signature)


def audit_trail_to_pb(t: AuditTrail) -> co.AuditLog:
    return co.AuditLog(events_json=[e.to_json() for e in t.events], head=t.head)


def audit_trail_from_pb(m: co.AuditLog) -> AuditTrail:
    """The events as sent, parsed (InvalidRequest if one is malformed), not verified."""
    return AuditTrail(tuple(AuditEvent.from_json(e) for e in m.events_json), m.head)


def ceremony_to_pb(s: CeremonySummary) -> co.CeremonySummary:
    return co.CeremonySummary(
        ceremony_id=s.ceremony_id, parties=list(s.parties), confirmed=s.confirmed
    )


def ceremony_from_pb(m: co.CeremonySummary) -> CeremonySummary:
    return CeremonySummary(m.ceremony_id, tuple(m.parties), m.confirmed)


def linkage_to_pb(s: LinkageSummary) -> co.LinkageSummary:
    return co.LinkageSummary(
        epoch_id=s.epoch_id,
        records=s.records,
        pairs=[
            co.PairLinks(
                left=p.left,
                right=p.right,
                links=p.links,
                threshold=p.threshold,
                has_estimate=p.est_precision is not None,
                est_precision=p.est_precision or 0.0,
                est_recall=p.est_recall or 0.0,
                key_links=p.key_links,
                estimate_basis=p.estimate_basis or "",
            )
            for p in s.pairs
        ],
        clusters=s.clusters,
        threshold=s.threshold,
        schema_fingerprint=s.schema_fingerprint,
    )


def linkage_from_pb(m: co.LinkageSummary) -> LinkageSummary:
    return LinkageSummary(
        epoch_id=m.epoch_id,
        records=dict(m.records),
        pairs=tuple(
            PairLinks(
                left=p.left,
                right=p.right,
                links=p.links,
                threshold=p.threshold,
                key_links=p.key_links,
                est_precision=p.est_precision if p.has_estimate else None,
                est_recall=p.est_recall if p.has_estimate else None,
                estimate_basis=(p.estimate_basis or None) if p.has_estimate else None,
            )
            for p in m.pairs
        ),
        clusters=m.clusters,
        threshold=m.threshold,
        schema_fingerprint=m.schema_fingerprint,
    )
