"""A linkage epoch at a node: the checked department file, fresh tokens in
shuffled order, and the epoch's keyed encodings (CLKs, match-keys, households)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import ceremony
from headcount.errors import FailedPrecondition, InvalidRequest
from headcount.linkage.address import household_keys
from headcount.linkage.clk import encode_clks
from headcount.linkage.matchkeys import match_keys
from headcount.linkage.normalise import Identity as Person
from headcount.linkage.schema import LinkageSchema
from party_node.data import DepartmentData, department_options, file_digest, load_department_file
from party_node.ids import check_id, flip_seed_name
from party_node.keys import NodeKeys
from party_node.replica import Replica
from party_node.store import Epoch, NodeStore

log = logging.getLogger(__name__)

TOKEN_BYTES = 16
MATCH_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class EncodedEpoch:
    epoch: Epoch
    tokens: tuple[bytes, ...]  # in the (shuffled) order they are sent
    clks: np.ndarray  # uint8 (records, filter_bytes), same order
    households: tuple[bytes, ...]  # keyed household keys (b"" if unknown), same order
    match_keys: bytes  # per record, levels x 16-byte keyed match-keys (zeros: none)
    match_key_levels: int


class Encoder:
    def __init__(
        self,
        federation: FederationConfig,
        config: PartyConfig,
        name: str,
        schema: LinkageSchema,
        store: NodeStore,
        keys: NodeKeys,
        replica: Replica,
    ) -> None:
        self.federation, self.config, self.name, self.schema = federation, config, name, schema
        self.store, self.keys, self.replica = store, keys, replica
        self._data_lock = threading.Lock()
        self._data: DepartmentData | None = None

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

    def encode(self, epoch_id: str, ceremony_id: str) -> EncodedEpoch:
        """Check the file, issue fresh tokens, encode CLKs, and store the epoch atomically.

        Asking again for an epoch this node has already encoded (a coordinator
        resuming an upload cut short) returns exactly the same encodings: the
        tokens, their order and the seed of any random bit flips are stored
        with the epoch. Drawing fresh flips on every request would let whoever
        asks repeatedly average the flips away.
        """
        check_id("epoch_id", epoch_id)
        self.replica.announced_epoch(epoch_id)
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
        self.store.put_secret(flip_seed_name(epoch_id), seed)
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
        self.keys.warm_pools(data.records)
        return EncodedEpoch(epoch, tokens, clks, households, keys, levels)

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
        seed = self.store.get_secret(flip_seed_name(epoch_id))
        if seed is None:
            raise FailedPrecondition(f"epoch {epoch_id} cannot be resent; start a new epoch")
        data = self.data(epoch.data_sha256)
        tokens, rows = self.store.token_rows(epoch_id)
        ordered = [data.identities[i] for i in rows]
        clks, keys, levels = self._encodings(ordered, secret, seed)
        households = tuple(self.store.household_keys(epoch_id))
        log.info("%s: epoch %s resent (%d records)", self.name, epoch_id, epoch.records)
        return EncodedEpoch(epoch, tuple(tokens), clks, households, keys, levels)
