"""Cryptographic long-term keys (CLKs): field-keyed Bloom filters of identifiers.

Each party encodes a normalised `Identity` into one bit vector of ``filter_bits``
bits. Every field is split into n-grams; each n-gram sets ``hashes`` bits whose
positions come from HMAC-SHA256 under a key derived for that field from the
federation's linkage secret. Two encodings of the same child with a typo still
share most bits, so their Dice coefficient stays high, while the coordinator,
which holds no secret, cannot recompute positions for a guessed name.

Bit ``j`` of a CLK is ``(row[j // 8] >> (7 - j % 8)) & 1`` (most significant bit
first, as ``numpy.packbits`` and clkhash lay it out).

Hardening against frequency and pattern-mining attacks is optional and named
in the schema, so every party applies the same steps in the same order:

1. *record-level salting* (``salt_source``, ``salted_fields``): the HMAC key of
   each salted field is mixed with a stable value of the record (its year of
   birth, say), so the same name sets different bits in different cohorts and
   frequent names stop forming one frequent bit pattern;
2. *XOR-folding* (``xor_fold``): the filter is folded in half, bit ``j`` of the
   result being ``f[j] ^ f[j + filter_bits // 2]``, which hides which n-gram set
   which bit;
3. *random bit flips* (``flip_probability``): every bit is flipped independently
   with the stated probability (permanent randomised response, as in RAPPOR),
   from a generator seeded by the operating system's CSPRNG;
4. *balancing* (``balance``): the bit-complement is appended and the doubled
   filter permuted by a permutation keyed by the linkage secret, so every CLK
   has exactly half its bits set and the popcount says nothing about name length.

Decoy records (`decoy_clks`) are random filters a node may add to what it
sends. With every option off the encoding, and its fingerprint, is the plain
``clk/v1`` one.

The layout is a `ClkSchema` (`headcount.linkage.clk_schema`); the plain Bloom
filters come from `headcount.linkage.bloom`, the tokens they hash from
`headcount.linkage.clk_tokens`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import struct
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes as crypto_hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from headcount.linkage.bloom import bloom_filters
from headcount.linkage.clk_schema import DEFAULT_SCHEMA, SCHEMA_VERSION, ClkSchema
from headcount.linkage.normalise import Identity

__all__ = [
    "MIN_SECRET_BYTES",
    "balance_permutation",
    "csprng",
    "decoy_clks",
    "encode_clks",
    "field_keys",
    "fill_rates",
]

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32

# Hardening and decoys work in chunks of rows so their intermediate bit
# matrices (one byte per bit) stay around 16 MiB however many records there are.
_CHUNK_BITS = 16 * 2**20


def field_keys(secret: bytes, schema: ClkSchema) -> dict[str, bytes]:
    """Derive one independent 32-byte HMAC key per schema field.

    HKDF-SHA256 over ``secret`` with ``info = b"headcount/clk/v1/" + name``: a
    separate key per field means equal n-grams in different fields ("ma" in a
    first and a last name) land on unrelated bits.

    Raises:
        ValueError: ``secret`` is shorter than 32 bytes.
    """
    _check_secret(secret)
    return {spec.name: _hkdf(secret, spec.name) for spec in schema.fields}


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"linkage secret must be at least {MIN_SECRET_BYTES} bytes")


def _hkdf(secret: bytes, label: str) -> bytes:
    hkdf = HKDF(
        algorithm=crypto_hashes.SHA256(),
        length=32,
        salt=None,
        info=f"headcount/{SCHEMA_VERSION}/{label}".encode("ascii"),
    )
    return hkdf.derive(bytes(secret))


def balance_permutation(secret: bytes, bits: int) -> np.ndarray:
    """The keyed permutation of ``bits`` positions that balancing applies.

    A Fisher-Yates shuffle driven by HMAC-SHA256 in counter mode under the key
    HKDF(secret, ``"headcount/clk/v1/balance"``); each swap index is a 64-bit
    slice reduced mod ``i + 1`` (bias below 2**-48). Written out rather than
    taken from numpy, whose Generator streams may change between releases:
    parties on different numpy versions must still agree on every position.

    Returns:
        An ``intp`` array ``p`` of length ``bits``; balanced output bit ``j`` is
        bit ``p[j]`` of the filter followed by its complement.

    Raises:
        ValueError: ``secret`` is shorter than 32 bytes or ``bits`` < 1.
    """
    _check_secret(secret)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError("bits must be a positive int")
    key = _hkdf(secret, "balance")
    words: list[int] = []
    block = 0
    while len(words) < bits - 1:
        digest = hmac.digest(key, block.to_bytes(8, "big"), "sha256")
        words.extend(struct.unpack(">4Q", digest))
        block += 1
    order = list(range(bits))
    for step, i in enumerate(range(bits - 1, 0, -1)):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return np.asarray(order, dtype=np.intp)


def csprng() -> np.random.Generator:
    """A numpy Generator keyed with 128 bits from the operating system's CSPRNG.

    Philox is a counter-based generator built from a keyed bijection; keying
    it from ``secrets`` means a party that sees its output (the flipped bits,
    the decoys) cannot predict or reproduce the stream.
    """
    return np.random.Generator(np.random.Philox(key=secrets.randbits(128)))


def encode_clks(
    identities: Sequence[Identity],
    secret: bytes,
    schema: ClkSchema = DEFAULT_SCHEMA,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Encode identities into CLKs, one row per identity.

    Args:
        identities: normalised records.
        secret: the federation linkage secret, at least 32 bytes.
        schema: the CLK layout and hardening; every party must use the same one.
        rng: source of the random bit flips when ``schema.flip_probability`` is
            set; `csprng` by default. Tests pass a seeded one; production code
            should not. Unused otherwise.

    Returns:
        A ``uint8`` array of shape ``(len(identities), schema.clk_bits // 8)``.
        Without flips and balancing, empty fields set no bits, so an all-empty
        identity encodes to zeros. Deterministic for a given secret and schema
        unless ``flip_probability`` > 0.

    Raises:
        ValueError: ``secret`` is shorter than 32 bytes.
    """
    keys = field_keys(secret, schema)
    permutation = (
        balance_permutation(secret, 2 * _bloom_out_bits(schema)) if schema.balance else None
    )
    if schema.flip_probability > 0.0 and rng is None:
        rng = csprng()
    n = len(identities)
    plain = bloom_filters(identities, schema, keys)
    out = _harden(plain, schema, permutation, rng)
    log.debug("encoded %d CLKs of %d bits", n, schema.clk_bits)
    return out


