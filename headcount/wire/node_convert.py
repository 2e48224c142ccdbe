"""PartyNode messages <-> dataclasses (`node_values`, the kernel's own), for both
ends: the coordinator's `node_client` and the node's servicer. Nothing else.

Bounds on sizes and ids are the receiving node's to check, on the values
these return; a malformed key, statement or identity raises here
(``InvalidRequest``, ``InvalidCiphertext``), as its dataclass does.
"""

from __future__ import annotations

from collections.abc import Iterator

from headcount.crypto import paillier
from headcount.crypto.attest import Abandonment, NoiseAttestation
from headcount.crypto.ceremony import Commitment, Envelope
from headcount.crypto.signed_sets import HopStatement
from headcount.domain.measures import PackingRequest
from headcount.errors import InvalidRequest
from headcount.wire import party_node_pb2 as pn
from headcount.wire.convert import (
    groups_from_pb,
    groups_to_pb,
    identity_from_pb,
    identity_to_pb,
    predicates_from_pb,
    predicates_to_pb,
)
from headcount.wire.node_values import (
    AuditHead,
    ChunkIn,
    CiphertextChunk,
    ContributeRequest,
    Contribution,
    DecryptRequest,
    EncodeRequest,
    EncodingChunk,
    FinishRequest,
    GroupedCiphertexts,
    HopHeader,
    HopInput,
    HopItem,
    IndicatorRequest,
    KeyConfirmation,
    LeftoversIn,
    NoisedAggregate,
    NoiseRequest,
    SetHashesIn,
)

# Records per chunk of a hop's input stream, as the coordinator cuts it.
CHUNK_RECORDS = 1_000
# Set hashes per message (32 bytes each: 3.2 MB, under the default 16 MiB limit).
HASHES_PER_MESSAGE = 100_000


# -- key ceremony ----------------------------------------------------------------------
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


def contribute_request_to_pb(r: ContributeRequest) -> pn.ContributeRequest:
    return pn.ContributeRequest(
        ceremony_id=r.ceremony_id, parties=[identity_to_pb(i) for i in r.parties]
    )


def contribute_request_from_pb(m: pn.ContributeRequest) -> ContributeRequest:
    return ContributeRequest(m.ceremony_id, tuple(identity_from_pb(i) for i in m.parties))


def contribution_to_pb(c: Contribution) -> pn.Contribution:
    return pn.Contribution(
        commitment=commitment_to_pb(c.commitment),
        envelopes=[envelope_to_pb(e) for e in c.envelopes],
    )


def contribution_from_pb(m: pn.Contribution) -> Contribution:
    return Contribution(
        commitment_from_pb(m.commitment), tuple(envelope_from_pb(e) for e in m.envelopes)
    )


def finish_request_to_pb(r: FinishRequest) -> pn.FinishRequest:
    return pn.FinishRequest(
        ceremony_id=r.ceremony_id,
        envelopes=[envelope_to_pb(e) for e in r.envelopes],
        commitments=[commitment_to_pb(x) for x in r.commitments],
    )


def finish_request_from_pb(m: pn.FinishRequest) -> FinishRequest:
    return FinishRequest(
        m.ceremony_id,
        tuple(envelope_from_pb(e) for e in m.envelopes),
        tuple(commitment_from_pb(c) for c in m.commitments),
    )


def key_confirmation_to_pb(k: KeyConfirmation) -> pn.KeyConfirmation:
    return pn.KeyConfirmation(party=k.party, tag=k.tag)


def key_confirmation_from_pb(m: pn.KeyConfirmation) -> KeyConfirmation:
    return KeyConfirmation(m.party, m.tag)


# -- linkage epoch ---------------------------------------------------------------------
def encode_request_to_pb(r: EncodeRequest) -> pn.EncodeRequest:
    return pn.EncodeRequest(
        epoch_id=r.epoch_id,
        ceremony_id=r.ceremony_id,
        chunk_records=r.chunk_records,
        resume_from_seq=r.resume_from_seq,
    )


def encode_request_from_pb(m: pn.EncodeRequest) -> EncodeRequest:
    return EncodeRequest(m.epoch_id, m.ceremony_id, m.chunk_records, m.resume_from_seq)


