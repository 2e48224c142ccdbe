"""Attacks on the protocol: forged, replayed, reordered and unannounced messages."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from headcount import tls
from headcount.attacks import ATTACK_PROJECT, AttackResult
from headcount.crypto import ceremony, paillier
from headcount.domain.events import QueryAnnounced
from headcount.domain.query import QuerySpec
from headcount.errors import HeadcountError, InvalidProof
from headcount.local import LocalFederation
from headcount.tls import Role
from headcount.wire.node_values import ChunkIn, ContributeRequest, HopHeader, IndicatorRequest
from headcount.wire.raw_node import RawNode

TIMEOUT_S = 10


def _stub(fed: LocalFederation, party: str, cert: Path, key: Path) -> RawNode:
    channel = grpc.secure_channel(
        fed.config.party(party).address,
        tls.channel_credentials(cert, key, fed.config.ca_cert),
    )
    return RawNode(channel, TIMEOUT_S)


def _coordinator_stub(fed: LocalFederation, party: str) -> RawNode:
    c = fed.config.coordinator.tls
    return _stub(fed, party, c.cert, c.key)


def _refused(name: str, attacker: str, knows: str, call: Callable[[], object]) -> AttackResult:
    """Make the attacker's call: success 0 if the peer refuses it, 1 if it answers."""
    try:
        call()
    except grpc.RpcError as exc:
        detail = (exc.details() or "")[:80]
        return AttackResult(name, attacker, knows, f"refused ({exc.code().name}: {detail})", 0.0)
    return AttackResult(name, attacker, knows, "accepted", 1.0)


def forged_certificate(fed: LocalFederation) -> AttackResult:
    """An outsider's own CA issues a certificate claiming the coordinator role."""
    with tempfile.TemporaryDirectory() as tmp:
        rogue = tls.create_ca(Path(tmp), fed.config.name)
        forged = tls.issue(rogue, Path(tmp), "coordinator", Role.COORDINATOR)
        stub = _stub(fed, "immigration", forged.cert_path, forged.key_path)
        return _refused(
            "forged-certificate",
            "outsider",
            "a certificate from another CA",
            stub.get_identity,
        )


def impersonation(fed: LocalFederation) -> AttackResult:
    """A node signs an identity in another node's name (to receive its envelopes)."""
    justice = fed.config.party("justice").tls
    forged = ceremony.sign_identity(
        "health",
        b"\x07" * 32,
        b"\x01" * 256,
        justice.cert.read_bytes(),
        tls.load_private_key(justice.key),
    )
    try:
        ceremony.verify_identity(forged, fed.config.ca_cert)
    except InvalidProof as exc:
        return AttackResult(
            "impersonation",
            "party node (justice)",
            "its own valid certificate",
            f"refused: {exc}",
            0.0,
        )
    return AttackResult("impersonation", "party node", "", "accepted", 1.0)


def replayed_ceremony(fed: LocalFederation) -> AttackResult:
    """A coordinator replays an earlier ceremony id to make nodes reuse a contribution."""
    stub = _coordinator_stub(fed, "education")
    old = fed.coordinator.coordinator.store.latest_ceremony()
    identities = tuple(_coordinator_stub(fed, p).get_identity() for p in fed.config.party_names)
    request = ContributeRequest(old, identities)
    return _refused(
        "replayed-ceremony",
        "coordinator",
        "an earlier ceremony id",
        lambda: stub.contribute(request),
    )


def reordered_chunks(fed: LocalFederation) -> AttackResult:
    """A coordinator sends a properly announced hop's chunks out of order."""
    coordinator = fed.coordinator.coordinator
    stub = _coordinator_stub(fed, "immigration")
    epoch = coordinator.store.latest_epoch()
    purpose = "Attack suite: chunks out of order."
    coordinator.log(
        QueryAnnounced(
            query_id="reordered",
            epoch_id=epoch,
            purpose=purpose,
            parties=("education", "immigration"),
            epsilon=0.1,
            # Cite the approved project, so the node meets the reordering
            # rather than refusing for want of a project.
            project_id=ATTACK_PROJECT,
        )
    )
    header = HopHeader(
        query_id="reordered",
        epoch_id=epoch,
        origin_key=paillier.PublicKey.from_bytes(fed.nodes["education"].node.identity().paillier_n),
        group_by="",
        filters=(),
        epsilon=0.1,
        expected_records=coordinator.store.epoch(epoch).records["immigration"],
        purpose=purpose,
    )
    # Chunk 1 first, and the last: chunk 0 never comes.
    items = [ChunkIn(seq=1, tokens=(), ciphertexts=(), last=True)]
    return _refused(
        "reordered-chunks",
        "coordinator",
        "an announced hop, its chunks out of order",
        lambda: stub.aggregate_by_group(header, items),
    )


