"""Protobuf <-> dataclass conversions, and nothing else."""

from __future__ import annotations

from collections.abc import Iterable

from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.protect.sdc import ProtectedCell, ProtectedTable
from headcount.query import Condition, Predicate, QuerySpec
from headcount.wire import common_pb2 as c
from headcount.wire import coordinator_pb2 as co
from headcount.wire import party_node_pb2 as pn


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


def envelope_to_pb(e: Envelope) -> pn.Envelope:
    return pn.Envelope(
        ceremony_id=e.ceremony_id,
        sender=e.sender,
        recipient=e.recipient,
        nonce=e.nonce,
        ciphertext=e.ciphertext,
    )


def envelope_from_pb(m: pn.Envelope) -> Envelope:
    return Envelope(m.ceremony_id, m.sender, m.recipient, m.nonce, m.ciphertext)


def commitment_to_pb(x: Commitment) -> pn.Commitment:
    return pn.Commitment(party=x.party, digest=x.digest)


def commitment_from_pb(m: pn.Commitment) -> Commitment:
    return Commitment(m.party, m.digest)


def predicates_to_pb(ps: Iterable[Predicate]) -> list[c.Predicate]:
    return [c.Predicate(attribute=p.attribute, values=list(p.values)) for p in ps]


def predicates_from_pb(ms: Iterable[c.Predicate]) -> tuple[Predicate, ...]:
    return tuple(Predicate(m.attribute, tuple(m.values)) for m in ms)


def table_to_pb(
    query_id: str,
    table: ProtectedTable,
    *,
    epsilon: float,
    noise_scale: float,
    mechanism: str,
    threshold: int,
    rounding_base: int,
) -> c.ProtectedTable:
    return c.ProtectedTable(
        query_id=query_id,
        cells=[
            c.ProtectedCell(group=x.group, value=x.value or 0, status=x.status) for x in table.cells
        ],
        total=table.total or 0,
        total_suppressed=table.total is None,
        epsilon=epsilon,
        noise_scale=noise_scale,
        mechanism=mechanism,
        suppression_threshold=threshold,
        rounding_base=rounding_base,
    )


def table_from_pb(m: c.ProtectedTable) -> ProtectedTable:
    cells = tuple(
        ProtectedCell(x.group, x.value if x.status == "released" else None, x.status)
        for x in m.cells
    )
    return ProtectedTable(cells, None if m.total_suppressed else m.total)


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
    )
