"""What the coordinator does: relay the ceremony, link, and run query hop chains.

The coordinator sees tokens, keyed encodings, similarity scores, clusters and
ciphertexts. It never holds the linkage secret, a raw identifier, an attribute
value or an unprotected count: the decrypting node applies the small-number rule
before a table leaves it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.planner import Hop, Plan, plan_query
from coordinator.store import CoordinatorStore, EpochInfo, PartyEncodings
from headcount import rpc, tls
from headcount.audit import AuditLog
from headcount.config import FederationConfig
from headcount.crypto import ceremony, paillier
from headcount.crypto.attest import Abandonment, NoiseAttestation, verify_abandonment
from headcount.crypto.paillier import bulk_workers
from headcount.errors import (
    BudgetExhausted,
    ConfigError,
    FailedPrecondition,
    HeadcountError,
    InvalidProof,
    InvalidRequest,
    NotAuthorised,
    PeerUnavailable,
    PolicyRefused,
)
from headcount.linkage.address import HOUSEHOLD_KEY_BYTES
from headcount.linkage.dedup import dedup_records, duplicate_tokens, first_records
from headcount.linkage.engine import link_parties
from headcount.linkage.executor import executor_from_spec
from headcount.linkage.households import household_groups, resolve_households
from headcount.linkage.matchkeys import key_digests, wire_digests
from headcount.linkage.schema import federation_schema
from headcount.linkage.scores import score_histograms
from headcount.measures import Packing, make_packing
from headcount.privacy.accountant import compose, period_of
from headcount.privacy.noise import draw_share
from headcount.privacy.sensitivity import NoisePlan, plan_noise
from headcount.projects import ProjectDoc, verify_decision
from headcount.query import (
    QuerySpec,
    check_group_by,
    check_measure,
    check_predicates,
    spec_to_json,
    unlinked_group,
)
from headcount.tls import Principal, Role
from headcount.wire import common_pb2, coordinator_pb2, party_node_pb2, party_node_pb2_grpc
from headcount.wire import convert as cv

log = logging.getLogger(__name__)

T = TypeVar("T")
TOKEN_BYTES = 16
MATCH_KEY_BYTES = 16
CHUNK_RECORDS = 1_000
# An upload cut short is resumed this many times in all, backing off from
# UPLOAD_BACKOFF_S and doubling, before the epoch fails.
UPLOAD_ATTEMPTS = 5
UPLOAD_BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class CeremonyResult:
    ceremony_id: str
    parties: tuple[str, ...]
    confirmed: bool


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    query_id: str
    epoch_id: str
    title: str
    table: common_pb2.ProtectedTable
    budget_remaining: float


class NodeClients:
    """One mutual-TLS channel per party node, with status mapping and deadlines."""

    def __init__(
        self,
        federation: FederationConfig,
        interceptors: Sequence[rpc.ClientInterceptor] = (),
    ) -> None:
        creds = tls.channel_credentials(
            federation.coordinator.tls.cert, federation.coordinator.tls.key, federation.ca_cert
        )
        self.timeout_s = federation.rpc_timeout_s
        self.channels = {
            p.name: rpc.secure_channel(
                p.address,
                creds,
                max_message_bytes=federation.max_message_bytes,
                interceptors=interceptors,
            )
            for p in federation.parties
        }
        self.stubs = {
            name: party_node_pb2_grpc.PartyNodeStub(ch) for name, ch in self.channels.items()
        }

    def stub(self, party: str) -> party_node_pb2_grpc.PartyNodeStub:
        return self.stubs[party]

    def call(self, party: str, fn: Callable[[party_node_pb2_grpc.PartyNodeStub], T]) -> T:
        try:
            return fn(self.stubs[party])
        except grpc.RpcError as exc:
            rpc.raise_from_rpc(exc, party)

    def healthy(self, party: str) -> bool:
        try:
            reply = health_pb2_grpc.HealthStub(self.channels[party]).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()


def _each_settled(parties: Sequence[str], fn: Callable[[str], T]) -> dict[str, T | BaseException]:
    """Run ``fn`` for every party concurrently; failures are returned, not raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(parties))) as pool:
        futures = {p: pool.submit(fn, p) for p in parties}
        out: dict[str, T | BaseException] = {}
        for p, f in futures.items():
            exc = f.exception()
            out[p] = exc if exc is not None else f.result()
        return out