def encoding_to_pb(x: EncodingChunk) -> pn.EncodingChunk:
    return pn.EncodingChunk(
        epoch_id=x.epoch_id,
        seq=x.seq,
        filter_bytes=x.filter_bytes,
        tokens=x.tokens,
        clks=x.clks,
        last=x.last,
        total_records=x.total_records,
        schema_fingerprint=x.schema_fingerprint,
        dataset_commitment=x.dataset_commitment,
        household_keys=x.household_keys,
        match_keys=x.match_keys,
        match_key_levels=x.match_key_levels,
    )


def encoding_from_pb(m: pn.EncodingChunk) -> EncodingChunk:
    return EncodingChunk(
        epoch_id=m.epoch_id,
        seq=m.seq,
        filter_bytes=m.filter_bytes,
        tokens=tuple(m.tokens),
        clks=m.clks,
        last=m.last,
        total_records=m.total_records,
        schema_fingerprint=m.schema_fingerprint,
        dataset_commitment=m.dataset_commitment,
        household_keys=tuple(m.household_keys),
        match_keys=m.match_keys,
        match_key_levels=m.match_key_levels,
    )


# -- query hops ------------------------------------------------------------------------
def attestation_to_pb(a: NoiseAttestation) -> pn.NoiseAttestation:
    return pn.NoiseAttestation(
        party=a.party,
        input_digest=a.input_digest,
        output_digest=a.output_digest,
        signature=a.signature,
        certificate_pem=a.certificate_pem,
    )


def attestation_from_pb(m: pn.NoiseAttestation) -> NoiseAttestation:
    return NoiseAttestation(
        m.party, m.input_digest, m.output_digest, m.signature, m.certificate_pem
    )


def statement_to_pb(s: HopStatement) -> pn.HopStatement:
    return pn.HopStatement(
        party=s.party,
        stage=s.stage,
        digest=s.digest,
        signature=s.signature,
        certificate_pem=s.certificate_pem,
    )


def statement_from_pb(m: pn.HopStatement) -> HopStatement:
    """A hop statement; InvalidRequest if its stage or digest is malformed."""
    return HopStatement(m.party, m.stage, m.digest, m.signature, m.certificate_pem)


def indicator_request_to_pb(r: IndicatorRequest) -> pn.EncryptRequest:
    message = pn.EncryptRequest(
        query_id=r.query_id,
        epoch_id=r.epoch_id,
        filters=predicates_to_pb(r.filters),
        epsilon=r.epsilon,
        chunk_records=r.chunk_records,
        purpose=r.purpose,
        per_household=r.per_household,
        fill_count=r.fill_count,
    )
    p = r.packing
    if p is not None:
        message.group_by = p.group_by
        message.measure_attribute = p.measure_attribute
        message.layout.CopyFrom(
            pn.SlotLayoutSpec(
                slots=p.slots,
                slot_bits=p.slot_bits,
                max_summands=p.max_summands,
                max_value=p.max_value,
                noise_bound=p.noise_bound,
            )
        )
    return message


def indicator_request_from_pb(m: pn.EncryptRequest) -> IndicatorRequest:
    packing = None
    if m.HasField("layout"):
        layout = m.layout
        packing = PackingRequest(
            group_by=m.group_by,
            measure_attribute=m.measure_attribute,
            slots=layout.slots,
            slot_bits=layout.slot_bits,
            max_summands=layout.max_summands,
            max_value=layout.max_value,
            noise_bound=layout.noise_bound,
        )
    return IndicatorRequest(
        query_id=m.query_id,
        epoch_id=m.epoch_id,
        filters=predicates_from_pb(m.filters),
        epsilon=m.epsilon,
        purpose=m.purpose,
        chunk_records=m.chunk_records,
        per_household=m.per_household,
        packing=packing,
        fill_count=m.fill_count,
    )


def chunk_to_pb(x: CiphertextChunk) -> pn.CiphertextChunk:
    message = pn.CiphertextChunk(
        seq=x.seq,
        ciphertexts=x.ciphertexts,
        last=x.last,
        tokens=x.tokens,
        household_keys=x.household_keys,
        fills=x.fills,
    )
    if x.statement is not None:
        message.statement.CopyFrom(statement_to_pb(x.statement))
    return message


