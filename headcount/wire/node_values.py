"""What the PartyNode RPCs carry, as frozen dataclasses (`node_client` converts).

Values both ends already name keep their kernel classes: identities, envelopes
and commitments (`headcount.crypto.ceremony`), noise attestations and
abandonments (`headcount.crypto.attest`), hop statements
(`headcount.crypto.signed_sets`), released tables (`headcount.domain.release`).
Per-group aggregates are ``(group, ciphertext)`` pairs, as the attestations'
digests read them (`headcount.crypto.attest.digest_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from headcount.crypto import paillier
from headcount.crypto.attest import NoiseAttestation
from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.crypto.signed_sets import HopStatement
from headcount.domain.measures import PackingRequest
from headcount.domain.query import Predicate

__all__ = [
    "AuditHead",
    "ChunkIn",
    "CiphertextChunk",
    "ContributeRequest",
    "Contribution",
    "DecryptRequest",
    "EncodeRequest",
    "EncodingChunk",
    "FinishRequest",
    "GroupedCiphertexts",
    "Groups",
    "HopHeader",
    "HopInput",
    "HopItem",
    "IndicatorRequest",
    "KeyConfirmation",
    "LeftoversIn",
    "NoiseRequest",
    "NoisedAggregate",
    "SetHashesIn",
]

# One encrypted aggregate per group, in order: (group, ciphertext under the origin's key).
Groups = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class ContributeRequest:
    """Key ceremony, round 1: every party's identity, the callee's included."""

    ceremony_id: str
    parties: tuple[Identity, ...]


@dataclass(frozen=True, slots=True)
class Contribution:
    """Key ceremony, round 1: a node's commitment and its contribution sealed to each other node."""

    commitment: Commitment
    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True)
class FinishRequest:
    """Key ceremony, round 2: the envelopes addressed to the callee and every
    party's commitment."""

    ceremony_id: str
    envelopes: tuple[Envelope, ...]
    commitments: tuple[Commitment, ...]


@dataclass(frozen=True, slots=True)
class KeyConfirmation:
    """Key ceremony, round 2: a PRF of the derived secret (not the secret)."""

    party: str
    tag: bytes


@dataclass(frozen=True, slots=True)
class EncodeRequest:
    """A linkage epoch's upload: ``chunk_records`` records a chunk (0: the
    node's default), from chunk ``resume_from_seq`` on."""

    epoch_id: str
    ceremony_id: str
    chunk_records: int
    resume_from_seq: int = 0


@dataclass(frozen=True, slots=True)
class EncodingChunk:
    """Part of an epoch's upload: ``len(tokens)`` records' tokens (16 bytes each),
    filters (``filter_bytes`` each, concatenated), household keys (16 bytes or
    empty) and match-keys (``match_key_levels`` x 16 bytes per record)."""

    epoch_id: str
    seq: int
    filter_bytes: int
    tokens: tuple[bytes, ...]
    clks: bytes
    last: bool
    total_records: int
    schema_fingerprint: str
    dataset_commitment: bytes  # on the last chunk
    household_keys: tuple[bytes, ...]
    match_keys: bytes
    match_key_levels: int


@dataclass(frozen=True, slots=True)
class IndicatorRequest:
    """Query hop at the origin: encrypt an indicator for every record of the epoch."""

    query_id: str
    epoch_id: str
    filters: tuple[Predicate, ...]  # on the origin's own approved attributes
    epsilon: float  # charged to the origin's budget
    purpose: str
    chunk_records: int
    per_household: bool
    # The slot layout to pack values in; None when the request names none
    # (the origin then packs one count per record).
    packing: PackingRequest | None
    fill_count: int  # E(0)s for the next hop's positions no record links to


@dataclass(frozen=True, slots=True)
class CiphertextChunk:
    """Part of a sender's set: record ciphertexts (labelled by token, by keyed
    household at a household chain's origin, or by position), E(0) fills, and
    on the last chunk its signed statement over the whole set."""

    seq: int
    ciphertexts: tuple[bytes, ...]
    last: bool = False
    tokens: tuple[bytes, ...] = ()
    household_keys: tuple[bytes, ...] = ()
    fills: tuple[bytes, ...] = ()
    statement: HopStatement | None = None


@dataclass(frozen=True, slots=True)
class HopHeader:
    """What a filter or grouping node is asked to do at one hop."""

    query_id: str
    epoch_id: str
    origin_key: paillier.PublicKey
    group_by: str  # "" for none
    filters: tuple[Predicate, ...]  # this node's own predicate
    epsilon: float  # charged to this node's budget
    expected_records: int  # must equal this node's records in the epoch
    purpose: str
    fill_count: int = 0  # E(0) fills to sign for the next hop (a filter node)
    sender: HopStatement | None = None  # the previous hop's signed set
    unlinked_cell: bool = False  # a grouping node sums the leftovers into their own cell


@dataclass(frozen=True, slots=True)
class HopInput:
    """Everything a hop node is sent, streamed in bounded messages: the header,
    the previous hop's signed set (SHA-256 hashes, increasing), the
    ciphertexts aligned to the node's tokens, and, for a grouping node's
    unlinked cell, the previous hop's ciphertexts with no link to it."""

    header: HopHeader
    set_hashes: Sequence[bytes]
    tokens: Sequence[bytes]
    ciphertexts: Sequence[bytes]
    leftovers: Sequence[bytes] = ()


@dataclass(frozen=True, slots=True)
class ChunkIn:
    """One chunk of a hop's stream, as the hop node receives it: ciphertexts
    for this node's tokens."""

    seq: int
    tokens: Sequence[bytes]
    ciphertexts: Sequence[bytes]
    last: bool


@dataclass(frozen=True, slots=True)
class SetHashesIn:
    """Part of the previous hop's signed set (hashes in increasing order)."""

    hashes: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class LeftoversIn:
    """Previous-hop ciphertexts of records with no link here, for the unlinked cell."""

    ciphertexts: Sequence[bytes]


# What follows a hop's header on its stream, message by message.
HopItem = ChunkIn | SetHashesIn | LeftoversIn


@dataclass(frozen=True, slots=True)
class GroupedCiphertexts:
    """The grouping node's encrypted sums and its signed statement over them."""

    query_id: str
    groups: Groups
    statement: HopStatement | None


@dataclass(frozen=True, slots=True)
class NoiseRequest:
    """Add this share-holder's noise to the aggregates so far (under the origin's key)."""

    query_id: str
    origin_key: paillier.PublicKey
    groups: Groups


@dataclass(frozen=True, slots=True)
class NoisedAggregate:
    """The aggregates with a share-holder's noise added, and its attestation."""

    groups: Groups
    attestation: NoiseAttestation


@dataclass(frozen=True, slots=True)
class DecryptRequest:
    """Final hop at the origin: the noisy aggregates and the proofs it checks first."""

    query_id: str
    groups: Groups
    # One per share-holding node, in the order the shares were added.
    attestations: tuple[NoiseAttestation, ...]
    group_statement: HopStatement | None  # the grouping node's signed output
    # The coordinator's noise share in the clear, groups x slots (row-major).
    coordinator_noise: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AuditHead:
    """A node's audit replica: the next sequence number it expects and its head hash."""

    next_seq: int
    head: str