def unannounced_query(fed: LocalFederation) -> AttackResult:
    """A coordinator runs a query hop that the signed audit log does not announce."""
    stub = _coordinator_stub(fed, "education")
    epoch = fed.coordinator.coordinator.store.latest_epoch()
    request = IndicatorRequest(
        query_id="secret-query",
        epoch_id=epoch,
        filters=(),
        epsilon=0.1,
        purpose="unlogged",
        chunk_records=0,
        per_household=False,
        packing=None,
        fill_count=0,
    )
    return _refused(
        "unannounced-query",
        "coordinator",
        "valid coordinator credentials",
        lambda: stub.encrypt_indicators(request),
    )


def replayed_epoch(fed: LocalFederation) -> AttackResult:
    """A coordinator replays a node's tokens from an earlier epoch in a hop of the
    current one, hoping to line up a person's records across epochs."""
    coordinator = fed.coordinator.coordinator
    earlier = coordinator.store.latest_epoch()
    old_tokens = coordinator.store.tokens(earlier, "immigration")[:5]
    with fed.operator() as op:
        current = op.run_linkage().epoch_id
    purpose = "Attack suite: tokens replayed from an earlier epoch."
    coordinator.log(
        QueryAnnounced(
            query_id="replayed-epoch",
            epoch_id=current,
            purpose=purpose,
            parties=("education", "immigration"),
            epsilon=0.1,
            project_id=ATTACK_PROJECT,
        )
    )
    n_bytes = fed.nodes["education"].node.identity().paillier_n
    width = 2 * len(n_bytes)
    header = HopHeader(
        query_id="replayed-epoch",
        epoch_id=current,
        origin_key=paillier.PublicKey.from_bytes(n_bytes),
        group_by="",
        filters=(),
        epsilon=0.1,
        expected_records=coordinator.store.epoch(current).records["immigration"],
        purpose=purpose,
    )
    chunk = ChunkIn(
        seq=0,
        tokens=old_tokens,
        ciphertexts=[(2).to_bytes(width, "big")] * len(old_tokens),
        last=True,
    )
    stub = _coordinator_stub(fed, "immigration")
    return _refused(
        "replayed-epoch",
        "coordinator",
        "a node's tokens from the previous epoch",
        lambda: stub.aggregate_by_group(header, [chunk]),
    )


class _AmplifyingProver(paillier.Prover):
    """A department's modified code: its first record that counts is encrypted
    as 5 (counting five times where the noise is sized for one), with a valid
    proof for the value set {0, 5} instead of the announced {0, 1}."""

    def encrypt(self, plain: Sequence[int]) -> list[bytes]:
        out = super().encrypt(plain)
        first = next((i for i, v in enumerate(plain) if v), None)
        if first is not None:
            other = paillier.ProofLayout(self.layout.key, (0, 5), self.layout.context)
            out[first] = paillier.Prover(other).encrypt([5])[0]
        return out


def amplified_contribution(fed: LocalFederation) -> AttackResult:
    """A department, as a query's origin, makes one record count five times."""
    node = fed.nodes["education"].node
    spent = {p: r.node.ledger.spent() for p, r in fed.nodes.items()}
    spec = QuerySpec(
        "Attack suite: one record amplified.",
        "education",
        "immigration",
        "immigration_status",
        project_id=ATTACK_PROJECT,
    )
    knows = "its own code (origin of the query): one record encrypted as 5"
    node.hops.prover = _AmplifyingProver
    try:
        with fed.analyst() as analyst:
            analyst.query(spec)
    except HeadcountError as exc:
        charged = {p: r.node.ledger.spent() for p, r in fed.nodes.items()} != spent
        outcome = f"refused: {str(exc)[:80]}" + ("; a ledger was charged" if charged else "")
        return AttackResult("amplified-contribution", "department", knows, outcome, float(charged))
    finally:
        node.hops.prover = paillier.Prover
    return AttackResult("amplified-contribution", "department", knows, "released", 1.0)
