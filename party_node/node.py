"""What a party node does, as plain functions over its data, keys and state.

The servicer (``service.py``) only unpacks messages, calls these and packs the
results. Rules enforced here, whoever calls:

* a node only ever encrypts under its own Paillier key and refuses per-record
  ciphertexts under its own key (it would be able to read them);
* every record of an epoch gets a fresh random token, sent in shuffled order;
* per-record values leave only as ciphertexts; group sums are re-randomised so
  the coordinator cannot match them against the ciphertexts it sent;
* a query's aggregate is decrypted once, only by the node that encrypted for
  it, and only after the small-number rule is applied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import phe
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from headcount.audit import GENESIS_HASH, AuditEvent, AuditLog, verify_chain
from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import ceremony, paillier
from headcount.crypto.attest import (
    Abandonment,
    NoiseAttestation,
    digest_groups,
    sign_abandonment,
    sign_noise,
    verify_abandonment,
    verify_noise_chain,
)
from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidProof,
    InvalidRequest,
    PolicyRefused,
)
from headcount.linkage.address import household_keys
from headcount.linkage.clk import encode_clks
from headcount.linkage.matchkeys import match_keys
from headcount.linkage.normalise import Identity as Person
from headcount.linkage.schema import federation_schema
from headcount.measures import (
    ALL_GROUP,
    Packing,
    PackingRequest,
    ReleasedCell,
    decoded_cells,
    make_packing,
    protect_release,
    with_intervals,
)
from headcount.privacy.accountant import PeriodLedger
from headcount.privacy.noise import draw_share
from headcount.privacy.sensitivity import NoisePlan, plan_noise
from headcount.projects import ProjectDoc, verify_decision
from headcount.protect.sdc import SdcPolicy
from headcount.query import Predicate, check_group_by, check_measure, check_predicates
from headcount.tls import load_private_key
from party_node.data import (
    DepartmentData,
    department_options,
    file_digest,
    load_department_file,
)
from party_node.store import Epoch, NodeStore

log = logging.getLogger(__name__)

TOKEN_BYTES = 16
MATCH_KEY_BYTES = 16
MAX_GROUPS = 256


@dataclass(frozen=True, slots=True)
class EncodedEpoch:
    epoch: Epoch
    tokens: tuple[bytes, ...]  # in the (shuffled) order they are sent
    clks: np.ndarray  # uint8 (records, filter_bytes), same order
    households: tuple[bytes, ...]  # keyed household keys (b"" if unknown), same order
    match_keys: bytes  # per record, levels x 16-byte keyed match-keys (zeros: none)
    match_key_levels: int


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


class PartyNode:
    """One department's node: its keys, its file and its state."""

    def __init__(self, federation: FederationConfig, party: str) -> None:
        self.federation = federation
        self.config: PartyConfig = federation.party(party)
        self.name = party
        self.store = NodeStore(self.config.database)
        # One ledger for this department's data over the period (a calendar
        # year by default): epochs come and go, the ledger does not reset.
        self.ledger = PeriodLedger(
            self.config.database,
            epsilon_per_period=federation.privacy.epsilon_per_period,
            period=federation.privacy.period,
        )
        # This node's replica of the coordinator's signed audit log.
        self.audit = AuditLog(self.config.database, verifier=federation.audit_verifier)
        # (next seq, head) of the replica as last verified whole (_verify_replica).
        self._verified: tuple[int, str] = (0, GENESIS_HASH)
        self._verified_lock = threading.Lock()
        self._x25519 = self._load_or_create_x25519()
        self._paillier_pub, self._paillier_priv = self._load_or_create_paillier()
        # The owner encrypts with CRT over p and q: its own per-record
        # encryptions are the most numerous, and CRT makes them ~30% cheaper.
        self._encryptor = paillier.Encryptor.for_private_key(self._paillier_priv)
        # Randomiser pools (see _warm_pools): the other parties' keys, from the
        # latest key ceremony, and one public-key encryptor per origin key.
        self._pool_lock = threading.Lock()
        self._peer_keys: tuple[paillier.PublicKey, ...] = ()
        self._peer_encryptors: dict[int, paillier.Encryptor] = {}
        self.schema = federation_schema(federation.linkage_schema)
        if self.schema.decoy_share:
            raise ConfigError(
                "the linkage schema asks for decoy records, which the federation protocol "
                "does not carry yet; set decoy_share = 0"
            )
        self._data_lock = threading.Lock()
        self._data: DepartmentData | None = None
        self._identity = ceremony.sign_identity(
            party,
            self._x25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            self._paillier_pub.to_bytes(),
            self.config.tls.cert.read_bytes(),
            load_private_key(self.config.tls.key),
        )
        # After a restart: own key now, the others' after the next ceremony.
        epochs = self.store.epochs()
        if epochs:
            self._warm_pools(epochs[-1].records)

    # -- keys -------------------------------------------------------------------
    def _load_or_create_x25519(self) -> x25519.X25519PrivateKey:
        raw = self.store.get_secret("x25519")
        if raw is None:
            key = x25519.X25519PrivateKey.generate()
            raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self.store.put_secret("x25519", raw)
        return x25519.X25519PrivateKey.from_private_bytes(raw)

    def _load_or_create_paillier(self) -> tuple[paillier.PublicKey, phe.PaillierPrivateKey]:
        raw = self.store.get_secret("paillier")
        if raw is None:
            log.info(
                "%s: generating a %d-bit Paillier key pair",
                self.name,
                self.federation.paillier_bits,
            )
            _, priv = paillier.generate_keypair(self.federation.paillier_bits)
            raw = paillier.private_key_bytes(priv)
            self.store.put_secret("paillier", raw)
        priv = paillier.private_key_from_bytes(raw)
        return paillier.PublicKey(priv.public_key.n), priv

    def identity(self) -> Identity:
        return self._identity

    # -- audit replica -------------------------------------------------------------
    def sync_audit(self, events: Sequence[AuditEvent]) -> tuple[int, str]:
        """Append events after this replica's head; returns (next seq, head hash).

        A query the log records as refused or aborted is abandoned here if this
        node encrypted for it and has not decrypted it: it will never decrypt
        it. A refusal carrying the origin's signed abandonment refunds this
        node's charge for it (``_refund_abandoned``); without one, every node
        keeps its charge, since none can know the origin did not decrypt.
        """
        for event in events:
            self.audit.import_event(event)
        # Abandoning is idempotent, so events resent in a batch are harmless.
        for event in events:
            if event.kind in ("refusal", "query_aborted") and "query_id" in event.body:
                self._abandon(str(event.body["query_id"]))
            if event.kind == "refusal" and "abandonment" in event.body:
                self._refund_abandoned(str(event.body.get("query_id", "")), event.body)
        return self.audit.next_head()

    def _abandon(self, query_id: str) -> None:
        # The log records the query's failure: never decrypt it. The charge
        # stays: only a signed abandonment (abandon_query), which every node of
        # the chain sees, refunds, so every ledger and the coordinator's mirror
        # agree on what was charged.
        if self.store.abandon_origin_query(query_id) is not None:
            log.info("%s: query %s failed before decryption; abandoned", self.name, query_id)

    def _refund_abandoned(self, query_id: str, body: Mapping[str, Any]) -> None:
        """Refund this node's charge for a query its origin signed it will never decrypt.

        Only the origin's own signature counts: a coordinator alone cannot make
        nodes refund a query whose result it may hold.
        """
        if not self.ledger.charged(query_id):
            return
        origin = ""
        for event in self.audit.find("query", "$.query_id", query_id)[:1]:
            parties = event.body.get("parties") or [""]
            origin = str(parties[0])
        if not origin:
            return
        try:
            verify_abandonment(
                Abandonment.from_json(query_id, body["abandonment"]),
                origin,
                ca_cert=self.federation.ca_cert,
            )
        except InvalidProof as exc:
            log.warning("%s: abandonment of %s not accepted: %s", self.name, query_id, exc)
            return
        refunded = self.ledger.refund(query_id)
        log.info("%s: query %s abandoned by its origin; %g refunded", self.name, query_id, refunded)

    def abandon_query(self, query_id: str) -> Abandonment:
        """As the origin of a failed query: never decrypt it, refund, sign the promise.

        Raises PolicyRefused if this node is not the announced query's origin,
        FailedPrecondition if it already decrypted it.
        """
        _check_id("query_id", query_id)
        body = self._announced("query", "query_id", query_id)
        parties = body.get("parties") or [""]
        if parties[0] != self.name:
            raise PolicyRefused(f"{self.name} is not the origin of query {query_id}")
        self.store.abandon(query_id, str(body.get("epoch_id", "")))
        refunded = self.ledger.refund(query_id)
        log.info("%s: query %s abandoned; %g refunded", self.name, query_id, refunded)
        return sign_abandonment(
            query_id,
            self.name,
            load_private_key(self.config.tls.key),
            self.config.tls.cert.read_bytes(),
        )

    def _announced(self, kind: str, key: str, value: str) -> Mapping[str, Any]:
        """The body of the signed ``kind`` event whose ``key`` is ``value``.

        The replica is verified first (chain and signatures): the events that
        arrived since the last check, from the head verified then, so the cost
        of a query step does not grow with the log's age. Raises
        FailedPrecondition when no such event exists: a node takes part only in
        work the public audit log already records.
        """
        self._verify_replica()
        for event in reversed(self.audit.find(kind, f"$.{key}", value)):
            if self.name not in event.body.get("parties", ()):
                raise PolicyRefused(f"{kind} {value} does not list {self.name} as a party")
            return event.body
        raise FailedPrecondition(
            f"{self.name} has no signed audit event announcing {kind} {value}; refusing"
        )

    def _verify_replica(self) -> None:
        """Verify the replica's events since the last verified head (InvalidProof)."""
        with self._verified_lock:
            fresh = self.audit.events(since=self._verified[0])
            head = verify_chain(fresh, self.federation.audit_verifier, start=self._verified)
            self._verified = (self._verified[0] + len(fresh), head)

    def _check_query_announced(
        self, query_id: str, epsilon: float, purpose: str
    ) -> Mapping[str, Any]:
        body = self._announced("query", "query_id", query_id)
        if abs(float(body.get("epsilon", -1)) - epsilon) > 1e-12 or body.get("purpose") != purpose:
            raise PolicyRefused(f"query {query_id} differs from what the audit log announced")
        self._check_project(str(body.get("project_id", "")))
        return body

    def _noise_plan(self, body: Mapping[str, Any]) -> NoisePlan:
        """The announced query's noise plan, refused unless it is the one this node derives.

        The sensitivity comes from the query's join and the federation's
        household cap, the share-holders from its chain: a coordinator cannot
        announce less noise or fewer share-holders than the query needs.
        """
        parties = body.get("parties")
        spec = body.get("spec")
        if not isinstance(parties, list) or not isinstance(spec, dict):
            raise PolicyRefused("the announced query names no chain")
        own = plan_noise(
            [str(p) for p in parties], spec, household_cap=self.federation.privacy.household_cap
        )
        if NoisePlan.from_json(body.get("noise")) != own:
            raise PolicyRefused("the announced noise is not what the query needs")
        return own

    def _announced_packing(self, body: Mapping[str, Any], plan: NoisePlan, n_bits: int) -> Packing:
        """The announced slot layout, re-derived here from public facts."""
        raw = body.get("packing")
        if not isinstance(raw, dict):
            raise PolicyRefused("the announced query carries no slot layout")
        try:
            asked = Packing.from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyRefused("the announced slot layout is malformed") from exc
        origin = str(body["parties"][0])
        own = make_packing(
            self.federation.party(origin).department,
            asked.group_by,
            asked.measure_attribute,
            n_bits=n_bits,
            max_summands=asked.layout.max_summands,
            epsilon=float(body["epsilon"]),
            sensitivity=plan.sensitivity,
            shareholders=len(plan.shareholders),
        )
        if own != asked:
            raise PolicyRefused("the announced slot layout is not the one the query needs")
        return own

    def _check_project(self, project_id: str) -> None:
        """Take part only in a project this node's own steward approved (Five Safes).

        The approval is checked in this node's replica of the signed log and
        its signature verified with this node's own certificate, so neither a
        coordinator nor another department can approve on its behalf.
        """
        if not project_id:
            if self.federation.require_projects:
                raise PolicyRefused("the query cites no approved project")
            return
        doc: ProjectDoc | None = None
        approved = revoked = False
        events = sorted(
            [
                *self.audit.find("project_proposed", "$.project.project_id", project_id),
                *self.audit.find("project_approved", "$.project_id", project_id),
                *self.audit.find("project_revoked", "$.project_id", project_id),
            ],
            key=lambda e: e.seq,
        )
        for event in events:
            body = event.body
            if event.kind == "project_proposed":
                doc = ProjectDoc.from_json(dict(body["project"]))
            elif event.kind == "project_revoked":
                revoked = True
            elif event.kind == "project_approved" and body.get("party") == self.name and doc:
                verify_decision(
                    doc,
                    "approve",
                    self.name,
                    bytes.fromhex(body["signature"]),
                    self.config.tls.cert.read_bytes(),
                )
                approved = True
        if doc is None or not approved:
            raise PolicyRefused(f"{self.name} has not approved project {project_id}")
        # Safe people, checked here too: the project's analyst must hold a
        # current accreditation in the federation's config.
        self.federation.check_accredited(doc.analyst)
        if revoked:
            raise PolicyRefused(f"project {project_id} is revoked")
        if doc.expires < dt.date.today():
            raise PolicyRefused(f"project {project_id} expired on {doc.expires}")

    # -- data -------------------------------------------------------------------
    def data(self, expect_sha256: bytes | None = None) -> DepartmentData:
        """The checked department file, cached while it is unchanged on disk."""
        with self._data_lock:
            digest = file_digest(self.config.data) if self.config.data.exists() else b""
            if self._data is None or self._data.sha256 != digest:
                self._data = load_department_file(
                    self.config.data,
                    self.config.department,
                    self.config.reference_date or self.federation.reference_date,
                    department_options(self.schema.input, blank_invalid=self.config.blank_invalid),
                )
                report = self._data.report
                if report is not None and report.blanked:
                    # Counts only: a value never goes into a log.
                    log.warning(
                        "%s: unreadable values blanked: %s",
                        self.name,
                        ", ".join(f"{n} in {c!r}" for c, n in report.blanked.items()),
                    )
            if expect_sha256 is not None and self._data.sha256 != expect_sha256:
                raise FailedPrecondition(
                    "the department file changed since this epoch was linked; "
                    "run a new linkage epoch"
                )
            return self._data

    # -- key ceremony -------------------------------------------------------------
    def _check_roster(self, identities: Sequence[Identity]) -> dict[str, Identity]:
        by_party = {i.party: i for i in identities}
        expected = set(self.federation.party_names)
        if set(by_party) != expected or len(by_party) != len(identities):
            raise InvalidRequest(
                f"ceremony roster {sorted(by_party)} is not "
                f"the federation's parties {sorted(expected)}"
            )
        for identity in identities:
            ceremony.verify_identity(identity, self.federation.ca_cert)
        if by_party[self.name] != self._identity:
            raise InvalidProof(f"the roster's identity for {self.name} is not this node's")
        return by_party

    def contribute(
        self, ceremony_id: str, identities: Sequence[Identity]
    ) -> tuple[Commitment, list[Envelope]]:
        _check_id("ceremony_id", ceremony_id)
        by_party = self._check_roster(identities)
        with self._pool_lock:
            self._peer_keys = tuple(
                paillier.PublicKey.from_bytes(i.paillier_n)
                for name, i in sorted(by_party.items())
                if name != self.name
            )
        contribution = ceremony.new_contribution()
        roster = json.dumps(
            [
                {
                    "party": i.party,
                    "x25519": i.x25519_public_key.hex(),
                }
                for i in sorted(identities, key=lambda i: i.party)
            ]
        )
        self.store.start_ceremony(ceremony_id, contribution, roster)
        envelopes = [
            ceremony.seal(self._x25519, self.name, peer, ceremony_id, contribution)
            for name, peer in sorted(by_party.items())
            if name != self.name
        ]
        return ceremony.commit(ceremony_id, self.name, contribution), envelopes

    def finish(
        self, ceremony_id: str, envelopes: Sequence[Envelope], commitments: Sequence[Commitment]
    ) -> bytes:
        """Open the envelopes, check commitments, derive and store the secret; return its tag."""
        contribution, roster_json, secret = self.store.ceremony(ceremony_id)
        if secret is not None:
            raise InvalidRequest(f"ceremony {ceremony_id} is already finished at {self.name}")
        roster = {r["party"]: bytes.fromhex(r["x25519"]) for r in json.loads(roster_json)}
        committed = {c.party: c.digest for c in commitments}
        if set(committed) != set(roster) or len(committed) != len(commitments):
            raise InvalidProof("commitments must come from exactly the ceremony's parties")
        if committed[self.name] != ceremony.commit(ceremony_id, self.name, contribution).digest:
            raise InvalidProof(f"the relayed commitment for {self.name} is not the one it made")
        contributions = {self.name: contribution}
        for env in envelopes:
            if (
                env.ceremony_id != ceremony_id
                or env.sender not in roster
                or env.sender == self.name
            ):
                raise InvalidProof(f"unexpected envelope from {env.sender!r}")
            if env.sender in contributions:
                raise InvalidProof(f"two envelopes from {env.sender}")
            sender = Identity(env.sender, roster[env.sender], b"", b"", b"")
            value = ceremony.open_envelope(self._x25519, self.name, sender, env)
            if ceremony.commit(ceremony_id, env.sender, value).digest != committed[env.sender]:
                raise InvalidProof(f"{env.sender}'s contribution does not match its commitment")
            contributions[env.sender] = value
        missing = set(roster) - set(contributions)
        if missing:
            raise InvalidProof(f"no envelope from {sorted(missing)}")
        secret = ceremony.derive_secret(ceremony_id, contributions)
        self.store.finish_ceremony(ceremony_id, secret)
        log.info("%s: ceremony %s finished with %d parties", self.name, ceremony_id, len(roster))
        return ceremony.confirmation_tag(secret, ceremony_id)

    # -- linkage epoch ------------------------------------------------------------
    def encode(self, epoch_id: str, ceremony_id: str) -> EncodedEpoch:
        """Check the file, issue fresh tokens, encode CLKs, and store the epoch atomically.

        Asking again for an epoch this node has already encoded (a coordinator
        resuming an upload cut short) returns exactly the same encodings: the
        tokens, their order and the seed of any random bit flips are stored
        with the epoch. Drawing fresh flips on every request would let whoever
        asks repeatedly average the flips away.
        """
        _check_id("epoch_id", epoch_id)
        self._announced("epoch_started", "epoch_id", epoch_id)
        _, _, secret = self.store.ceremony(ceremony_id)
        if secret is None:
            raise FailedPrecondition(f"ceremony {ceremony_id} has not finished at {self.name}")
        # Every encoding of this epoch is keyed by a key derived from the
        # secret and the epoch id: the coordinator cannot match a person's
        # encodings from one epoch with those from another.
        secret = ceremony.epoch_key(secret, epoch_id)
        if self.store.has_epoch(epoch_id):
            return self._reencode(epoch_id, ceremony_id, secret)
        data = self.data()
        # Shuffle so the order of tokens says nothing about the order of the file.
        order = [
            int(i) for i in np.random.default_rng(secrets.randbits(128)).permutation(data.records)
        ]
        tokens = tuple(os.urandom(TOKEN_BYTES) for _ in range(data.records))
        seed = os.urandom(32)
        self.store.put_secret(_flip_seed_name(epoch_id), seed)
        ordered = [data.identities[i] for i in order]
        clks, keys, levels = self._encodings(ordered, secret, seed)
        # A record without a postcode borrows one from its own file's records
        # at the same address in the same local authority (household_keys).
        places = (
            data.attributes["local_authority"].astype(str).tolist()
            if "local_authority" in data.attributes.columns
            else None
        )
        households = tuple(
            household_keys(
                [data.addresses[i] for i in order],
                [data.identities[i].postcode for i in order],
                secret,
                None if places is None else [places[i] for i in order],
            )
        )
        salt = os.urandom(32)
        # A salted commitment binds the epoch to this exact file without
        # letting anyone test a guess of its content.
        commitment = hmac.new(salt, self.config.data.read_bytes(), hashlib.sha256).digest()
        epoch = Epoch(
            epoch_id,
            ceremony_id,
            data.records,
            data.sha256,
            commitment,
            self.schema.fingerprint(),
        )
        self.store.save_epoch(epoch, salt, tokens, order, households)
        log.info("%s: epoch %s encoded %d records", self.name, epoch_id, data.records)
        self._warm_pools(data.records)
        return EncodedEpoch(epoch, tokens, clks, households, keys, levels)

    def _warm_pools(self, records: int) -> None:
        """Start keeping randomisers ready for a query over ``records`` records.

        As origin this node encrypts one value per record under its own key; as
        a filter hop it re-randomises or replaces one ciphertext per record
        under the origin's key, which may be any other party's. So each pool is
        sized to this node's record count, capped at ``paillier.pool_limit``
        (128 MiB of randomisers per key). Building the tables and filling the
        pools happens in background threads and a nice-19 child process
        (``paillier.RandomiserPool``); serving does not wait for it.
        """

        def warm() -> None:
            with self._pool_lock:
                peers = self._peer_keys
            for enc in (self._encryptor, *(self._peer_encryptor(k) for k in peers)):
                enc.start_pool(min(records, paillier.pool_limit(enc.public_key)))

        threading.Thread(target=warm, name=f"{self.name}-pool-warm", daemon=True).start()

    def close(self) -> None:
        """Stop keeping randomisers ready (the pools' threads and their memory)."""
        with self._pool_lock:
            encryptors = [self._encryptor, *self._peer_encryptors.values()]
        for enc in encryptors:
            enc.stop_pool()

    def _peer_encryptor(self, key: paillier.PublicKey) -> paillier.Encryptor:
        """This node's encryptor for another party's key, which may carry a pool.

        Only keys from the latest ceremony's roster get their own encryptor (and
        pool), so a hop header naming any other key cannot make the node hold
        more tables or pools; such keys use the process's shared encryptor.
        """
        with self._pool_lock:
            if key not in self._peer_keys:
                return paillier.shared_encryptor(key)
            enc = self._peer_encryptors.get(key.n)
            if enc is None:
                enc = paillier.Encryptor.for_public_key(key)
                self._peer_encryptors[key.n] = enc
            return enc

    def _encodings(
        self, ordered: Sequence[Person], secret: bytes, seed: bytes
    ) -> tuple[np.ndarray, bytes, int]:
        """CLKs and match-keys of ``ordered``, deterministic for a given seed."""
        rng = np.random.Generator(np.random.Philox(key=int.from_bytes(seed[:16], "big")))
        clks = encode_clks(ordered, secret, self.schema.clk, rng=rng)
        # With dedup, the supporting keys follow the match-keys (the
        # coordinator uses them within this department only).
        specs = (*self.schema.match_keys, *self.schema.support_keys())
        levels = match_keys(ordered, secret, specs)
        absent = bytes(MATCH_KEY_BYTES)
        keys = b"".join(
            b"".join(level[i] or absent for level in levels) for i in range(len(ordered))
        )
        return clks, keys, len(levels)

    def _reencode(self, epoch_id: str, ceremony_id: str, secret: bytes) -> EncodedEpoch:
        """The stored epoch's encodings again, bit for bit (see `encode`)."""
        epoch = self.store.epoch(epoch_id)
        if epoch.ceremony_id != ceremony_id:
            raise InvalidRequest(f"epoch {epoch_id} was encoded under another ceremony")
        if epoch.schema_fingerprint != self.schema.fingerprint():
            raise FailedPrecondition(f"the linkage schema changed since epoch {epoch_id}")
        seed = self.store.get_secret(_flip_seed_name(epoch_id))
        if seed is None:
            raise FailedPrecondition(f"epoch {epoch_id} cannot be resent; start a new epoch")
        data = self.data(epoch.data_sha256)
        tokens, rows = self.store.token_rows(epoch_id)
        ordered = [data.identities[i] for i in rows]
        clks, keys, levels = self._encodings(ordered, secret, seed)
        households = tuple(self.store.household_keys(epoch_id))
        log.info("%s: epoch %s resent (%d records)", self.name, epoch_id, epoch.records)
        return EncodedEpoch(epoch, tuple(tokens), clks, households, keys, levels)

    # -- queries -------------------------------------------------------------------
    def _mask(
        self, data: DepartmentData, rows: Sequence[int], filters: Sequence[Predicate]
    ) -> list[bool]:
        frame = data.attributes
        keep = np.ones(len(frame), dtype=bool)
        for p in filters:
            keep &= frame[p.attribute].isin(p.values).to_numpy()
        return [bool(keep[r]) for r in rows]

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
        _check_id("query_id", query_id)
        body = self._check_query_announced(query_id, epsilon, purpose)
        plan = self._noise_plan(body)
        check_predicates(
            self.name, self.config.approved_attributes, filters, department=self.config.department
        )
        packing = None
        if packing_request is not None:
            packing = self._check_packing(packing_request, epsilon, plan)
        epoch = self.store.epoch(epoch_id)
        data = self.data(epoch.data_sha256)
        tokens, rows = self.store.token_rows(epoch_id)
        indicator = self._mask(data, rows, filters)
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
        cts = self._encryptor.encrypt(plain, workers=paillier.bulk_workers(len(plain)))
        return tokens, [paillier.to_bytes(self._paillier_pub, c) for c in cts]

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
            n_bits=self._paillier_pub.n.bit_length(),
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
        _check_id("query_id", h.query_id)
        self._check_query_announced(h.query_id, h.epsilon, h.purpose)
        if h.origin_key.n == self._paillier_pub.n:
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
        return self.data(self.store.epoch(h.epoch_id).data_sha256)

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
        keep = self._mask(data, range(data.records), h.filters)
        key = h.origin_key
        # Draws on the origin key's randomiser pool if _warm_pools started one.
        enc = self._peer_encryptor(key)
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
        keep = self._mask(data, range(data.records), h.filters)
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
        fresh = self._peer_encryptor(key).rerandomise(sums)
        return [(g, paillier.to_bytes(key, c)) for g, c in zip(groups, fresh, strict=True)]

    def add_noise(
        self, query_id: str, key: paillier.PublicKey, groups: Sequence[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, bytes]], NoiseAttestation]:
        """Add this node's share of the query's noise to every aggregate; sign it.

        Only for an announced query that names this node as a share-holder,
        under another party's key, once per query (asked again, it refuses:
        a second share would not help anyone but a party averaging shares).
        Raises PolicyRefused or InvalidRequest otherwise.
        """
        _check_id("query_id", query_id)
        if not groups or len(groups) > MAX_GROUPS:
            raise InvalidRequest(f"a table has 1 to {MAX_GROUPS} groups")
        names = [g for g, _ in groups]
        if len(set(names)) != len(names):
            raise InvalidRequest("group names must be unique")
        body = self._announced("query", "query_id", query_id)
        self._check_project(str(body.get("project_id", "")))
        plan = self._noise_plan(body)
        if self.name not in plan.nodes:
            raise PolicyRefused(f"{self.name} holds no noise share of query {query_id}")
        if key.n == self._paillier_pub.n:
            raise PolicyRefused("aggregates under this node's own key are refused")
        with self._pool_lock:
            peers = self._peer_keys
        if peers and key not in peers:
            raise PolicyRefused("the key is not another party's from the latest ceremony")
        packing = self._announced_packing(body, plan, key.n.bit_length())
        values = [paillier.from_bytes(key, ct) for _, ct in groups]
        self.store.claim_noise(query_id)
        specs = packing.noise_specs()
        # One share per slot per group, from the OS's CSPRNG ([slot][group]).
        shares = [draw_share(spec.scale, len(plan.shareholders), len(groups)) for spec in specs]
        noisy = [
            paillier.add_plain(key, c, packing.pack_share(shares, i)) for i, c in enumerate(values)
        ]
        fresh = self._peer_encryptor(key).rerandomise(noisy)
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

    def decrypt(
        self,
        query_id: str,
        groups: Sequence[tuple[str, bytes]],
        attestations: Sequence[NoiseAttestation] = (),
    ) -> Decrypted:
        """Decrypt noisy aggregates of a query this node encrypted for, once; apply SDC.

        Before decrypting, checks that every share-holding node of the
        announced query added its noise share to exactly these aggregates
        (``attestations``; InvalidProof otherwise), so the noise is one no
        single party knows. Every released cell carries its noise scale and a
        95% interval.
        """
        if not groups or len(groups) > MAX_GROUPS:
            raise InvalidRequest(f"a table has 1 to {MAX_GROUPS} groups")
        names = [g for g, _ in groups]
        if len(set(names)) != len(names):
            raise InvalidRequest("group names must be unique")
        values = [paillier.from_bytes(self._paillier_pub, ct) for _, ct in groups]
        body = self._announced("query", "query_id", query_id)
        plan = self._noise_plan(body)
        verify_noise_chain(
            query_id,
            plan.nodes,
            attestations,
            digest_groups(groups),
            ca_cert=self.federation.ca_cert,
        )
        record = self.store.claim_decryption(query_id)
        out = self.federation.output
        policy = SdcPolicy(out.suppress_below, out.rounding_base, out.secondary_suppression)
        plain = [paillier.decrypt(self._paillier_priv, c) for c in values]
        if not record.packing:
            raise FailedPrecondition(f"query {query_id} has no slot layout at {self.name}")
        packing = Packing.from_json(record.packing)
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


def _flip_seed_name(epoch_id: str) -> str:
    return f"epoch-flip-seed/{epoch_id}"


def _check_id(what: str, value: str) -> None:
    if not (1 <= len(value) <= 64) or not all(ch.isalnum() or ch in "-_" for ch in value):
        raise InvalidRequest(f"{what} must be 1-64 letters, digits, '-' or '_'")
