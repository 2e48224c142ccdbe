"""A linkage epoch at the coordinator: pull every node's encodings, link them,
and keep what it may not publish (every linkage statistic) in its own store."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping, Sequence

import numpy as np

from coordinator.audit_sync import AuditSync
from coordinator.nodes import CHUNK_RECORDS, NodeClients, each
from coordinator.store import CoordinatorStore, EpochInfo, PairKey, PairQuality, PartyEncodings
from headcount.config import FederationConfig
from headcount.domain.events import EpochAborted, EpochLinked, EpochStarted
from headcount.domain.status import LinkageSummary, PairLinks
from headcount.errors import InvalidRequest, PeerUnavailable
from headcount.linkage.address import HOUSEHOLD_KEY_BYTES
from headcount.linkage.dedup import dedup_records, duplicate_tokens, first_records
from headcount.linkage.engine import LinkResult, link_parties
from headcount.linkage.executor import executor_from_spec
from headcount.linkage.households import resolve_households
from headcount.linkage.keylinks import key_digests, wire_digests
from headcount.linkage.schema import LinkageSchema
from headcount.linkage.scores import score_histograms
from headcount.wire.node_values import EncodingChunk

log = logging.getLogger(__name__)

TOKEN_BYTES = 16
MATCH_KEY_BYTES = 16
# An upload cut short is resumed this many times in all, backing off from
# UPLOAD_BACKOFF_S and doubling, before the epoch fails.
UPLOAD_ATTEMPTS = 5
UPLOAD_BACKOFF_S = 0.5


class _Upload:
    """One party's encoding stream for an epoch, checked chunk by chunk as it arrives."""

    def __init__(self, party: str, epoch_id: str, width: int, levels: int) -> None:
        self.party, self.epoch_id, self.width, self.levels = party, epoch_id, width, levels
        self.chunks: list[EncodingChunk] = []
        self.total = -1
        self.fingerprint = ""

    def add(self, chunk: EncodingChunk) -> None:
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


class EpochLinker:
    """Runs linkage epochs."""

    def __init__(
        self,
        federation: FederationConfig,
        schema: LinkageSchema,
        store: CoordinatorStore,
        nodes: NodeClients,
        audit: AuditSync,
    ) -> None:
        self.federation, self.schema, self.store = federation, schema, store
        self.nodes, self.audit = nodes, audit
        self.parties: tuple[str, ...] = federation.party_names

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
            chunks = self.nodes.node(party).encode(
                epoch_id,
                ceremony_id,
                chunk_records=CHUNK_RECORDS,
                resume_from_seq=len(upload.chunks),
            )
            try:
                for chunk in chunks:
                    upload.add(chunk)
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
        floor = self.schema.candidate_floor
        if not floor < threshold <= 1:
            # Below the candidate floor every candidate would link.
            raise InvalidRequest(
                f"threshold must be above the schema's candidate floor {floor:g} and at most 1"
            )
        ceremony_id = self.store.latest_ceremony()
        epoch_id = uuid.uuid4().hex
        started = time.monotonic()
        try:
            self.audit.log(
                EpochStarted(epoch_id, ceremony_id, tuple(self.parties)), required=self.parties
            )
            return self._link_epoch(epoch_id, ceremony_id, threshold, explicit_threshold, started)
        except Exception as exc:
            self.audit.log(EpochAborted(epoch_id, str(exc)[:500]))
            raise

    def _link_epoch(
        self,
        epoch_id: str,
        ceremony_id: str,
        threshold: float,
        explicit_threshold: bool,
        started: float,
    ) -> EpochInfo:
        fetched = each(self.parties, lambda p: self._fetch_encodings(p, epoch_id, ceremony_id))
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
                        support_specs=self.schema.support_keys(),
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
        quality = {pair: _pair_quality(result, pair) for pair in result.links}
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
        self.audit.log(
            EpochLinked(
                epoch_id,
                ceremony_id,
                records=info.records,
                commitments={p: e.commitment.hex() for p, e in encodings.items()},
                schema_fingerprint=info.schema_fingerprint,
                # The configured threshold only: every linkage statistic (links,
                # clusters, quality estimates, per-pair thresholds) depends on
                # the data and stays in this coordinator's store (docs/privacy.md).
                threshold=threshold,
            )
        )
        log.info(
            "epoch %s: %d clusters in %.1f s", epoch_id, len(clusters), time.monotonic() - started
        )
        return info


def _pair_quality(result: LinkResult, pair: PairKey) -> PairQuality:
    """What the store keeps of a pair's linkage: estimates rounded to 4 decimals."""
    q = result.quality.get(pair)
    return PairQuality(
        threshold=result.thresholds[pair],
        key_links=result.key_links.get(pair, 0),
        links=result.links[pair],
        est_precision=round(q.est_precision, 4) if q is not None else None,
        est_recall=round(q.est_recall, 4) if q is not None else None,
        est_f1=round(q.est_f1, 4) if q is not None else None,
        estimate_basis=q.basis if q is not None else None,
    )


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


def linkage_summary(info: EpochInfo) -> LinkageSummary:
    """An epoch as the operator sees it: links and quality per pair, in pair order."""

    def pair(a: str, b: str, links: int) -> PairLinks:
        q = info.quality.get((a, b))
        if q is None:
            return PairLinks(a, b, links, threshold=0.0, key_links=0)
        return PairLinks(
            a, b, links, q.threshold, q.key_links, q.est_precision, q.est_recall, q.estimate_basis
        )

    return LinkageSummary(
        epoch_id=info.epoch_id,
        records=info.records,
        pairs=tuple(pair(a, b, n) for (a, b), n in sorted(info.pair_links.items())),
        clusters=info.clusters,
        threshold=info.threshold,
        schema_fingerprint=info.schema_fingerprint,
    )
