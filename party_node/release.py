"""Releasing a query's result: noise shares added by the nodes that do not
decrypt, then one decryption by the origin, after every share is attested,
with the small-number rule and an interval on every cell."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.crypto.attest import NoiseAttestation, digest_groups, sign_noise, verify_noise_chain
from headcount.crypto.signed_sets import GROUP_OUTPUT, verify_hop
from headcount.domain.measures import (
    Packing,
    ReleasedCell,
    decoded_cells,
    protect_release,
    with_intervals,
)
from headcount.errors import FailedPrecondition, InvalidProof, InvalidRequest, PolicyRefused
from headcount.privacy.noise import draw_share
from headcount.protect.sdc import SdcPolicy
from headcount.tls import load_private_key
from headcount.wire.node_values import DecryptRequest
from party_node.ids import check_id
from party_node.keys import NodeKeys
from party_node.replica import Replica
from party_node.store import NodeStore

log = logging.getLogger(__name__)

MAX_GROUPS = 256


@dataclass(frozen=True, slots=True)
class Decrypted:
    """What the origin releases for a query: protected cells and how they were made."""

    cells: list[ReleasedCell]
    total: int | None  # None: withheld
    total_interval: tuple[int, int] | None
    epsilon: float
    column_attribute: str  # "" for a one-way table
    measure_attribute: str  # "" when no mean
    noise_scale: float  # of the count cells' full noise
    sensitivity: int
    shareholders: int


class Release:
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

    def add_noise(
        self, query_id: str, key: paillier.PublicKey, groups: Sequence[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, bytes]], NoiseAttestation]:
        """Add this node's share of the query's noise to every aggregate; sign it.

        Only for an announced query that names this node as a share-holder,
        under another party's key, once per query (asked again, it refuses:
        a second share would not help anyone but a party averaging shares).
        Raises PolicyRefused or InvalidRequest otherwise.
        """
        check_id("query_id", query_id)
        names = _group_names(groups)
        query = self.replica.announced_query(query_id)
        self.replica.check_project(query.project_id or "")
        plan = self.replica.noise_plan(query)
        if self.name not in plan.nodes:
            raise PolicyRefused(f"{self.name} holds no noise share of query {query_id}")
        if key.n == self.keys.public.n:
            raise PolicyRefused("aggregates under this node's own key are refused")
        peers = self.keys.peers()
        if peers and key not in peers:
            raise PolicyRefused("the key is not another party's from the latest ceremony")
        packing = self.replica.announced_packing(query, plan, key.n.bit_length())
        values = [paillier.from_bytes(key, ct) for _, ct in groups]
        self.store.claim_noise(query_id)
        specs = packing.noise_specs()
        # One share per slot per group, from the OS's CSPRNG ([slot][group]).
        shares = [draw_share(spec.scale, len(plan.shareholders), len(groups)) for spec in specs]
        noisy = [
            paillier.add_plain(key, c, packing.pack_share(shares, i)) for i, c in enumerate(values)
        ]
        fresh = self.keys.peer_encryptor(key).rerandomise(noisy)
        out = [(g, paillier.to_bytes(key, c)) for g, c in zip(names, fresh, strict=True)]
        attestation = sign_noise(
            query_id,
            self.name,
            digest_groups(groups),
            digest_groups(out),
            load_private_key(self.config.tls.key),
            self.config.tls.cert.read_bytes(),
        )
        log.info(
            "%s: noise share added to %d aggregates of query %s", self.name, len(out), query_id
        )
        return out, attestation

    def decrypt(self, request: DecryptRequest) -> Decrypted:
        """Decrypt noisy aggregates of a query this node encrypted for, once; apply SDC.

        Before decrypting, checks that the aggregates are the grouping node's
        signed output (``group_statement``) with every share-holding node's
        noise share added in turn (``attestations``; InvalidProof otherwise),
        then adds the coordinator's share itself, so no ciphertext of anyone
        else's choosing enters the sum and the noise is one no single party
        knows. Every released cell carries its noise scale and a 95% interval.
        """
        query_id, groups = request.query_id, request.groups
        names = _group_names(groups)
        values = [paillier.from_bytes(self.keys.public, ct) for _, ct in groups]
        query = self.replica.announced_query(query_id)
        plan = self.replica.noise_plan(query)
        parties = query.parties
        if request.group_statement is None or not parties:
            raise InvalidProof("no signed output from the query's grouping node")
        verify_hop(
            request.group_statement,
            query_id,
            parties[-1],
            GROUP_OUTPUT,
            ca_cert=self.federation.ca_cert,
        )
        verify_noise_chain(
            query_id,
            plan.nodes,
            request.attestations,
            request.group_statement.digest,
            digest_groups(groups),
            ca_cert=self.federation.ca_cert,
        )
        # Checked before the one decryption is claimed, so a malformed share
        # leaves the query abandonable (and every ledger refundable).
        announced = self.replica.announced_packing(query, plan, self.keys.public.n.bit_length())
        values = _add_coordinator_share(
            self.keys.public, announced, values, request.coordinator_noise
        )
        record = self.store.claim_decryption(query_id)
        if not record.packing:
            raise FailedPrecondition(f"query {query_id} has no slot layout at {self.name}")
        packing = Packing.from_json(record.packing)
        if packing != announced:
            raise PolicyRefused(f"query {query_id}: the slot layout is not the one it encrypted")
        out = self.federation.output
        policy = SdcPolicy(out.suppress_below, out.rounding_base, out.secondary_suppression)
        plain = [paillier.decrypt(self.keys.private, c) for c in values]
        decoded = [(g, packing.read(v)) for g, v in zip(names, plain, strict=True)]
        cells, total, two_way = protect_release(packing, decoded, policy)
        released = with_intervals(packing, cells, total, policy, decoded_cells(packing, decoded))
        # Qualified by this node's name: in a transition table both dimensions
        # are often the same attribute, of two periods' parties.
        column = f"{self.name}.{packing.group_by}" if two_way else ""
        return Decrypted(
            released.cells,
            total,
            released.total_interval,
            record.epsilon,
            column,
            packing.measure_attribute,
            released.noise_scale,
            packing.sensitivity,
            packing.shareholders,
        )


def _add_coordinator_share(
    key: paillier.PublicKey, packing: Packing, values: Sequence[int], noise: Sequence[int]
) -> list[int]:
    """Each aggregate plus the coordinator's share for it: one integer per slot,
    each within the layout's share bound (InvalidRequest otherwise), so a share
    can neither carry into a neighbouring slot nor stand for anything but noise."""
    slots = len(packing.noise_specs())
    if len(noise) != slots * len(values):
        raise InvalidRequest(
            f"the coordinator's share has {len(noise)} values; "
            f"{len(values)} aggregates of {slots} slots need {slots * len(values)}"
        )
    bound = packing.share_bound
    if any(abs(v) > bound for v in noise):
        raise InvalidRequest(f"a coordinator noise share outside +-{bound}")
    return [
        paillier.add_plain(key, c, packing.layout.pack_noise(noise[i * slots : (i + 1) * slots]))
        for i, c in enumerate(values)
    ]


def _group_names(groups: Sequence[tuple[str, bytes]]) -> list[str]:
    """The names of a table's aggregates: 1 to `MAX_GROUPS` of them, each once
    (InvalidRequest otherwise)."""
    if not groups or len(groups) > MAX_GROUPS:
        raise InvalidRequest(f"a table has 1 to {MAX_GROUPS} groups")
    names = [g for g, _ in groups]
    if len(set(names)) != len(names):
        raise InvalidRequest("group names must be unique")
    return names
