"""Paillier keys and ciphertext vectors, compatible with ``phe``.

Keys are ``phe`` keys, so a ``phe`` private key decrypts everything produced
here. Per-record vectors are handled as raw integers with gmpy2 (homomorphic
addition is a modular product) because wrapping each in ``phe.EncryptedNumber``
costs more than the arithmetic. Ciphertexts cross the wire as fixed-width
big-endian bytes and are range-checked on the way in.

Encryption is E(m) = (1 + m*n) * R mod n^2 (g = n + 1, as ``phe`` uses), where the
randomiser R is an n-th residue. Almost all of the cost is R, and there are two
ways to draw it (see ``RandomiserSource``):

* the *full* randomiser R = r^n for r uniform in Z*_n, exactly ``phe``'s
  distribution, semantically secure under the DCR assumption alone
  (``secure_randomiser=True``). Built from the private key it is computed by CRT,
  about 3.5x faster than ``phe``.
* the *short-exponent* randomiser R = h^x for a fixed h = r0^n and a fresh
  ``SHORT_EXPONENT_BITS``-bit x, read off a fixed-base table: about 50x faster
  than ``phe`` from a public key and 70x from the private key (CRT), at 2048-bit
  keys. It rests on one further, standard assumption; see ``SHORT_EXPONENT_BITS``.

The module-level ``encrypt``, ``encrypt_zeros`` and ``rerandomise`` use the short
exponent by default, with one table per key cached per process.

Since R does not depend on the plaintext, it can also be drawn ahead of time: an
``Encryptor`` with a ``RandomiserPool`` attached (``Encryptor.start_pool``) keeps
short-exponent randomisers ready, computed in the background by a low-priority
child process, and its encrypt, encrypt_zeros and rerandomise then cost one
modular multiplication each online.

Modules: ``keys`` (the key pair), ``randomisers`` (the two kinds of R, the
fixed-base table and CRT), ``encryptor`` (``Encryptor``), ``pool``
(``RandomiserPool``), ``workers`` (batches over several processes),
``proofs`` (ciphertexts proven to hold one of a few values) and
``ciphertexts`` (the module-level operations and the wire encoding). Callers
use the names exported here: ``from headcount.crypto import paillier``, then
``paillier.Encryptor``, ``paillier.encrypt``, ...
"""

from headcount.crypto.paillier.ciphertexts import (
    add_all,
    add_plain,
    check_ciphertext,
    chunks,
    decrypt,
    decrypt_batch,
    encrypt,
    encrypt_zeros,
    from_bytes,
    from_bytes_batch,
    rerandomise,
    shared_encryptor,
    to_bytes,
    to_bytes_batch,
)
from headcount.crypto.paillier.encryptor import Encryptor
from headcount.crypto.paillier.keys import (
    PublicKey,
    generate_keypair,
    private_key_bytes,
    private_key_from_bytes,
)
from headcount.crypto.paillier.pool import POOL_MAX_BYTES, RandomiserPool, pool_limit
from headcount.crypto.paillier.proof_pool import ProofPool, proof_pool_limit
from headcount.crypto.paillier.proofs import (
    BatchVerifier,
    ProofLayout,
    Prover,
    ciphertext_of,
    verify_batch,
)
from headcount.crypto.paillier.randomisers import SHORT_EXPONENT_BITS, Mpz, RandomiserSource
from headcount.crypto.paillier.workers import BULK_WORKERS_FROM, bulk_workers

__all__ = [
    "BULK_WORKERS_FROM",
    "POOL_MAX_BYTES",
    "SHORT_EXPONENT_BITS",
    "BatchVerifier",
    "Encryptor",
    "Mpz",
    "ProofLayout",
    "ProofPool",
    "Prover",
    "PublicKey",
    "RandomiserPool",
    "RandomiserSource",
    "add_all",
    "add_plain",
    "bulk_workers",
    "check_ciphertext",
    "chunks",
    "ciphertext_of",
    "decrypt",
    "decrypt_batch",
    "encrypt",
    "encrypt_zeros",
    "from_bytes",
    "from_bytes_batch",
    "generate_keypair",
    "pool_limit",
    "private_key_bytes",
    "private_key_from_bytes",
    "proof_pool_limit",
    "rerandomise",
    "shared_encryptor",
    "to_bytes",
    "to_bytes_batch",
    "verify_batch",
]