def _bloom_out_bits(schema: ClkSchema) -> int:
    """Bits after folding, before balancing."""
    return schema.filter_bits // 2 if schema.xor_fold else schema.filter_bits


def _harden(
    plain: np.ndarray,
    schema: ClkSchema,
    permutation: np.ndarray | None,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Apply folding, flips and balancing, in that order, to packed Bloom filters.

    Flips come before balancing so that every balanced CLK still has exactly
    half its bits set: flipping after would let popcounts drift again. Rows
    are taken in chunks of a fixed size, and each chunk draws its flips in one
    call, so a seeded generator gives the same CLKs as it always has.
    """
    if not (schema.xor_fold or schema.flip_probability > 0.0 or permutation is not None):
        return plain
    n = len(plain)
    out = np.empty((n, schema.clk_bits // 8), dtype=np.uint8)
    chunk = max(1, _CHUNK_BITS // (2 * schema.filter_bits))
    for start in range(0, n, chunk):
        block = plain[start : start + chunk]
        if schema.xor_fold:
            # filter_bits is a multiple of 128, so the halves are whole bytes.
            half = block.shape[1] // 2
            block = block[:, :half] ^ block[:, half:]
        if schema.flip_probability > 0.0:
            assert rng is not None  # encode_clks supplies one
            # float32 halves the chunk's temporary; its 2**-24 resolution is
            # far finer than any flip probability worth setting.
            draws = rng.random((len(block), 8 * block.shape[1]), dtype=np.float32)
            block = block ^ np.packbits(draws < schema.flip_probability, axis=1)
        if permutation is not None:
            bits = np.unpackbits(block, axis=1).view(np.bool_)
            block = np.packbits(np.concatenate((bits, ~bits), axis=1)[:, permutation], axis=1)
        out[start : start + len(block)] = block
    return out


def fill_rates(clks: np.ndarray) -> np.ndarray:
    """Share of set bits in each CLK, in [0, 1], as a float64 array.

    Raises:
        ValueError: ``clks`` is not a 2-D ``uint8`` array of non-zero width.
    """
    if not isinstance(clks, np.ndarray) or clks.dtype != np.uint8 or clks.ndim != 2:
        raise ValueError("clks must be a 2-D uint8 array")
    if clks.shape[1] == 0:
        raise ValueError("clks must be at least one byte wide")
    counts = np.bitwise_count(clks).sum(axis=1, dtype=np.int64)
    rates: np.ndarray = counts / (8 * clks.shape[1])
    return rates


def decoy_clks(
    n: int,
    filter_bits: int,
    fill_rate: float | np.ndarray,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``n`` random filters with the popcounts of real CLKs, to hide among them.

    Each decoy sets ``k`` bits at positions drawn uniformly without
    replacement. With a scalar ``fill_rate``, ``k = round(fill_rate *
    filter_bits)`` for every decoy, which is right for balanced CLKs (pass
    0.5: every balanced CLK has exactly half its bits set). With an array of
    rates (from `fill_rates` over the real CLKs), each decoy copies the popcount
    of a randomly chosen real CLK, so decoys follow the real popcount
    distribution. Decoys hold no n-gram structure, so their Dice scores with
    real CLKs stay near chance and they rarely link to anything; only the node
    knows which of its tokens are decoys, and it must drop any link one takes
    part in. Popcount is the only statistic matched: a coordinator counting
    how often each bit is set across many records could still single out
    records that share no frequent pattern, which the attack suite measures.

    Args:
        n: number of decoys, >= 0.
        filter_bits: CLK length in bits (``schema.clk_bits``), a positive
            multiple of 8.
        fill_rate: share of bits to set, in [0, 1], or a non-empty 1-D array
            of such shares.
        rng: randomness; `csprng` by default.

    Returns:
        A ``uint8`` array of shape ``(n, filter_bits // 8)``.

    Raises:
        ValueError: on a negative ``n``, a bad ``filter_bits`` or a rate
            outside [0, 1].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("n must be a non-negative int")
    if (
        isinstance(filter_bits, bool)
        or not isinstance(filter_bits, int)
        or filter_bits <= 0
        or filter_bits % 8
    ):
        raise ValueError("filter_bits must be a positive multiple of 8")
    rates = np.asarray(fill_rate, dtype=np.float64)
    if rates.ndim > 1 or rates.size == 0:
        raise ValueError("fill_rate must be a number or a non-empty 1-D array")
    if not bool(np.all((rates >= 0.0) & (rates <= 1.0))):  # also rejects NaN
        raise ValueError("fill rates must lie in [0, 1]")
    if rng is None:
        rng = csprng()
    chosen = rates if rates.ndim == 0 else rates[rng.integers(0, rates.size, size=n)]
    counts = np.broadcast_to(np.rint(chosen * filter_bits).astype(np.int64), (n,))
    out = np.zeros((n, filter_bits // 8), dtype=np.uint8)
    chunk = max(1, _CHUNK_BITS // (8 * filter_bits))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        # The ranks of i.i.d. uniform keys are a uniform random permutation per
        # row, so "rank < k" picks k positions uniformly without replacement.
        ranks = np.argsort(np.argsort(rng.random((stop - start, filter_bits)), axis=1), axis=1)
        out[start:stop] = np.packbits(ranks < counts[start:stop, None], axis=1)
    return out
