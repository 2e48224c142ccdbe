"""What arrives at a filter or grouping node: a hop's header and stream, checked
before any ciphertext is used (announced query, own tokens once each, every
ciphertext in the previous hop's signed set and taken once)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.crypto.signed_sets import (
    FILTER_SET,
    ORIGIN_SET,
    SetCheck,
    verify_hop,
)
from headcount.domain.events import QueryAnnounced
from headcount.domain.measures import ALL_GROUP
from headcount.domain.query import check_group_by, check_predicates, unlinked_group
from headcount.errors import InvalidProof, InvalidRequest, PolicyRefused
from headcount.wire.node_values import ChunkIn, HopHeader, HopItem, SetHashesIn
from party_node.ids import check_id
from party_node.keys import NodeKeys
from party_node.replica import Replica
from party_node.store import NodeStore

# The most E(0) fills a sender adds for the next hop: the largest department.
MAX_FILLS = 50_000_000


@dataclass(frozen=True, slots=True)
class Sender:
    """The previous hop as this node checks it: its signed set, and, for an
    origin's proven ciphertexts, what each must prove it holds."""

    check: SetCheck
    key: paillier.PublicKey
    proofs: paillier.BatchVerifier | None = None

    def read(self, items: Sequence[bytes]) -> list[int]:
        """The ciphertexts of ``items``, each in the signed set and taken once;
        InvalidRequest if not. Proofs are checked by ``finish``."""
        for item in items:
            self.check.take(item)
        if self.proofs is None:
            return [paillier.from_bytes(self.key, item) for item in items]
        return self.proofs.add(items)

    def finish(self) -> None:
        """InvalidProof unless every proof read verifies: call before anything
        read is handed on or charged for."""
        if self.proofs is not None:
            self.proofs.finish()


class Inbound:
    """Checks a hop's header and stream for one node."""

    def __init__(
        self,
        federation: FederationConfig,
        config: PartyConfig,
        name: str,
        store: NodeStore,
        keys: NodeKeys,
        replica: Replica,
    ) -> None:
        self.federation, self.config, self.name = federation, config, name
        self.store, self.keys, self.replica = store, keys, replica

    def check_header(self, h: HopHeader) -> tuple[tuple[str, ...], Sender]:
        """Validate a hop before any ciphertext is read.

        Returns the groups (if any) and the check of the previous hop's signed
        set (headcount.crypto.signed_sets).
        """
        check_id("query_id", h.query_id)
        check_fills(h.fill_count)
        query = self.replica.check_query_announced(h.query_id, h.epsilon, h.purpose)
        if h.origin_key.n == self.keys.public.n:
            # We hold this key: we could read every per-record value. Refuse.
            raise PolicyRefused("per-record ciphertexts under this node's own key are refused")
        groups = (
            check_group_by(
                self.name,
                self.config.approved_attributes,
                h.group_by,
                department=self.config.department,
            )
            if h.group_by
            else (ALL_GROUP,)
        )
        if h.unlinked_cell:
            groups = (*groups, unlinked_group(self.name))
        check_predicates(
            self.name, self.config.approved_attributes, h.filters, department=self.config.department
        )
        epoch = self.store.epoch(h.epoch_id)
        if h.expected_records != epoch.records:
            raise InvalidRequest(
                f"expected_records {h.expected_records} != "
                f"{epoch.records} records in epoch {h.epoch_id}"
            )
        return groups, self._sender_check(h, query)

    def _sender_check(self, h: HopHeader, query: QueryAnnounced) -> Sender:
        parties = query.parties
        if self.name not in parties[1:]:
            raise PolicyRefused(f"query {h.query_id} does not pass through {self.name}")
        index = parties.index(self.name)
        sender = parties[index - 1]
        if h.sender is None:
            raise InvalidProof(f"no signed set from {sender}, the previous hop")
        stage = ORIGIN_SET if index == 1 else FILTER_SET
        verify_hop(h.sender, h.query_id, sender, stage, ca_cert=self.federation.ca_cert)
        check = SetCheck(sender, self._set_limit(h.epoch_id, sender))
        # An origin's ciphertexts carry proofs of what they hold; a filter
        # node's are not proven yet (docs/privacy.md, "Amplification").
        layout = self.replica.contribution_layout(query, h.origin_key) if index == 1 else None
        proofs = None if layout is None else paillier.BatchVerifier(layout, h.expected_records)
        return Sender(check, h.origin_key, proofs)

    def _set_limit(self, epoch_id: str, sender: str) -> int:
        """The most a sender's set may hold, from the epoch's published sizes: a
        ciphertext per record (per household at most, ``household_cap`` copies
        each) and one E(0) fill per record of this node."""
        records = self.replica.epoch_records(epoch_id)
        if sender not in records:
            raise PolicyRefused(f"epoch {epoch_id} publishes no record count for {sender}")
        cap = self.federation.privacy.household_cap
        return cap * int(records[sender]) + self.store.epoch(epoch_id).records

    def records(
        self, h: HopHeader, items: Iterator[HopItem], sender: Sender
    ) -> Iterator[tuple[int, list[tuple[int, int]], bool]]:
        """Check a hop's stream and yield (seq, [(row, ciphertext)], last) per chunk.

        The previous hop's signed set comes first; every token of the epoch
        must then arrive exactly once, in chunks numbered from 0, each
        ciphertext in range for the origin's key, in the signed set and not
        seen before; anything else raises InvalidRequest (InvalidProof,
        InvalidCiphertext) naming the chunk; an origin's ciphertexts must
        also carry valid proofs of what they hold. Stops after the last chunk.
        """
        check = sender.check
        tokens, rows = self.store.token_rows(h.epoch_id)
        row_of = dict(zip(tokens, rows, strict=True))
        seen: set[bytes] = set()
        expected_seq = 0
        for item in items:
            if isinstance(item, SetHashesIn):
                if expected_seq:
                    raise InvalidRequest("set hashes where none are expected")
                check.add_hashes(item.hashes)
                continue
            if not isinstance(item, ChunkIn):
                raise InvalidRequest("leftovers before the last chunk")
            if expected_seq == 0 and h.sender is not None:
                check.seal(h.sender.digest)
            seq, toks, cts, last = item.seq, item.tokens, item.ciphertexts, item.last
            if seq != expected_seq:
                raise InvalidRequest(f"chunk {seq} arrived where chunk {expected_seq} was expected")
            expected_seq += 1
            if len(toks) != len(cts):
                raise InvalidRequest(f"chunk {seq}: {len(toks)} tokens but {len(cts)} ciphertexts")
            chunk_rows = []
            for tok in toks:
                row = row_of.get(tok)
                if row is None:
                    raise InvalidRequest(
                        f"chunk {seq}: a token that is not this node's in the epoch"
                    )
                if tok in seen:
                    raise InvalidRequest(f"chunk {seq}: a token sent twice")
                seen.add(tok)
                chunk_rows.append(row)
            out = list(zip(chunk_rows, sender.read(cts), strict=True))
            # Checked before the last chunk is handed on, so a hop is charged
            # (on its last chunk) only once the whole stream has proved valid.
            if last and len(seen) != h.expected_records:
                raise InvalidRequest(f"received {len(seen)} of {h.expected_records} records")
            yield seq, out, last
            if last:
                return
        raise InvalidRequest("stream ended before the last chunk")


def check_fills(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FILLS:
        raise InvalidRequest(f"fill_count must be 0 to {MAX_FILLS}")
