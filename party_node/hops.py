"""A query's hops at a node: encrypt (as origin), filter (keep or replace by
E(0)) and group (sum per category), each only for announced work."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.errors import InvalidRequest, PolicyRefused
from headcount.measures import ALL_GROUP, Packing, PackingRequest, make_packing
from headcount.privacy.accountant import PeriodLedger
from headcount.privacy.sensitivity import NoisePlan
from headcount.query import Predicate, check_group_by, check_measure, check_predicates
from party_node.data import DepartmentData
from party_node.encode import Encoder
from party_node.ids import check_id
from party_node.keys import NodeKeys
from party_node.replica import Replica
from party_node.store import NodeStore

log = logging.getLogger(__name__)

ChunkIn = tuple[int, Sequence[bytes], Sequence[bytes], bool]  # seq, tokens, ciphertexts, last


@dataclass(frozen=True, slots=True)
class HopHeader:
    query_id: str
    epoch_id: str
    origin_key: paillier.PublicKey
    group_by: str
    filters: tuple[Predicate, ...]
    epsilon: float
    expected_records: int
    purpose: str


def _mask(data: DepartmentData, rows: Sequence[int], filters: Sequence[Predicate]) -> list[bool]:
    frame = data.attributes
    keep = np.ones(len(frame), dtype=bool)
    for p in filters:
        keep &= frame[p.attribute].isin(p.values).to_numpy()
    return [bool(keep[r]) for r in rows]


class Hops:
    def __init__(
        self,
        federation: FederationConfig,
        config: PartyConfig,
        name: str,
        store: NodeStore,
        ledger: PeriodLedger,
        keys: NodeKeys,
        replica: Replica,
        encoder: Encoder,
    ) -> None:
        self.federation, self.config, self.name = federation, config, name
        self.store, self.ledger, self.keys = store, ledger, keys
        self.replica, self.encoder = replica, encoder

    def encrypt_indicators(
        self,
        query_id: str,
        epoch_id: str,
        filters: Sequence[Predicate],
        epsilon: float,
        purpose: str,
        *,
        per_household: bool = False,
        packing_request: PackingRequest | None = None,
    ) -> tuple[list[bytes], list[bytes]]:
        """One packed plaintext per record, in token order, encrypted under this node's key.

        Without ``packing``: 1 for each record passing ``filters``, else 0.
        With it: the record's count slot for its category of ``packing.group_by``
        (and its valued and sum slots for a mean), all zeros if it fails the
        filters. With ``per_household``, only the first passing record of each
        household (by keyed address) carries a 1, so a sum over a household is a
        0/1 flag; records with no household key carry 0.
        """
        check_id("query_id", query_id)
        body = self.replica.check_query_announced(query_id, epsilon, purpose)
        plan = self.replica.noise_plan(body)
        check_predicates(
            self.name, self.config.approved_attributes, filters, department=self.config.department
        )
        packing = None
        if packing_request is not None:
            packing = self._check_packing(packing_request, epsilon, plan)
        epoch = self.store.epoch(epoch_id)
        data = self.encoder.data(epoch.data_sha256)
        tokens, rows = self.store.token_rows(epoch_id)
        indicator = _mask(data, rows, filters)
        if per_household:
            households = self.store.household_keys(epoch_id)
            flagged: set[bytes] = set()
            for i, passes in enumerate(indicator):
                hh = households[i]
                indicator[i] = bool(passes and hh and hh not in flagged)
                if indicator[i]:
                    flagged.add(hh)
        # No minimum-population refusal: whether a population is small depends
        # on the data, so refusing would answer a question for free. Small
        # populations are protected by the noise (docs/privacy.md).
        if packing is None:
            plain = [int(b) for b in indicator]
        else:
            frame = data.attributes
            cats = frame[packing.group_by].tolist() if packing.group_by else [""] * len(frame)
            vals = (
                frame[packing.measure_attribute].tolist()
                if packing.measure_attribute
                else [""] * len(frame)
            )
            plain = [
                packing.layout.pack(packing.row(passes, cats[row], vals[row]))
                for passes, row in zip(indicator, rows, strict=True)
            ]
        self.ledger.spend(query_id, epsilon)
        self.store.record_query(
            query_id,
            epoch_id,
            "origin",
            purpose,
            epsilon,
            packing.to_json() if packing is not None else None,
        )
        cts = self.keys.encryptor.encrypt(plain, workers=paillier.bulk_workers(len(plain)))
        return tokens, [paillier.to_bytes(self.keys.public, c) for c in cts]

    def _check_packing(self, asked: PackingRequest, epsilon: float, plan: NoisePlan) -> Packing:
        """The packing this node derives itself; refuse any other layout.

        The node recomputes the layout from public facts, so a coordinator
        cannot make slots carry into each other or aim a slot at one record.
        """
        if asked.group_by:
            check_group_by(
                self.name,
                self.config.approved_attributes,
                asked.group_by,
                department=self.config.department,
            )
        if asked.measure_attribute:
            check_measure(
                self.name,
                self.config.approved_measures,
                asked.measure_attribute,
                department=self.config.department,
            )
        own = make_packing(
            self.config.department,
            asked.group_by,
            asked.measure_attribute,
            n_bits=self.keys.public.n.bit_length(),
            max_summands=asked.max_summands,
            epsilon=epsilon,
            sensitivity=plan.sensitivity,
            shareholders=len(plan.shareholders),
        )
        if PackingRequest.of(own) != asked:
            raise PolicyRefused("the slot layout is not the one this node derives for the query")
        return own

    def check_hop_header(self, h: HopHeader) -> tuple[str, ...]:
        """Validate a hop before any ciphertext is read; returns the groups (if any)."""
        check_id("query_id", h.query_id)
        self.replica.check_query_announced(h.query_id, h.epsilon, h.purpose)
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
        check_predicates(
            self.name, self.config.approved_attributes, h.filters, department=self.config.department
        )
        epoch = self.store.epoch(h.epoch_id)
        if h.expected_records != epoch.records:
            raise InvalidRequest(
                f"expected_records {h.expected_records} != "
                f"{epoch.records} records in epoch {h.epoch_id}"
            )
        return groups

    def _hop_records(
        self, h: HopHeader, chunks: Iterable[ChunkIn]
    ) -> Iterator[tuple[int, list[tuple[int, int]], bool]]:
        """Check a hop's stream and yield (seq, [(row, ciphertext)], last) per chunk.

        Every token of the epoch must arrive exactly once, in chunks numbered
        from 0, each ciphertext in range for the origin's key; anything else
        raises InvalidRequest (or InvalidCiphertext) naming the chunk.
        """
        tokens, rows = self.store.token_rows(h.epoch_id)
        row_of = dict(zip(tokens, rows, strict=True))
        seen: set[bytes] = set()
        expected_seq = 0
        finished = False
        for seq, toks, cts, last in chunks:
            if finished:
                raise InvalidRequest("data after the last chunk")
            if seq != expected_seq:
                raise InvalidRequest(f"chunk {seq} arrived where chunk {expected_seq} was expected")
            expected_seq += 1
            if len(toks) != len(cts):
                raise InvalidRequest(f"chunk {seq}: {len(toks)} tokens but {len(cts)} ciphertexts")
            items = []
            for tok, ct in zip(toks, cts, strict=True):
                row = row_of.get(tok)
                if row is None:
                    raise InvalidRequest(
                        f"chunk {seq}: a token that is not this node's in the epoch"
                    )
                if tok in seen:
                    raise InvalidRequest(f"chunk {seq}: a token sent twice")
                seen.add(tok)
                items.append((row, paillier.from_bytes(h.origin_key, ct)))
            # Checked before the last chunk is handed on, so a hop is charged
            # (on its last chunk) only once the whole stream has proved valid.
            if last and len(seen) != h.expected_records:
                raise InvalidRequest(f"received {len(seen)} of {h.expected_records} records")
            yield seq, items, last
            finished = last
        if not finished:
            raise InvalidRequest("stream ended before the last chunk")

    def _data_for(self, h: HopHeader) -> DepartmentData:
        return self.encoder.data(self.store.epoch(h.epoch_id).data_sha256)

    def _charge(self, h: HopHeader, role: str) -> None:
        """Charge the budget and record the hop: only once its whole stream is valid,
        so a malformed or truncated stream costs the node nothing."""
        self.ledger.spend(h.query_id, h.epsilon)
        self.store.record_query(h.query_id, h.epoch_id, role, h.purpose, h.epsilon)

    def apply_predicate(
        self, h: HopHeader, chunks: Iterable[ChunkIn]
    ) -> Iterator[tuple[int, list[bytes], bool]]:
        """Intermediate hop: yield (seq, ciphertexts, last) in the order received.

        A record passing this node's filters keeps its ciphertext, re-randomised;
        any other gets a fresh E(0). Both look alike to the coordinator.
        """
        self.check_hop_header(h)
        data = self._data_for(h)
        keep = _mask(data, range(data.records), h.filters)
        key = h.origin_key
        # Draws on the origin key's randomiser pool if _warm_pools started one.
        enc = self.keys.peer_encryptor(key)
        for seq, items, last in self._hop_records(h, chunks):
            kept = enc.rerandomise([c for _, c in items])
            zeros = iter(enc.encrypt_zeros(sum(1 for r, _ in items if not keep[r])))
            out = [
                paillier.to_bytes(key, fresh if keep[row] else next(zeros))
                for (row, _), fresh in zip(items, kept, strict=True)
            ]
            if last:
                self._charge(h, "filter")
            yield seq, out, last

    def aggregate(self, h: HopHeader, chunks: Iterable[ChunkIn]) -> list[tuple[str, bytes]]:
        """Final hop: sum the received ciphertexts per group of this node's attribute."""
        groups = self.check_hop_header(h)
        data = self._data_for(h)
        keep = _mask(data, range(data.records), h.filters)
        values = data.attributes[h.group_by].tolist() if h.group_by else None
        key = h.origin_key
        acc: dict[str, list[int]] = {g: [] for g in groups}
        for _, items, _ in self._hop_records(h, chunks):
            for row, c in items:
                # Records failing this node's predicate contribute E(0): they
                # are simply left out of every sum.
                group = ALL_GROUP if values is None else values[row]
                if keep[row] and group in acc:
                    acc[group].append(c)
        self._charge(h, "group")
        sums = [paillier.add_all(key, acc[g]) for g in groups]
        # Re-randomise: otherwise the coordinator, which knows every ciphertext
        # it sent, could find which subset multiplies to each sum.
        fresh = self.keys.peer_encryptor(key).rerandomise(sums)
        return [(g, paillier.to_bytes(key, c)) for g, c in zip(groups, fresh, strict=True)]