def _each(parties: Sequence[str], fn: Callable[[str], T]) -> dict[str, T]:
    """Run ``fn`` for every party concurrently; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(parties))) as pool:
        futures = {p: pool.submit(fn, p) for p in parties}
        return {p: f.result() for p, f in futures.items()}


class _Upload:
    """One party's encoding stream for an epoch, checked chunk by chunk as it arrives."""

    def __init__(self, party: str, epoch_id: str, width: int, levels: int) -> None:
        self.party, self.epoch_id, self.width, self.levels = party, epoch_id, width, levels
        self.chunks: list[party_node_pb2.EncodingChunk] = []
        self.total = -1
        self.fingerprint = ""

    def add(self, chunk: party_node_pb2.EncodingChunk) -> None:
        party, seq = self.party, len(self.chunks)
        key_width = self.levels * MATCH_KEY_BYTES
        if self.chunks and self.chunks[-1].last:
            raise InvalidRequest(f"{party}: data after the last chunk")
        if chunk.seq != seq or chunk.epoch_id != self.epoch_id:
            raise InvalidRequest(f"{party}: chunk {chunk.seq} out of order or from another epoch")
        if chunk.filter_bytes != self.width:
            raise InvalidRequest(
                f"{party}: filters are {chunk.filter_bytes} bytes; the schema says {self.width}"
            )
        if any(len(t) != TOKEN_BYTES for t in chunk.tokens):
            raise InvalidRequest(f"{party}: malformed token in chunk {seq}")
        if len(chunk.clks) != len(chunk.tokens) * self.width:
            raise InvalidRequest(f"{party}: chunk {seq} has truncated encodings")
        if (
            chunk.match_key_levels != self.levels
            or len(chunk.match_keys) != len(chunk.tokens) * key_width
        ):
            raise InvalidRequest(f"{party}: chunk {seq} has malformed match-keys")
        if len(chunk.household_keys) != len(chunk.tokens) or any(
            len(h) not in (0, HOUSEHOLD_KEY_BYTES) for h in chunk.household_keys
        ):
            raise InvalidRequest(f"{party}: chunk {seq} has malformed household keys")
        if self.total not in (-1, chunk.total_records) or self.fingerprint not in (
            "",
            chunk.schema_fingerprint,
        ):
            raise InvalidRequest(f"{party}: chunk {seq} contradicts earlier chunks")
        self.total, self.fingerprint = chunk.total_records, chunk.schema_fingerprint
        self.chunks.append(chunk)

    def finish(self) -> tuple[PartyEncodings, str]:
        party = self.party
        tokens = [t for c in self.chunks for t in c.tokens]
        done = bool(self.chunks) and self.chunks[-1].last
        commitment = self.chunks[-1].dataset_commitment if done else b""
        if not done or len(tokens) != self.total or len(commitment) != 32:
            raise InvalidRequest(
                f"{party}: encoding stream ended early ({len(tokens)} of {self.total})"
            )
        if len(set(tokens)) != len(tokens):
            raise InvalidRequest(f"{party}: duplicate tokens")
        households = [h for c in self.chunks for h in c.household_keys]
        clks = np.frombuffer(b"".join(c.clks for c in self.chunks), dtype=np.uint8).reshape(
            len(tokens), self.width
        )
        keys = wire_digests(b"".join(c.match_keys for c in self.chunks), len(tokens), self.levels)
        encodings = PartyEncodings(party, tokens, clks, commitment, households, keys)
        return encodings, self.fingerprint


def _load_audit_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the audit key must be an Ed25519 private key")
    return key


