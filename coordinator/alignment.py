"""Between hops: what a sender handed on (its signed set) and where each of its
ciphertexts goes among the next node's tokens. The coordinator places the
senders' own ciphertexts here and computes none (headcount.crypto.signed_sets)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from coordinator.planner import Hop, Plan
from coordinator.store import CoordinatorStore
from headcount.crypto import paillier
from headcount.crypto.signed_sets import HopStatement, ciphertext_hash
from headcount.errors import InvalidRequest
from headcount.linkage.households import household_flag_sources
from headcount.wire.node_values import CiphertextChunk


@dataclass(frozen=True, slots=True)
class Sent:
    """What a sender handed on: its records' ciphertexts by token, its E(0)
    fills for the next hop, and its signed statement over all of them."""

    records: dict[bytes, bytes]
    fills: list[bytes]
    statement: HopStatement
    # A household chain's origin: its flags by keyed household, cap copies each.
    households: dict[bytes, list[bytes]] = field(default_factory=dict)

    def hashes(self) -> list[bytes]:
        """The set's SHA-256 hashes in increasing order, as the receiver checks them."""
        flags = [c for copies in self.households.values() for c in copies]
        return sorted(ciphertext_hash(c) for c in [*self.records.values(), *flags, *self.fills])


def read_signed(
    party: str,
    key: paillier.PublicKey,
    chunks: Iterable[CiphertextChunk],
    tokens: Sequence[bytes] | None,
    *,
    width: int | None = None,
) -> Sent:
    """A sender's reply stream, read as it arrives: record chunks numbered from 0
    (with tokens from an origin; in the order sent, ``tokens``, from a filter
    node), then fills, then its statement on the last chunk. InvalidRequest if
    malformed. ``width``: each item's length, if not a bare ciphertext's (an
    origin's proven ciphertexts, which the receiver verifies)."""
    records: dict[bytes, bytes] = {}
    households: dict[bytes, list[bytes]] = {}
    cts: list[bytes] = []
    fills: list[bytes] = []
    statement = None
    width = key.ciphertext_bytes if width is None else width
    for seq, chunk in enumerate(chunks):
        if chunk.seq != seq or statement is not None:
            raise InvalidRequest(f"{party}: malformed ciphertext chunk {chunk.seq}")
        if tokens is None:
            labels = chunk.household_keys if chunk.household_keys else chunk.tokens
            if (chunk.household_keys and chunk.tokens) or len(labels) != len(chunk.ciphertexts):
                raise InvalidRequest(f"{party}: malformed ciphertext chunk {chunk.seq}")
            if chunk.household_keys:
                for hh, c in zip(chunk.household_keys, chunk.ciphertexts, strict=True):
                    households.setdefault(hh, []).append(c)
            else:
                records.update(zip(chunk.tokens, chunk.ciphertexts, strict=True))
        cts.extend(chunk.ciphertexts)
        fills.extend(chunk.fills)
        if chunk.statement is not None:
            if not chunk.last:
                raise InvalidRequest(f"{party}: a statement before its last chunk")
            statement = chunk.statement
    if statement is None:
        raise InvalidRequest(f"{party}: its reply ended without a signed statement")
    if any(len(c) != width for c in cts) or any(len(c) != width for c in fills):
        raise InvalidRequest(f"{party}: a ciphertext of the wrong width")
    if tokens is not None:
        if len(cts) != len(tokens):
            raise InvalidRequest(f"{party}: returned {len(cts)} of {len(tokens)}")
        records = dict(zip(tokens, cts, strict=True))
    return Sent(records, fills, statement, households)


def person_align(
    store: CoordinatorStore, epoch_id: str, prev: str, sent: Sent, hop: Hop, tokens: Sequence[bytes]
) -> list[bytes]:
    """The next node's ciphertexts, in its token order: the linked record's
    ciphertext of the previous hop, else one of its signed E(0) fills, each
    used once. Nothing here is computed: the next node checks every one
    against the previous hop's signed set (headcount.crypto.signed_sets)."""
    link = store.linked(epoch_id, prev, hop.party)
    fills = iter(sent.fills)
    out: list[bytes] = []
    for t in tokens:
        source = link.get(t)
        if source is not None:
            out.append(sent.records[source])
            continue
        out.append(_fill(fills, prev, hop))
    return out


def household_align(
    store: CoordinatorStore,
    household_cap: int,
    epoch_id: str,
    prev: str,
    sent: Sent,
    hop: Hop,
    tokens: Sequence[bytes],
) -> list[bytes]:
    """The next node's ciphertexts for a household link, in its token order.

    Each of its records in a resolved household takes the flag of the one
    raw household of ``prev`` that household draws on
    (``household_flag_sources``), while copies last: at most
    ``household_cap`` records per household (the first in token order,
    which is random), the bound the query's sensitivity is charged for.
    Every other position takes one of the origin's signed E(0) fills.
    Nothing is computed here: the next node checks every ciphertext
    against the origin's signed set.
    """
    raw = store.households(epoch_id, prev)
    resolved = store.resolved_households(epoch_id, prev, raw)
    # A person's further records (dedup) do not choose a household again.
    again = store.duplicates(epoch_id, prev)
    keyed = [t for t in raw if t not in again]
    sources = household_flag_sources([raw[t] for t in keyed], [resolved.get(t, b"") for t in keyed])
    next_hh = store.resolved_households(epoch_id, hop.party)
    taken: dict[bytes, int] = {}
    fills = iter(sent.fills)
    out: list[bytes] = []
    for t in tokens:
        hh = next_hh.get(t, b"")
        copies = sent.households.get(sources.get(hh, b""), [])
        k = taken.get(hh, 0)
        if k < min(household_cap, len(copies)):
            taken[hh] = k + 1
            out.append(copies[k])
            continue
        out.append(_fill(fills, prev, hop))
    return out


def _fill(fills: Iterator[bytes], prev: str, hop: Hop) -> bytes:
    fill = next(fills, None)
    if fill is None:
        raise InvalidRequest(f"{prev}: too few E(0) fills for {hop.party}")
    return fill


def align(
    store: CoordinatorStore,
    household_cap: int,
    epoch_id: str,
    prev: str,
    sent: Sent,
    hop: Hop,
    tokens: Sequence[bytes],
) -> list[bytes]:
    """The next node's ciphertexts through the hop's link (person or household)."""
    if hop.link == "person":
        return person_align(store, epoch_id, prev, sent, hop, tokens)
    return household_align(store, household_cap, epoch_id, prev, sent, hop, tokens)


def fills_for(store: CoordinatorStore, epoch_id: str, plan: Plan, index: int) -> int:
    """E(0) fills the sender at ``index`` signs for the next hop: one per record
    of the next node (0 for the grouping node, which hands on sums)."""
    if index + 1 >= len(plan.hops):
        return 0
    return store.epoch(epoch_id).records[plan.hops[index + 1].party]