def chunk_from_pb(m: pn.CiphertextChunk) -> CiphertextChunk:
    return CiphertextChunk(
        seq=m.seq,
        ciphertexts=tuple(m.ciphertexts),
        last=m.last,
        tokens=tuple(m.tokens),
        household_keys=tuple(m.household_keys),
        fills=tuple(m.fills),
        statement=statement_from_pb(m.statement) if m.HasField("statement") else None,
    )


def hop_header_to_pb(h: HopHeader) -> pn.HopHeader:
    header = pn.HopHeader(
        query_id=h.query_id,
        epoch_id=h.epoch_id,
        paillier_n=h.origin_key.to_bytes(),
        group_by=h.group_by,
        filters=predicates_to_pb(h.filters),
        epsilon=h.epsilon,
        expected_records=h.expected_records,
        purpose=h.purpose,
        fill_count=h.fill_count,
        unlinked_cell=h.unlinked_cell,
    )
    if h.sender is not None:
        header.sender.CopyFrom(statement_to_pb(h.sender))
    return header


def hop_header_from_pb(m: pn.HopHeader) -> HopHeader:
    """A hop header; InvalidRequest (or InvalidCiphertext) if its key or statement
    is malformed. Bounds on its fields are the receiving node's to check."""
    return HopHeader(
        query_id=m.query_id,
        epoch_id=m.epoch_id,
        origin_key=paillier.PublicKey.from_bytes(m.paillier_n),
        group_by=m.group_by,
        filters=predicates_from_pb(m.filters),
        epsilon=m.epsilon,
        expected_records=m.expected_records,
        purpose=m.purpose,
        fill_count=m.fill_count,
        sender=statement_from_pb(m.sender) if m.HasField("sender") else None,
        unlinked_cell=m.unlinked_cell,
    )


def hop_item_to_pb(item: HopItem) -> pn.HopInput:
    """One message after a hop's header, exactly as given (no renumbering)."""
    if isinstance(item, ChunkIn):
        return pn.HopInput(
            chunk=pn.CiphertextChunk(
                seq=item.seq, tokens=item.tokens, ciphertexts=item.ciphertexts, last=item.last
            )
        )
    if isinstance(item, SetHashesIn):
        return pn.HopInput(set_hashes=pn.SetHashes(hashes=item.hashes))
    return pn.HopInput(leftovers=pn.Leftovers(ciphertexts=item.ciphertexts))


def hop_to_pb(hop: HopInput) -> Iterator[pn.HopInput]:
    """A hop's input as gRPC sends it: the header, the set's hashes, the aligned
    chunks numbered from 0 (one empty chunk when there are none), then the
    leftovers; each message made only when gRPC asks for it."""
    yield pn.HopInput(header=hop_header_to_pb(hop.header))
    hashes = hop.set_hashes
    for start in range(0, len(hashes), HASHES_PER_MESSAGE):
        yield hop_item_to_pb(SetHashesIn(hashes[start : start + HASHES_PER_MESSAGE]))
    tokens, aligned = hop.tokens, hop.ciphertexts
    starts = list(range(0, len(tokens), CHUNK_RECORDS)) or [0]
    for seq, start in enumerate(starts):
        yield hop_item_to_pb(
            ChunkIn(
                seq,
                tokens[start : start + CHUNK_RECORDS],
                aligned[start : start + CHUNK_RECORDS],
                seq == len(starts) - 1,
            )
        )
    for start in range(0, len(hop.leftovers), CHUNK_RECORDS):
        yield hop_item_to_pb(LeftoversIn(hop.leftovers[start : start + CHUNK_RECORDS]))


def hop_from_pb(messages: Iterator[pn.HopInput]) -> tuple[HopHeader, Iterator[HopItem]]:
    """A hop stream as its header (read now) and its items (read as they are
    asked for). InvalidRequest if the stream does not start with a header or
    has a second one; the header as ``hop_header_from_pb`` raises."""
    first = next(messages, None)
    if first is None or not first.HasField("header"):
        raise InvalidRequest("a hop stream must start with a header")
    header = hop_header_from_pb(first.header)

    def items() -> Iterator[HopItem]:
        for item in messages:
            kind = item.WhichOneof("item")
            if kind == "chunk":
                c = item.chunk
                yield ChunkIn(c.seq, list(c.tokens), list(c.ciphertexts), c.last)
            elif kind == "set_hashes":
                yield SetHashesIn(list(item.set_hashes.hashes))
            elif kind == "leftovers":
                yield LeftoversIn(list(item.leftovers.ciphertexts))
            else:
                raise InvalidRequest("only one header is allowed")

    return header, items()


