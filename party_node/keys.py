"""A node's keys: its X25519 identity key, its Paillier key pair, its signed
identity, and the encryptors (with randomiser pools) for its own and its
peers' keys."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import phe
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import ceremony, paillier
from headcount.crypto.ceremony import Identity
from headcount.tls import load_private_key
from party_node.store import NodeStore

log = logging.getLogger(__name__)


class NodeKeys:
    def __init__(
        self, federation: FederationConfig, config: PartyConfig, name: str, store: NodeStore
    ) -> None:
        self.federation, self.name, self.store = federation, name, store
        self.x25519 = self._load_or_create_x25519()
        self.public, self.private = self._load_or_create_paillier()
        # The owner encrypts with CRT over p and q: its own per-record
        # encryptions are the most numerous, and CRT makes them ~30% cheaper.
        self.encryptor = paillier.Encryptor.for_private_key(self.private)
        # Randomiser pools (see warm_pools): the other parties' keys, from the
        # latest key ceremony, and one public-key encryptor per origin key.
        self._pool_lock = threading.Lock()
        self._peers: tuple[paillier.PublicKey, ...] = ()
        self._peer_encryptors: dict[int, paillier.Encryptor] = {}
        # Pairs for proving this node's own ciphertexts as an origin (see warm_pools).
        self.proof_pool: paillier.ProofPool | None = None
        self.identity: Identity = ceremony.sign_identity(
            name,
            self.x25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            self.public.to_bytes(),
            config.tls.cert.read_bytes(),
            load_private_key(config.tls.key),
        )

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

    def set_peers(self, keys: Sequence[paillier.PublicKey]) -> None:
        """The other parties' keys, from the latest ceremony's roster."""
        with self._pool_lock:
            self._peers = tuple(keys)

    def peers(self) -> tuple[paillier.PublicKey, ...]:
        with self._pool_lock:
            return self._peers

    def peer_encryptor(self, key: paillier.PublicKey) -> paillier.Encryptor:
        """This node's encryptor for another party's key, which may carry a pool.

        Only keys from the latest ceremony's roster get their own encryptor (and
        pool), so a hop header naming any other key cannot make the node hold
        more tables or pools; such keys use the process's shared encryptor.
        """
        with self._pool_lock:
            if key not in self._peers:
                return paillier.shared_encryptor(key)
            enc = self._peer_encryptors.get(key.n)
            if enc is None:
                enc = paillier.Encryptor.for_public_key(key)
                self._peer_encryptors[key.n] = enc
            return enc

    def warm_pools(self, records: int) -> None:
        """Start keeping randomisers ready for a query over ``records`` records.

        As origin this node encrypts one value per record under its own key; as
        a filter hop it re-randomises or replaces one ciphertext per record
        under the origin's key, which may be any other party's. Either way it
        also makes one E(0) fill per record of the next node
        (headcount.crypto.signed_sets), which it cannot size before the epoch
        is published: taken as its own size. So each pool is sized to twice
        this node's record count, capped at ``paillier.pool_limit``
        (128 MiB of randomisers per key). With contribution proofs on, its own
        key gets a ``ProofPool`` instead (the random exponents of its proofs and
        their powers, for as many proofs). Building the tables and filling the
        pools happens in background threads and a nice-19 child process
        (``paillier.RandomiserPool``); serving does not wait for it.
        """

        def warm() -> None:
            with self._pool_lock:
                peers = self._peers
            own: tuple[paillier.Encryptor, ...] = (self.encryptor,)
            if self.federation.privacy.contribution_proofs:
                # As origin it proves each ciphertext; the plain encryptor is then
                # only for a mean's unproven values, computed when asked.
                with self._pool_lock:
                    if self.proof_pool is None:
                        self.proof_pool = paillier.ProofPool(self.public, 2 * records)
                own = ()
            for enc in (*own, *(self.peer_encryptor(k) for k in peers)):
                enc.start_pool(min(2 * records, paillier.pool_limit(enc.public_key)))

        threading.Thread(target=warm, name=f"{self.name}-pool-warm", daemon=True).start()

    def encryptors(self) -> list[paillier.Encryptor]:
        """This node's own encryptor, then one per other party's key in use."""
        with self._pool_lock:
            return [self.encryptor, *self._peer_encryptors.values()]

    def close(self) -> None:
        """Stop keeping randomisers ready (the pools' threads and their memory)."""
        with self._pool_lock:
            encryptors = [self.encryptor, *self._peer_encryptors.values()]
        for enc in encryptors:
            enc.stop_pool()
        if self.proof_pool is not None:
            self.proof_pool.stop()
