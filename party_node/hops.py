"""A query's hops at a node: encrypt (as origin), filter (keep or replace by
E(0)) and group (sum per category), each only for announced work; what
arrives is checked in party_node.inbound."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.crypto.attest import digest_groups
from headcount.crypto.signed_sets import (
    FILTER_SET,
    GROUP_OUTPUT,
    ORIGIN_SET,
    HopStatement,
    ciphertext_hash,
    set_digest,
    sign_hop,
)
from headcount.domain.measures import ALL_GROUP, Packing, PackingRequest, make_packing
from headcount.domain.query import (
    Predicate,
    check_group_by,
    check_measure,
    check_predicates,
    unlinked_group,
)
from headcount.errors import InvalidRequest, PolicyRefused
from headcount.privacy.accountant import PeriodLedger
from headcount.privacy.sensitivity import NoisePlan
from headcount.tls import load_private_key
from headcount.wire.node_values import HopHeader, HopItem, LeftoversIn
from party_node.data import DepartmentData
from party_node.encode import Encoder
from party_node.ids import check_id
from party_node.inbound import Inbound, check_fills
from party_node.keys import NodeKeys
from party_node.replica import Replica
from party_node.store import NodeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignedOutput:
    """What a sender hands on: its records' ciphertexts (in token order, or in
    the order received), its E(0) fills for the next hop, and its signed
    statement over all of them."""

    tokens: list[bytes]
    ciphertexts: list[bytes]
    fills: list[bytes]
    statement: HopStatement
    # For a household hop, each ciphertext's household key instead of tokens.
    households: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GroupedOutput:
    groups: list[tuple[str, bytes]]
    statement: HopStatement


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
        self.inbound = Inbound(federation, config, name, store, keys, replica)
        # What makes this node's proven ciphertexts as origin. Only the attack
        # suite replaces it, to play a department that changed its own code.
        self.prover: type[paillier.Prover] = paillier.Prover

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
        fill_count: int = 0,
    ) -> SignedOutput:
        """One packed plaintext per record, in token order, encrypted under this node's key.

        Also ``fill_count`` fresh E(0)s for the next hop's unlinked positions,
        and this node's signed statement over the set of all of them
        (headcount.crypto.signed_sets), so the coordinator can only place
        these ciphertexts, never scale, repeat or make its own.

        Without ``packing``: 1 for each record passing ``filters``, else 0.
        With it: the record's count slot for its category of ``packing.group_by``
        (and its valued and sum slots for a mean), all zeros if it fails the
        filters. With ``per_household``, one plaintext per household of this
        node (by keyed address) instead of per record: its flag, 1 if any of
        its records passes, ``household_cap`` times (distinct encryptions), in
        ``SignedOutput.households`` order; records with no household key take
        no part. The coordinator hands each copy to one record of the next
        node, so a flag moves a count by at most the cap the noise is sized for.
        """
        check_id("query_id", query_id)
        check_fills(fill_count)
        query = self.replica.check_query_announced(query_id, epsilon, purpose)
        plan = self.replica.noise_plan(query)
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
        labels: list[bytes] = []
        if per_household:
            # Each household's representative: its first passing record, else
            # its first record (a zero row).
            first: dict[bytes, int] = {}
            for i, hh in enumerate(self.store.household_keys(epoch_id)):
                if hh and (hh not in first or (indicator[i] and not indicator[first[hh]])):
                    first[hh] = i
            cap = self.federation.privacy.household_cap
            labels = [hh for hh in sorted(first) for _ in range(cap)]
            picked = [first[hh] for hh in labels]
            indicator = [indicator[i] for i in picked]
            rows = [rows[i] for i in picked]
            tokens = []
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
        layout = self.replica.contribution_layout(query, self.keys.public)
        if layout is not None:
            # Each with its proof that it holds an honest record's value
            # (0 for a fill): the receiver refuses any other.
            pool = self.keys.proof_pool
            prover = self.prover(layout, pool if pool and pool.pub == layout.key else None)
            out, fills = prover.encrypt(plain), prover.encrypt([0] * fill_count)
        else:
            workers = paillier.bulk_workers(len(plain) + fill_count)
            cts = self.keys.encryptor.encrypt(plain, workers=workers)
            zeros = self.keys.encryptor.encrypt_zeros(fill_count, workers=workers)
            out = paillier.to_bytes_batch(self.keys.public, cts)
            fills = paillier.to_bytes_batch(self.keys.public, zeros)
        hashes = [ciphertext_hash(c) for c in [*out, *fills]]
        statement = self._sign_set(query_id, ORIGIN_SET, hashes)
        return SignedOutput(tokens, out, fills, statement, labels)

    def _sign_set(self, query_id: str, stage: str, hashes: Sequence[bytes]) -> HopStatement:
        """Sign the set of everything this node hands on, given each one's hash."""
        if len(set(hashes)) != len(hashes):
            # Fresh randomness never repeats; a repeat means a broken source.
            raise InvalidRequest("two ciphertexts of one set are equal")
        return self._sign(query_id, stage, set_digest(hashes))

    def _sign(self, query_id: str, stage: str, digest: bytes) -> HopStatement:
        return sign_hop(
            query_id,
            self.name,
            stage,
            digest,
            load_private_key(self.config.tls.key),
            self.config.tls.cert.read_bytes(),
        )

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

    def _data_for(self, h: HopHeader) -> DepartmentData:
        return self.encoder.data(self.store.epoch(h.epoch_id).data_sha256)

    def _charge(self, h: HopHeader, role: str) -> None:
        """Charge the budget and record the hop: only once its whole stream is valid,
        so a malformed or truncated stream costs the node nothing."""
        self.ledger.spend(h.query_id, h.epsilon)
        self.store.record_query(h.query_id, h.epoch_id, role, h.purpose, h.epsilon)

    def apply_predicate(
        self, h: HopHeader, items: Iterable[HopItem]
    ) -> Iterator[tuple[int, list[bytes], list[bytes], HopStatement | None, bool]]:
        """Intermediate hop: yield (seq, ciphertexts, fills, statement, last) in the
        order received.

        A record passing this node's filters keeps its ciphertext, re-randomised;
        any other gets a fresh E(0). Both look alike to the coordinator. The
        last chunk also carries ``h.fill_count`` E(0) fills for the next hop
        and this node's signed statement over its whole output set.
        """
        _, sender = self.inbound.check_header(h)
        stream = iter(items)
        data = self._data_for(h)
        keep = _mask(data, range(data.records), h.filters)
        key = h.origin_key
        # Draws on the origin key's randomiser pool if NodeKeys.warm_pools started one.
        enc = self.keys.peer_encryptor(key)
        hashes: list[bytes] = []
        for seq, records, last in self.inbound.records(h, stream, sender):
            kept = enc.rerandomise([c for _, c in records])
            zeros = iter(enc.encrypt_zeros(sum(1 for r, _ in records if not keep[r])))
            out = paillier.to_bytes_batch(
                key,
                [
                    fresh if keep[row] else next(zeros)
                    for (row, _), fresh in zip(records, kept, strict=True)
                ],
            )
            hashes.extend(ciphertext_hash(c) for c in out)
            if not last:
                yield seq, out, [], None, False
                continue
            if next(stream, None) is not None:
                raise InvalidRequest("data after the last chunk")
            fills = paillier.to_bytes_batch(key, enc.encrypt_zeros(h.fill_count))
            hashes.extend(ciphertext_hash(c) for c in fills)
            sender.finish()
            statement = self._sign_set(h.query_id, FILTER_SET, hashes)
            self._charge(h, "filter")
            yield seq, out, fills, statement, True

    def aggregate(self, h: HopHeader, items: Iterable[HopItem]) -> GroupedOutput:
        """Final hop: sum the received ciphertexts per group of this node's attribute.

        With ``h.unlinked_cell``, the leftovers that follow the last chunk
        (previous-hop records with no link here, each checked against the
        signed set like every other ciphertext) are summed into their own cell.
        """
        groups, sender = self.inbound.check_header(h)
        stream = iter(items)
        data = self._data_for(h)
        keep = _mask(data, range(data.records), h.filters)
        values = data.attributes[h.group_by].tolist() if h.group_by else None
        key = h.origin_key
        acc: dict[str, list[int]] = {g: [] for g in groups}
        for _, records, _ in self.inbound.records(h, stream, sender):
            for row, c in records:
                # Records failing this node's predicate contribute E(0): they
                # are simply left out of every sum.
                group = ALL_GROUP if values is None else values[row]
                if keep[row] and group in acc:
                    acc[group].append(c)
        for item in stream:
            if not isinstance(item, LeftoversIn) or not h.unlinked_cell:
                raise InvalidRequest("data after the last chunk")
            acc[unlinked_group(self.name)].extend(sender.read(item.ciphertexts))
        sender.finish()
        self._charge(h, "group")
        sums = [paillier.add_all(key, acc[g]) for g in groups]
        # Re-randomise: otherwise the coordinator, which knows every ciphertext
        # it sent, could find which subset multiplies to each sum.
        fresh = self.keys.peer_encryptor(key).rerandomise(sums)
        out = [(g, paillier.to_bytes(key, c)) for g, c in zip(groups, fresh, strict=True)]
        return GroupedOutput(out, self._sign(h.query_id, GROUP_OUTPUT, digest_groups(out)))