class Coordinator:
    def __init__(
        self,
        federation: FederationConfig,
        nodes: NodeClients | None = None,
    ) -> None:
        self.federation = federation
        self.store = CoordinatorStore(federation.coordinator.database)
        self.audit = AuditLog(
            federation.coordinator.database,
            signer=_load_audit_key(federation.coordinator.audit_key),
            verifier=federation.audit_verifier,
        )
        self.nodes = nodes or NodeClients(federation)
        self.parties = federation.party_names
        self.schema = federation_schema(federation.linkage_schema)
        self._pooled: list[paillier.Encryptor] = []
        self._close_unfinished()

    def _close_unfinished(self) -> None:
        """Close work a previous run of this coordinator left half done (it died).

        A query still marked running is aborted: no table was released (a
        release is stored before it is returned), but nodes may have charged
        their budgets, so it stays counted. An epoch that started and never
        finished is marked aborted; the latest finished epoch stays current.
        """
        for query_id in self.store.running_queries():
            self.store.finish_query(query_id, "aborted", None)
            self.log("query_aborted", {"query_id": query_id, "reason": "coordinator restarted"})
            log.warning("query %s was left running by a previous run; aborted", query_id)
        events = self.audit.events()
        closed = {e.body.get("epoch_id") for e in events if e.kind in ("epoch", "epoch_aborted")}
        for e in events:
            if e.kind == "epoch_started" and e.body.get("epoch_id") not in closed:
                epoch_id = e.body.get("epoch_id")
                self.log("epoch_aborted", {"epoch_id": epoch_id, "reason": "coordinator restarted"})
                log.warning("epoch %s was left unfinished by a previous run; aborted", epoch_id)

    # -- audit log ------------------------------------------------------------------
    def sync_audit(self, party: str) -> int:
        """Bring ``party``'s replica up to date; returns its next seq."""

        def sync(stub: party_node_pb2_grpc.PartyNodeStub) -> int:
            head = stub.SyncAudit(party_node_pb2.AuditBatch(), timeout=self.nodes.timeout_s)
            missing = self.audit.events(since=head.next_seq)
            for start in range(0, len(missing), 500):
                head = stub.SyncAudit(
                    party_node_pb2.AuditBatch(
                        events_json=[e.to_json() for e in missing[start : start + 500]]
                    ),
                    timeout=self.nodes.timeout_s,
                )
            return int(head.next_seq)

        return self.nodes.call(party, sync)

    def log(self, kind: str, body: dict[str, Any], *, required: Sequence[str] = ()) -> None:
        """Append a signed event and push it to every node's replica.

        Nodes in ``required`` must acknowledge it (they refuse to take part in
        unannounced work anyway); a failure to reach any other node is logged
        and repaired at its next sync.
        """
        self.audit.append(kind, body)
        results = _each_settled(self.parties, self.sync_audit)
        for party, outcome in results.items():
            if isinstance(outcome, BaseException):
                if party in required:
                    raise outcome
                log.warning("audit replica of %s not updated: %s", party, outcome)

    # -- key ceremony ------------------------------------------------------------
    def collect_identities(self) -> dict[str, ceremony.Identity]:
        replies = _each(
            self.parties,
            lambda p: self.nodes.call(
                p,
                lambda s: s.GetIdentity(
                    party_node_pb2.IdentityRequest(), timeout=self.nodes.timeout_s
                ),
            ),
        )
        out = {}
        for party, reply in replies.items():
            identity = cv.identity_from_pb(reply)
            if identity.party != party:
                raise InvalidProof(f"node at {party}'s address claims to be {identity.party!r}")
            ceremony.verify_identity(identity, self.federation.ca_cert)
            self.store.save_identity(party, reply.SerializeToString())
            out[party] = identity
        return out

    def run_ceremony(self) -> CeremonyResult:
        identities = self.collect_identities()
        ceremony_id = uuid.uuid4().hex
        roster = [cv.identity_to_pb(identities[p]) for p in self.parties]
        contributions = _each(
            self.parties,
            lambda p: self.nodes.call(
                p,
                lambda s: s.Contribute(
                    party_node_pb2.ContributeRequest(ceremony_id=ceremony_id, parties=roster),
                    timeout=self.nodes.timeout_s,
                ),
            ),
        )
        commitments = [c.commitment for c in contributions.values()]
        envelopes = [e for c in contributions.values() for e in c.envelopes]
        for party, c in contributions.items():
            if c.commitment.party != party or any(e.sender != party for e in c.envelopes):
                raise InvalidProof(f"{party} sent a contribution in another party's name")
        confirmations = _each(
            self.parties,
            lambda p: self.nodes.call(
                p,
                lambda s: s.Finish(
                    party_node_pb2.FinishRequest(
                        ceremony_id=ceremony_id,
                        envelopes=[e for e in envelopes if e.recipient == p],
                        commitments=commitments,
                    ),
                    timeout=self.nodes.timeout_s,
                ),
            ),
        )
        tags = {c.tag for c in confirmations.values()}
        confirmed = len(tags) == 1
        self.store.save_ceremony(
            ceremony_id,
            self.parties,
            [(e.sender, e.recipient, e.nonce, e.ciphertext) for e in envelopes],
            [(c.party, c.digest) for c in commitments],
            confirmed,
        )
        self.log(
            "ceremony",
            {
                "ceremony_id": ceremony_id,
                "parties": list(self.parties),
                "commitments": {c.party: c.digest.hex() for c in commitments},
                "confirmed": confirmed,
            },
        )
        if not confirmed:
            raise InvalidProof("nodes derived different linkage secrets; the ceremony failed")
        log.info("ceremony %s confirmed by %d parties", ceremony_id, len(self.parties))
        return CeremonyResult(ceremony_id, tuple(self.parties), confirmed)

    # -- linkage -------------------------------------------------------------------
    def _fetch_encodings(
        self, party: str, epoch_id: str, ceremony_id: str
    ) -> tuple[PartyEncodings, str]:
        """Pull ``party``'s encodings for the epoch, resuming if the stream breaks.

        A node that drops mid-upload (restarted, network cut) is asked again
        from the first chunk not yet received, after a backoff; it resends the
        same epoch bit for bit, so nothing is received twice. Only an
        unreachable node is retried: a refusal or a malformed chunk fails the
        epoch at once.
        """
        levels = len(self.schema.match_keys) + len(self.schema.support_keys())
        upload = _Upload(party, epoch_id, self.schema.clk.clk_bits // 8, levels)
        for attempt in range(UPLOAD_ATTEMPTS):
            request = party_node_pb2.EncodeRequest(
                epoch_id=epoch_id,
                ceremony_id=ceremony_id,
                chunk_records=CHUNK_RECORDS,
                resume_from_seq=len(upload.chunks),
            )
            try:
                for chunk in self.nodes.stub(party).Encode(request, timeout=self.nodes.timeout_s):
                    upload.add(chunk)
            except grpc.RpcError as exc:
                try:
                    rpc.raise_from_rpc(exc, party)
                except PeerUnavailable:
                    if attempt + 1 == UPLOAD_ATTEMPTS:
                        raise
                    wait = min(UPLOAD_BACKOFF_S * 2**attempt, 30.0)
                    log.warning(
                        "%s: upload cut after %d chunks; resuming in %.1f s",
                        party,
                        len(upload.chunks),
                        wait,
                    )
                    time.sleep(wait)
                    continue
            break
        return upload.finish()

    def run_linkage(self, threshold: float = 0.0) -> EpochInfo:
        explicit_threshold = bool(threshold)
        threshold = threshold or self.schema.threshold
        if not 0 < threshold <= 1:
            raise InvalidRequest("threshold must be in (0, 1]")
        ceremony_id = self.store.latest_ceremony()
        epoch_id = uuid.uuid4().hex
        started = time.monotonic()
        try:
            self.log(
                "epoch_started",
                {"epoch_id": epoch_id, "ceremony_id": ceremony_id, "parties": list(self.parties)},
                required=self.parties,
            )
            return self._link_epoch(epoch_id, ceremony_id, threshold, explicit_threshold, started)
        except Exception as exc:
            self.log("epoch_aborted", {"epoch_id": epoch_id, "reason": str(exc)[:500]})
            raise

    def _link_epoch(
        self,
        epoch_id: str,
        ceremony_id: str,
        threshold: float,
        explicit_threshold: bool,
        started: float,
    ) -> EpochInfo:
        fetched = _each(self.parties, lambda p: self._fetch_encodings(p, epoch_id, ceremony_id))
        fingerprints = {fp for _, fp in fetched.values()}
        if fingerprints != {self.schema.fingerprint()}:
            raise InvalidRequest(
                "linkage schema mismatch between nodes: "
                + ", ".join(f"{p}={fp[:12]}" for p, (_, fp) in fetched.items())
            )
        encodings = {p: enc for p, (enc, _) in fetched.items()}
        log.info("epoch %s: encodings received in %.1f s", epoch_id, time.monotonic() - started)
        executor = executor_from_spec(self.federation.linkage_executor)
        try:
            # With dedup, each department's own records of one person are found
            # from its encodings alone, and only each person's first record is
            # linked and counted (docs/linkage.md).
            # Match-keys first, then (dedup) the supporting keys.
            main = len(self.schema.match_keys)
            digests = {p: key_digests(e.match_keys) for p, e in encodings.items()}
            deduped = (
                {
                    p: dedup_records(
                        e.clks,
                        threshold,
                        keys=digests[p][:main],
                        executor=executor,
                        support=digests[p][main:],
                        auto_threshold=self.schema.auto_threshold and not explicit_threshold,
                        blocking=self.schema.blocking,
                    )
                    for p, e in encodings.items()
                }
                if self.schema.dedup
                else {}
            )
            people = {p: first_records(d.labels) for p, d in deduped.items()}
            result = link_parties(
                {p: e.clks[people[p]] if p in people else e.clks for p, e in encodings.items()},
                threshold,
                executor=executor,
                floor=self.schema.candidate_floor,
                auto_threshold=self.schema.auto_threshold and not explicit_threshold,
                match_keys={
                    p: digests[p][:main, people[p]] if p in people else digests[p][:main]
                    for p in encodings
                },
                # Large pairs are LSH-blocked under a fresh random key per
                # epoch (the engine draws it; no node can predict the bands).
                blocking=self.schema.blocking,
            )
        finally:
            executor.close()
        duplicates: dict[str, dict[bytes, bytes]] = {}
        if people:
            result = dataclasses.replace(
                result, members=_records_of(result.members, result.parties, people)
            )
            duplicates = {
                p: duplicate_tokens(encodings[p].tokens, d.labels) for p, d in deduped.items()
            }
        quality = {
            f"{a}|{b}": {
                "threshold": result.thresholds[(a, b)],
                "key_links": result.key_links.get((a, b), 0),
                "links": result.links[(a, b)],
                **(
                    {
                        "est_precision": round(q.est_precision, 4),
                        "est_recall": round(q.est_recall, 4),
                        "est_f1": round(q.est_f1, 4),
                    }
                    if (q := result.quality.get((a, b))) is not None
                    else {}
                ),
            }
            for a, b in result.links
        }
        # One household per person, from the person's linked records' keys, so
        # a record at an out-of-date address is placed where the person lives.
        resolved = resolve_households(
            result.parties,
            result.members,
            {p: e.households for p, e in encodings.items()},
        )
        clusters = result.clusters
        token_clusters = [{p: encodings[p].tokens[i] for p, i in c.items()} for c in clusters]
        pair_links = result.links
        # Binned scores for the quality report: stored with the epoch, never
        # logged (unprotected small counts do not belong in the public log).
        histograms = score_histograms(
            {p: e.clks for p, e in encodings.items()},
            result.thresholds,
            self.schema.candidate_floor,
        )
        self.store.save_epoch(
            epoch_id,
            ceremony_id,
            threshold,
            self.schema.fingerprint(),
            list(encodings.values()),
            token_clusters,
            pair_links,
            quality,
            score_histograms={pair: h.to_json() for pair, h in histograms.items()},
            resolved_households=resolved,
            duplicates=duplicates,
        )
        info = self.store.epoch(epoch_id)
        self._warm_pools(info.records)
        self.log(
            "epoch",
            {
                "epoch_id": epoch_id,
                "ceremony_id": ceremony_id,
                "records": info.records,
                "commitments": {p: e.commitment.hex() for p, e in encodings.items()},
                "schema_fingerprint": info.schema_fingerprint,
                # The configured threshold only: every linkage statistic (links,
                # clusters, quality estimates, per-pair thresholds) depends on
                # the data and stays in this coordinator's store (docs/privacy.md).
                "threshold": threshold,
            },
        )
        log.info(
            "epoch %s: %d clusters in %.1f s", epoch_id, len(clusters), time.monotonic() - started
        )
        return info

    # -- projects (Five Safes: safe projects) ------------------------------------------
    def _project_status(self, doc: ProjectDoc, approvals: dict[str, str], revoked: bool) -> str:
        if revoked:
            return "revoked"
        if doc.expires < dt.date.today():
            return "expired"
        return "approved" if set(approvals) >= set(doc.parties) else "proposed"

    def project_view(self, project_id: str) -> coordinator_pb2.Project:
        raw, approvals, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        return coordinator_pb2.Project(
            project_id=doc.project_id,
            title=doc.title,
            purpose=doc.purpose,
            analyst=doc.analyst,
            parties=list(doc.parties),
            expires=doc.expires.isoformat(),
            approved_by=sorted(approvals),
            revoked=revoked,
            status=self._project_status(doc, approvals, revoked),
        )

    def propose_project(self, doc: ProjectDoc) -> coordinator_pb2.Project:
        self.federation.check_accredited(doc.analyst)
        unknown = [p for p in doc.parties if p not in self.parties]
        if unknown:
            raise InvalidRequest(
                f"unknown party {unknown}; the federation has {list(self.parties)}"
            )
        if doc.expires <= dt.date.today():
            raise InvalidRequest("a project must expire in the future")
        self.store.add_project(doc.project_id, doc.to_json())
        self.log("project_proposed", {"project": doc.to_json(), "digest": doc.digest()})
        return self.project_view(doc.project_id)

    def decide_project(
        self, project_id: str, decision: str, by: Principal, signature: bytes, cert_pem: bytes
    ) -> coordinator_pb2.Project:
        raw, _, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        if revoked:
            raise FailedPrecondition(f"project {project_id} is revoked")
        if by.role is Role.PARTY:
            if by.name not in doc.parties:
                raise NotAuthorised(f"project {project_id} does not use {by.name}'s data")
            verify_decision(doc, decision, by.name, signature, cert_pem)
        elif decision != "revoke":
            raise NotAuthorised("only a department's data steward approves a project")
        if decision == "approve":
            self.store.set_approval(project_id, by.name, signature.hex())
            event = "project_approved"
        else:
            self.store.revoke_project(project_id)
            event = "project_revoked"
        self.log(
            event,
            {
                "project_id": project_id,
                "digest": doc.digest(),
                "party": by.name,
                "role": by.role.value,
                "signature": signature.hex(),
            },
        )
        return self.project_view(project_id)

    def check_project(self, project_id: str, analyst: str, parties: Sequence[str]) -> None:
        """Refuse a query whose project is not approved by every department it uses."""
        if not project_id:
            if self.federation.require_projects:
                raise PolicyRefused("cite an approved project (Five Safes: safe projects)")
            return
        self.federation.check_accredited(analyst)
        raw, approvals, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        status = self._project_status(doc, approvals, revoked)
        if doc.analyst != analyst:
            raise NotAuthorised(f"project {project_id} belongs to analyst {doc.analyst!r}")
        if status in ("revoked", "expired"):
            raise PolicyRefused(f"project {project_id} is {status}")
        outside = [p for p in parties if p not in doc.parties]
        if outside:
            raise PolicyRefused(f"project {project_id} does not cover {outside}")
        missing = [p for p in parties if p not in approvals]
        if missing:
            raise PolicyRefused(f"project {project_id} awaits approval by {missing}")

    # -- queries ---------------------------------------------------------------------
    def _origin_key(self, party: str) -> paillier.PublicKey:
        raw = self.store.identities().get(party)
        if raw is None:
            raise InvalidRequest(f"no identity registered for {party}; run the ceremony first")
        ident = common_pb2.PartyIdentity.FromString(raw)
        return paillier.PublicKey.from_bytes(ident.paillier_n)

    def current_period(self) -> str:
        return period_of(dt.datetime.now(dt.UTC).date(), self.federation.privacy.period)

    def budgets_spent(self, period: str | None = None) -> dict[str, float]:
        """Epsilon charged to each party in ``period`` (default: the current one).

        Mirrors each node's own ledger: every query announced to the party
        counts unless its origin abandoned it or it was refused before any
        node took part. Composed by OpenDP's accountant
        (headcount.privacy.accountant). One read of the store for every party."""
        period = period or self.current_period()
        kind = self.federation.privacy.period
        charges: dict[str, list[float]] = {p: [] for p in self.parties}
        for spec, day in self.store.charged_specs_with_dates():
            if period_of(day, kind) == period:
                for party in spec["parties"]:
                    charges.setdefault(party, []).append(float(spec["epsilon"]))
        return {party: compose(eps) for party, eps in charges.items()}

    def budget_spent(self, party: str, period: str | None = None) -> float:
        """Epsilon charged to ``party`` in ``period`` (default: the current one)."""
        return self.budgets_spent(period).get(party, 0.0)

    def _left(self, spent: float) -> float:
        return max(0.0, self.federation.privacy.epsilon_per_period - spent)

    def budgets_remaining(self, period: str | None = None) -> dict[str, float]:
        """Epsilon each party has left in ``period`` (default: the current one)."""
        return {p: self._left(spent) for p, spent in self.budgets_spent(period).items()}

    def budget_remaining(self, party: str, period: str | None = None) -> float:
        """Epsilon ``party`` has left in ``period`` (default: the current one)."""
        return self._left(self.budget_spent(party, period))

    def _refuse(self, query_id: str, analyst: str, purpose: str, reason: str, **extra: Any) -> None:
        """Record a refusal in the audit log: every refusal is public, and each
        depends only on the query, the catalogue, projects and the ledgers."""
        self.log(
            "refusal",
            {"query_id": query_id, "analyst": analyst, "purpose": purpose, "reason": reason}
            | extra,
        )

    def _admit(
        self, spec: QuerySpec, analyst: str
    ) -> tuple[Plan, str, float, dict[str, Any], NoisePlan, Packing]:
        """Everything decided before a query is announced: nothing is charged yet."""
        plan = plan_query(spec, self.parties)
        parties = plan.parties
        self._check_catalogue(plan)
        self.check_project(spec.project_id, analyst, parties)
        epoch_id = self.store.latest_epoch()
        epsilon = spec.epsilon or self.federation.privacy.default_query_epsilon
        budget = self.federation.privacy.epsilon_per_period
        spent_by = self.budgets_spent()
        for party in parties:
            spent = spent_by.get(party, 0.0)
            if compose([spent, epsilon]) > budget + 1e-9:
                raise BudgetExhausted(
                    f"{party}'s privacy budget for {self.current_period()} has "
                    f"{max(0.0, budget - spent):.3g} left; the query needs {epsilon:.3g}"
                )
        spec_json = {**spec_to_json(spec), "epsilon": epsilon, "parties": parties}
        noise = plan_noise(parties, spec_json, household_cap=self.federation.privacy.household_cap)
        packing = self._packing(epoch_id, plan, epsilon, noise)
        # Every node in the chain must answer before anything is announced or
        # charged, so a node that is down costs nobody any budget.
        down = [p for p in parties if not self.nodes.healthy(p)]
        if down:
            raise PeerUnavailable(
                f"{', '.join(down)}: not reachable; the query was not started "
                "and no budget was charged"
            )
        return plan, epoch_id, epsilon, spec_json, noise, packing

    def _check_catalogue(self, plan: Plan) -> None:
        """Refuse, before anything is stored or published, a filter, group-by or
        measure that a department's policy does not approve or whose values are
        not its categories: names, dates, postcodes or free text never enter
        the store or the audit log. Each node checks again for itself."""
        for hop in plan.hops:
            party = self.federation.party(hop.party)
            approved, dept = party.approved_attributes, party.department
            check_predicates(hop.party, approved, hop.filters, department=dept)
            if hop.group_by:
                check_group_by(hop.party, approved, hop.group_by, department=dept)
        origin = self.federation.party(plan.origin)
        if plan.origin_group_by:
            check_group_by(
                plan.origin,
                origin.approved_attributes,
                plan.origin_group_by,
                department=origin.department,
            )
        if plan.measure_attribute:
            check_measure(
                plan.origin,
                origin.approved_measures,
                plan.measure_attribute,
                department=origin.department,
            )

    def _abandon(self, query_id: str, origin: str) -> Abandonment | None:
        """Ask the origin of a failed query to abandon it; None if it cannot (it
        is down, or it decrypted), in which case every charge stands."""
        try:
            reply = self.nodes.call(
                origin,
                lambda s: s.AbandonQuery(
                    party_node_pb2.AbandonRequest(query_id=query_id),
                    timeout=self.nodes.timeout_s,
                ),
            )
            abandonment = Abandonment(
                reply.query_id, reply.party, reply.signature, reply.certificate_pem
            )
            if abandonment.query_id != query_id:
                raise InvalidProof(f"{origin} abandoned another query")
            verify_abandonment(abandonment, origin, ca_cert=self.federation.ca_cert)
        except HeadcountError as exc:
            log.warning(
                "query %s: %s did not abandon it (%s); charges stand", query_id, origin, exc
            )
            return None
        return abandonment

    def run_query(self, spec: QuerySpec, analyst: str) -> QueryOutcome:
        try:
            plan, epoch_id, epsilon, spec_json, noise, packing = self._admit(spec, analyst)
        except (PolicyRefused, BudgetExhausted, NotAuthorised, PeerUnavailable) as exc:
            self._refuse(uuid.uuid4().hex, analyst, spec.purpose, str(exc))
            raise
        parties = plan.parties
        query_id = uuid.uuid4().hex
        self.store.save_query(query_id, epoch_id, analyst, spec.purpose, spec_json)
        try:
            self.log(
                "query",
                {
                    "query_id": query_id,
                    "epoch_id": epoch_id,
                    "project_id": spec.project_id,
                    "analyst": analyst,
                    "role": "analyst",
                    "purpose": spec.purpose,
                    "parties": parties,
                    "epsilon": epsilon,
                    "spec": spec_json,
                    # Re-derived by every node before it takes part.
                    "noise": noise.to_json(),
                    "packing": packing.to_json(),
                },
                required=parties,
            )
            outcome = self._execute(query_id, epoch_id, spec, plan, epsilon, packing, noise)
        except Exception as exc:
            # Nodes of the chain may have charged their ledgers. With the
            # origin's signed promise never to decrypt, every node refunds and
            # the query charged nothing anywhere; without it, every charge
            # stands (the origin may have decrypted) and so does the mirror.
            abandonment = self._abandon(query_id, plan.origin)
            self.store.finish_query(query_id, "refused" if abandonment else "failed", None)
            reason = str(exc) if isinstance(exc, HeadcountError) else "internal error"
            extra = {"abandonment": abandonment.to_json()} if abandonment else {}
            self._refuse(query_id, analyst, spec.purpose, reason, **extra)
            raise
        release = release_json(outcome.title, outcome.table)
        self.store.finish_query(query_id, "released", release)
        left_by = self.budgets_remaining()
        left = {p: left_by[p] for p in parties}
        self.log(
            "release",
            {
                "query_id": query_id,
                "epoch_id": epoch_id,
                "analyst": analyst,
                "purpose": spec.purpose,
                "parties": parties,
                "epsilon": epsilon,
                "period": self.current_period(),
                "budget_remaining": left,
                "table": release,
            },
        )
        remaining = min(left.values())
        return QueryOutcome(query_id, epoch_id, outcome.title, outcome.table, remaining)

    def _packing(self, epoch_id: str, plan: Plan, epsilon: float, noise: NoisePlan) -> Packing:
        # No aggregate can add more per-record plaintexts than the epoch has
        # records, so that bound keeps packed slots from carrying.
        return make_packing(
            self.federation.party(plan.hops[0].party).department,
            plan.origin_group_by,
            plan.measure_attribute,
            n_bits=self._origin_key(plan.hops[0].party).n.bit_length(),
            max_summands=sum(self.store.epoch(epoch_id).records.values()),
            epsilon=epsilon,
            sensitivity=noise.sensitivity,
            shareholders=len(noise.shareholders),
        )

    def _hop_requests(
        self,
        header: party_node_pb2.HopHeader,
        key: paillier.PublicKey,
        tokens: Sequence[bytes],
        aligned: Sequence[int],
    ) -> Iterator[party_node_pb2.HopInput]:
        yield party_node_pb2.HopInput(header=header)
        starts = list(range(0, len(tokens), CHUNK_RECORDS)) or [0]
        for seq, start in enumerate(starts):
            yield party_node_pb2.HopInput(
                chunk=party_node_pb2.CiphertextChunk(
                    seq=seq,
                    tokens=tokens[start : start + CHUNK_RECORDS],
                    ciphertexts=[
                        paillier.to_bytes(key, c) for c in aligned[start : start + CHUNK_RECORDS]
                    ],
                    last=seq == len(starts) - 1,
                )
            )

    def _align(
        self,
        epoch_id: str,
        key: paillier.PublicKey,
        prev_party: str,
        current: dict[bytes, int],
        hop: Hop,
        next_tokens: Sequence[bytes],
    ) -> list[int]:
        """Ciphertexts for each of the next node's tokens, in its token order.

        Linked positions carry the previous hop's ciphertext (for a household
        link: the sum over the resolved household, of one raw key's records),
        re-randomised; every other position a fresh E(0), so the next node
        cannot tell which of its records are linked.
        """
        source: dict[bytes, int] = {}
        if hop.link == "person":
            link = self.store.linked(epoch_id, prev_party, hop.party)
            source = {t: current[link[t]] for t in next_tokens if t in link}
        else:
            # Households as resolved through person links; each sums the
            # records of one raw key, so a sum is still a 0/1 flag
            # (headcount.linkage.households.household_groups).
            prev_raw = self.store.households(epoch_id, prev_party)
            prev_resolved = self.store.resolved_households(epoch_id, prev_party, prev_raw)
            # A person's further records (dedup) are not counted again.
            again = self.store.duplicates(epoch_id, prev_party)
            prev_tokens = [t for t in current if t in prev_raw and t not in again]
            groups = household_groups(
                [prev_raw[t] for t in prev_tokens],
                [prev_resolved.get(t, b"") for t in prev_tokens],
            )
            sums = {
                hh: paillier.add_all(key, [current[prev_tokens[i]] for i in rows])
                for hh, rows in groups.items()
            }
            next_hh = self.store.resolved_households(epoch_id, hop.party)
            # At most household_cap of the next party's records per household
            # carry its flag (the first in token order, which is random), so
            # one flagged adult moves a count by at most the cap the query's
            # sensitivity is charged for (headcount.privacy.sensitivity).
            cap = self.federation.privacy.household_cap
            taken: dict[bytes, int] = {}
            for t in next_tokens:
                hh = next_hh.get(t)
                if hh in sums and taken.get(hh, 0) < cap:
                    taken[hh] = taken.get(hh, 0) + 1
                    source[t] = sums[hh]
        positions = [i for i, t in enumerate(next_tokens) if t in source]
        encryptor = paillier.shared_encryptor(key)
        workers = bulk_workers(len(next_tokens))
        aligned = encryptor.encrypt_zeros(len(next_tokens) - len(positions), workers=workers)
        fresh = encryptor.rerandomise([source[next_tokens[i]] for i in positions], workers=workers)
        out: list[int] = [0] * len(next_tokens)
        zeros = iter(aligned)
        linked = dict(zip(positions, fresh, strict=True))
        for i in range(len(next_tokens)):
            out[i] = linked[i] if i in linked else next(zeros)
        return out

    def _header(
        self,
        query_id: str,
        epoch_id: str,
        spec: QuerySpec,
        epsilon: float,
        key: paillier.PublicKey,
        hop: Hop,
        records: int,
    ) -> party_node_pb2.HopHeader:
        return party_node_pb2.HopHeader(
            query_id=query_id,
            epoch_id=epoch_id,
            paillier_n=key.to_bytes(),
            group_by=hop.group_by,
            filters=cv.predicates_to_pb(hop.filters),
            epsilon=epsilon,
            expected_records=records,
            purpose=spec.purpose,
        )

    def _execute(
        self,
        query_id: str,
        epoch_id: str,
        spec: QuerySpec,
        plan: Plan,
        epsilon: float,
        packing: Packing,
        noise: NoisePlan,
    ) -> QueryOutcome:
        origin = plan.hops[0]
        key = self._origin_key(origin.party)
        origin_tokens = self.store.tokens(epoch_id, origin.party)

        # Hop 1: the origin encrypts an indicator for every record it holds.
        chunks = self.nodes.call(
            origin.party,
            lambda s: list(
                s.EncryptIndicators(
                    party_node_pb2.EncryptRequest(
                        query_id=query_id,
                        epoch_id=epoch_id,
                        filters=cv.predicates_to_pb(origin.filters),
                        epsilon=epsilon,
                        chunk_records=CHUNK_RECORDS,
                        purpose=spec.purpose,
                        per_household=origin.per_household,
                        group_by=packing.group_by,
                        measure_attribute=packing.measure_attribute,
                        layout=cv.packing_to_pb(packing),
                    ),
                    timeout=self.nodes.timeout_s,
                )
            ),
        )
        current: dict[bytes, int] = {}
        for seq, chunk in enumerate(chunks):
            if chunk.seq != seq or len(chunk.tokens) != len(chunk.ciphertexts):
                raise InvalidRequest(f"{origin.party}: malformed ciphertext chunk {chunk.seq}")
            for tok, ct in zip(chunk.tokens, chunk.ciphertexts, strict=True):
                current[tok] = paillier.from_bytes(key, ct)
        if not chunks or not chunks[-1].last or set(current) != set(origin_tokens):
            raise InvalidRequest(
                f"{origin.party}: ciphertexts do not cover exactly its epoch records"
            )

        # Filter hops: align, let the node keep or zero each ciphertext.
        prev = origin.party
        for hop in plan.hops[1:-1]:
            tokens = self.store.tokens(epoch_id, hop.party)
            aligned = self._align(epoch_id, key, prev, current, hop, tokens)
            header = self._header(query_id, epoch_id, spec, epsilon, key, hop, len(tokens))
            requests = self._hop_requests(header, key, tokens, aligned)

            def apply(
                stub: party_node_pb2_grpc.PartyNodeStub,
                requests: Iterator[party_node_pb2.HopInput] = requests,
            ) -> list[party_node_pb2.CiphertextChunk]:
                return list(stub.ApplyPredicate(requests, timeout=self.nodes.timeout_s))

            replies = self.nodes.call(hop.party, apply)
            received = [c for r in replies for c in r.ciphertexts]
            if len(received) != len(tokens) or not replies or not replies[-1].last:
                raise InvalidRequest(f"{hop.party}: returned {len(received)} of {len(tokens)}")
            current = {
                t: paillier.from_bytes(key, c) for t, c in zip(tokens, received, strict=True)
            }
            prev = hop.party

        # Final hop: the grouping node sums per category.
        last = plan.hops[-1]
        group_tokens = self.store.tokens(epoch_id, last.party)
        aligned = self._align(epoch_id, key, prev, current, last, group_tokens)
        header = self._header(query_id, epoch_id, spec, epsilon, key, last, len(group_tokens))
        grouped = self.nodes.call(
            last.party,
            lambda s: s.AggregateByGroup(
                self._hop_requests(header, key, group_tokens, aligned),
                timeout=self.nodes.timeout_s,
            ),
        )
        sums = [(g.group, paillier.from_bytes(key, g.ciphertext)) for g in grouped.groups]
        if not sums or len({g for g, _ in sums}) != len(sums):
            raise InvalidRequest(f"{last.party}: malformed grouped aggregate")
        if plan.unlinked_cell:
            # Records of the previous hop with no link into the grouping
            # department form their own cell, so the table adds up.
            # Records of the previous hop with no link, each person once: a
            # person's further records (dedup) are left out.
            skip = set(self.store.linked(epoch_id, prev, last.party).values())
            skip.update(self.store.duplicates(epoch_id, prev))
            unlinked = paillier.add_all(key, (c for t, c in current.items() if t not in skip))
            sums.append((unlinked_group(last.party), unlinked))

        # Noise is added under encryption, slot by slot, in shares: this
        # coordinator's, then each share-holding node's, which signs what it
        # did. The origin checks the signatures before it decrypts, so its
        # noisy aggregates carry noise that no single party knows.
        holders = len(noise.shareholders)
        shares = [draw_share(s.scale, holders, len(sums)) for s in packing.noise_specs()]
        groups = [
            (g, paillier.to_bytes(key, paillier.add_plain(key, c, packing.pack_share(shares, i))))
            for i, (g, c) in enumerate(sums)
        ]
        attestations: list[NoiseAttestation] = []
        for holder in noise.nodes:
            request = party_node_pb2.NoiseRequest(
                query_id=query_id,
                paillier_n=key.to_bytes(),
                groups=[common_pb2.GroupCiphertext(group=g, ciphertext=c) for g, c in groups],
            )

            def add_noise(
                stub: party_node_pb2_grpc.PartyNodeStub,
                request: party_node_pb2.NoiseRequest = request,
            ) -> party_node_pb2.NoisedAggregate:
                return stub.AddNoise(request, timeout=self.nodes.timeout_s)

            reply = self.nodes.call(holder, add_noise)
            returned = [(g.group, g.ciphertext) for g in reply.groups]
            if [g for g, _ in returned] != [g for g, _ in groups]:
                raise InvalidRequest(f"{holder}: noised other groups than it was sent")
            groups = returned
            attestations.append(cv.attestation_from_pb(reply.attestation))

        # Final step: the origin decrypts the noisy aggregates and applies SDC.
        table = self.nodes.call(
            origin.party,
            lambda s: s.DecryptAggregate(
                party_node_pb2.DecryptRequest(
                    query_id=query_id,
                    groups=[common_pb2.GroupCiphertext(group=g, ciphertext=c) for g, c in groups],
                    attestations=[cv.attestation_to_pb(a) for a in attestations],
                ),
                timeout=self.nodes.timeout_s,
            ),
        )
        if table.query_id != query_id:
            raise InvalidRequest(f"{origin.party}: released a table for another query")
        title = spec.title or f"{spec.population_party} records by {last.party}.{last.group_by}"
        return QueryOutcome(query_id, epoch_id, title, table, 0.0)

    def status(self) -> coordinator_pb2.FederationStatus:
        try:
            epoch_id = self.store.latest_epoch()
            records = self.store.epoch(epoch_id).records
        except HeadcountError:
            epoch_id, records = "", {}
        try:
            ceremony_id = self.store.latest_ceremony()
        except HeadcountError:
            ceremony_id = ""
        spent_by = self.budgets_spent()
        return coordinator_pb2.FederationStatus(
            federation=self.federation.name,
            ceremony_id=ceremony_id,
            epoch_id=epoch_id,
            parties=[
                coordinator_pb2.PartyStatus(
                    party=p,
                    healthy=self.nodes.healthy(p),
                    records=records.get(p, 0),
                    epsilon_spent=spent_by.get(p, 0.0),
                    epsilon_left=self._left(spent_by.get(p, 0.0)),
                )
                for p in self.parties
            ],
            queries=self.store.query_count(),
            audit_head=self.audit.head(),
            period=self.current_period(),
            epsilon_per_period=self.federation.privacy.epsilon_per_period,
        )

    def close(self) -> None:
        for enc in self._pooled:
            enc.stop_pool()
        self.nodes.close()

    def pools(self) -> list[paillier.RandomiserPool]:
        """The randomiser pools this coordinator keeps (for benchmarks and status)."""
        return [enc.pool for enc in self._pooled if enc.pool is not None]

    def _warm_pools(self, records: Mapping[str, int]) -> None:
        """Keep randomisers ready for the next queries' alignments.

        Each alignment draws one randomiser per record of the hop it feeds
        (fresh E(0) or re-randomisation, under the origin's key, which may be
        any party's), so each party key's pool is sized to twice the largest
        department (two alignments in a three-hop chain), capped at
        ``paillier.pool_limit``. Filling happens in a low-priority child
        process; a query that comes first computes any shortfall online.
        """
        need = 2 * max(records.values(), default=0)
        for party in self.parties:
            try:
                key = self._origin_key(party)
            except InvalidRequest:
                continue
            enc = paillier.shared_encryptor(key)
            enc.start_pool(min(need, paillier.pool_limit(key)))
            if enc not in self._pooled:
                self._pooled.append(enc)


def _records_of(
    members: np.ndarray, parties: Sequence[str], people: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Clusters over each party's people (first records) as clusters over its records."""
    out = members.copy()
    for k, party in enumerate(parties):
        if party in people:
            linked = out[:, k] >= 0
            out[linked, k] = people[party][out[linked, k]]
    return out


def release_json(title: str, table: common_pb2.ProtectedTable) -> dict[str, Any]:
    """A released table as the audit log and the store keep it."""

    def interval(c: common_pb2.ProtectedCell) -> list[int] | None:
        return [c.interval_low, c.interval_high] if c.has_interval else None

    return {
        "title": title,
        "cells": [
            {
                "group": c.group,
                "column": c.column,
                "value": c.value if c.status == "released" else None,
                "status": c.status,
                "mean": c.mean if c.has_mean else None,
                "sum": c.sum if c.has_sum else None,
                "interval": interval(c),
                "mean_interval": [c.mean_low, c.mean_high] if c.has_mean_interval else None,
            }
            for c in table.cells
        ],
        "column_attribute": table.column_attribute,
        "measure_attribute": table.measure_attribute,
        "total": None if table.total_suppressed else table.total,
        "total_interval": None if table.total_suppressed else [table.total_low, table.total_high],
        "epsilon": table.epsilon,
        "noise_scale": table.noise_scale,
        "shareholders": table.shareholders,
        "sensitivity": table.sensitivity,
        "interval_coverage": table.interval_coverage,
    }