def grouped_to_pb(g: GroupedCiphertexts) -> pn.GroupedCiphertexts:
    message = pn.GroupedCiphertexts(query_id=g.query_id, groups=groups_to_pb(g.groups))
    if g.statement is not None:
        message.statement.CopyFrom(statement_to_pb(g.statement))
    return message


def grouped_from_pb(m: pn.GroupedCiphertexts) -> GroupedCiphertexts:
    return GroupedCiphertexts(
        m.query_id,
        groups_from_pb(m.groups),
        statement_from_pb(m.statement) if m.HasField("statement") else None,
    )


# -- noise, release, audit -------------------------------------------------------------
def noise_request_to_pb(r: NoiseRequest) -> pn.NoiseRequest:
    return pn.NoiseRequest(
        query_id=r.query_id, paillier_n=r.origin_key.to_bytes(), groups=groups_to_pb(r.groups)
    )


def noise_request_from_pb(m: pn.NoiseRequest) -> NoiseRequest:
    """InvalidRequest (or InvalidCiphertext) if the key is malformed."""
    return NoiseRequest(
        m.query_id, paillier.PublicKey.from_bytes(m.paillier_n), groups_from_pb(m.groups)
    )


def noised_to_pb(x: NoisedAggregate) -> pn.NoisedAggregate:
    return pn.NoisedAggregate(
        groups=groups_to_pb(x.groups), attestation=attestation_to_pb(x.attestation)
    )


def noised_from_pb(m: pn.NoisedAggregate) -> NoisedAggregate:
    return NoisedAggregate(groups_from_pb(m.groups), attestation_from_pb(m.attestation))


def abandon_request_to_pb(query_id: str) -> pn.AbandonRequest:
    return pn.AbandonRequest(query_id=query_id)


def abandon_request_from_pb(m: pn.AbandonRequest) -> str:
    """The query id to abandon."""
    return m.query_id


def abandonment_to_pb(a: Abandonment) -> pn.Abandonment:
    return pn.Abandonment(
        query_id=a.query_id,
        party=a.party,
        signature=a.signature,
        certificate_pem=a.certificate_pem,
    )


def abandonment_from_pb(m: pn.Abandonment) -> Abandonment:
    return Abandonment(m.query_id, m.party, m.signature, m.certificate_pem)


def decrypt_request_to_pb(r: DecryptRequest) -> pn.DecryptRequest:
    message = pn.DecryptRequest(
        query_id=r.query_id,
        groups=groups_to_pb(r.groups),
        attestations=[attestation_to_pb(a) for a in r.attestations],
        coordinator_noise=list(r.coordinator_noise),
    )
    if r.group_statement is not None:
        message.group_statement.CopyFrom(statement_to_pb(r.group_statement))
    return message


def decrypt_request_from_pb(m: pn.DecryptRequest) -> DecryptRequest:
    return DecryptRequest(
        m.query_id,
        groups_from_pb(m.groups),
        tuple(attestation_from_pb(a) for a in m.attestations),
        statement_from_pb(m.group_statement) if m.HasField("group_statement") else None,
        tuple(m.coordinator_noise),
    )


def audit_batch_to_pb(events_json: tuple[str, ...]) -> pn.AuditBatch:
    return pn.AuditBatch(events_json=events_json)


def audit_batch_from_pb(m: pn.AuditBatch) -> tuple[str, ...]:
    """The events' canonical JSON, in order (``AuditEvent.from_json`` parses each):
    left as text so the node can bound the batch before parsing it."""
    return tuple(m.events_json)


def audit_head_to_pb(h: AuditHead) -> pn.AuditHead:
    return pn.AuditHead(next_seq=h.next_seq, head=h.head)


def audit_head_from_pb(m: pn.AuditHead) -> AuditHead:
    return AuditHead(int(m.next_seq), m.head)
