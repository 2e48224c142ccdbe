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
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import operator
import secrets
import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import hashes as crypto_hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from headcount.linkage import _kernel
from headcount.linkage.normalise import Identity, is_uk_postcode

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_SCHEMA",
    "EXTRA_FIELDS",
    "SALT_SOURCES",
    "SCHEMA_VERSION",
    "ClkSchema",
    "FieldSpec",
    "balance_permutation",
    "csprng",
    "decoy_clks",
    "encode_clks",
    "field_keys",
    "fill_rates",
    "with_present_fields",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = "clk/v1"
MIN_SECRET_BYTES = 32

_IDENTITY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Identity) if f.name != "birth_partial"
)
_MAX_HASHES = 64
_MAX_NGRAM = 4

# Stable record values a salt may be taken from; each maps an Identity to the
# salt string ("" when the value is missing). Only values that rarely carry
# recording errors qualify: a salt that differs between two records of one
# child makes every salted field disagree.
SALT_SOURCES: dict[str, Callable[[Identity], str]] = {
    "birth_year": lambda identity: identity.date_of_birth[:4],
    "sex": lambda identity: identity.sex,
}
_MAX_FLIP_PROBABILITY = 0.5

# Hardening and decoys work in chunks of rows so their intermediate bit
# matrices (one byte per bit) stay around 16 MiB however many records there are.
_CHUNK_BITS = 16 * 2**20


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one `Identity` field is encoded.

    Attributes:
        name: an `Identity` field name.
        ngram: 1 encodes the whole value as a single token; 2 to 4 encode the
            value's n-grams, padded with ``"_"`` at both ends. Names drop their
            spaces first; a date of birth also adds the tokens ``y:YYYY``,
            ``m:MM``, ``d:DD`` and the unordered day/month pair; a postcode adds
            its outward code as a token.
        hashes: bits set per n-gram or token (k), 1 to 64; a field's weight in
            the Dice score grows with it.

    Raises:
        ValueError: on an unknown field name or an out-of-range value.
    """

    name: str
    ngram: int
    hashes: int

    def __post_init__(self) -> None:
        if self.name not in _IDENTITY_FIELDS:
            raise ValueError(f"unknown identity field {self.name!r}")
        if not _is_int(self.ngram) or not 1 <= self.ngram <= _MAX_NGRAM:
            raise ValueError(f"ngram must be an int in 1..{_MAX_NGRAM}")
        if not _is_int(self.hashes) or not 1 <= self.hashes <= _MAX_HASHES:
            raise ValueError(f"hashes must be an int in 1..{_MAX_HASHES}")


# Defaults chosen by a sweep on 3,000 synthetic children (Faker en_GB, in
# households with siblings, 15% of them twins) against copies carrying 0-2
# realistic errors each (typo, transposed day/month, date off by a day, missing or
# moved postcode, missing sex). At Dice >= 0.8 these gave precision 0.987 and
# recall 0.997 before one-to-one matching (1.000 / 0.997 after); equal name
# weights (20/20) let more siblings and twins over the threshold (precision 0.968).
# - First names weigh most: within a household they are the only field that
#   tells twins apart, and bigrams keep them tolerant of typos.
# - Surnames weigh less than first names because siblings and unrelated
#   families share them, but more than the remaining fields.
# - Date-of-birth bigrams are shared by most children born in the same decade
#   ("_2", "20", "-0"), so each sets fewer bits; the y/m/d/dm tokens carry the
#   discriminating part.
# - Sex has two values and separates nobody on its own: a light single token.
# - Postcodes change when families move, so they carry little weight.
DEFAULT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("first_name", ngram=2, hashes=25),
    FieldSpec("last_name", ngram=2, hashes=15),
    FieldSpec("date_of_birth", ngram=2, hashes=10),
    FieldSpec("sex", ngram=1, hashes=2),
    FieldSpec("postcode", ngram=2, hashes=6),
)


REFERENCE_HASHES = 20  # about a first name's weight: a reference number is near-unique
# Fields encoded only where every file holds them (`with_present_fields`):
# an address line weighs little, as families move; a locality less still.
EXTRA_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("address", ngram=2, hashes=6),
    FieldSpec("locality", ngram=2, hashes=4),
    FieldSpec("reference", ngram=2, hashes=REFERENCE_HASHES),
)


def with_present_fields(schema: ClkSchema, present: Collection[str]) -> ClkSchema:
    """The default layout plus `EXTRA_FIELDS` that every file holds (``present``).

    A schema whose fields were chosen by hand is returned as it is.
    """
    if schema.fields != DEFAULT_FIELDS:
        return schema
    extra = tuple(f for f in EXTRA_FIELDS if f.name in present)
    return dataclasses.replace(schema, fields=schema.fields + extra) if extra else schema


@dataclass(frozen=True, slots=True)
class ClkSchema:
    """A versioned CLK layout: filter size and per-field encodings.

    Every party in a linkage epoch must use the same schema; compare
    `fingerprint` values to check. The hardening options are all off by
    default (see the module docstring for what each does and in which order).

    Attributes:
        filter_bits: Bloom filter length in bits before hardening, a multiple
            of 64 in 256..8192 (of 128 when ``xor_fold`` is set).
        fields: one `FieldSpec` per encoded field, each name at most once.
        balance: append the keyed-permuted bit-complement (doubles the length).
        xor_fold: fold the filter in half by XOR (halves the length).
        salt_source: ``""`` for no salting, else a key of `SALT_SOURCES`
            (``"birth_year"`` or ``"sex"``) whose value salts the fields named
            in ``salted_fields``.
        salted_fields: schema field names whose keys are salted; non-empty
            exactly when ``salt_source`` is set.
        flip_probability: probability, in [0, 0.5), that each output bit is
            flipped before balancing; 0.0 disables flips (and makes the
            encoding deterministic).

    Raises:
        ValueError: on a bad size, no fields, a repeated field, an unknown salt
            source or salted field, or a flip probability outside [0, 0.5).
    """

    filter_bits: int = 1024
    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS
    balance: bool = False
    xor_fold: bool = False
    salt_source: str = ""
    salted_fields: tuple[str, ...] = ()
    flip_probability: float = 0.0

    def __post_init__(self) -> None:
        if not _is_int(self.filter_bits) or not (
            256 <= self.filter_bits <= 8192 and self.filter_bits % 64 == 0
        ):
            raise ValueError("filter_bits must be a multiple of 64 in 256..8192")
        if not isinstance(self.fields, tuple) or not self.fields:
            raise ValueError("fields must be a non-empty tuple of FieldSpec")
        if not all(isinstance(f, FieldSpec) for f in self.fields):
            raise ValueError("fields must be a non-empty tuple of FieldSpec")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("each field may appear in a schema only once")
        if not isinstance(self.balance, bool) or not isinstance(self.xor_fold, bool):
            raise ValueError("balance and xor_fold must be bools")
        if self.xor_fold and self.filter_bits % 128:
            raise ValueError("filter_bits must be a multiple of 128 when xor_fold is set")
        if self.salt_source and self.salt_source not in SALT_SOURCES:
            raise ValueError(f"salt_source must be '' or one of {sorted(SALT_SOURCES)}")
        if not isinstance(self.salted_fields, tuple) or not all(
            isinstance(f, str) for f in self.salted_fields
        ):
            raise ValueError("salted_fields must be a tuple of field names")
        if bool(self.salt_source) != bool(self.salted_fields):
            raise ValueError("salt_source and salted_fields must be set together")
        unknown = sorted(set(self.salted_fields) - set(names))
        if unknown:
            raise ValueError(f"salted_fields {unknown} are not fields of this schema")
        if len(set(self.salted_fields)) != len(self.salted_fields):
            raise ValueError("each salted field may be named only once")
        p = self.flip_probability
        if isinstance(p, bool) or not isinstance(p, float | int):
            raise ValueError("flip_probability must be a number in [0, 0.5)")
        if not 0.0 <= p < _MAX_FLIP_PROBABILITY:  # also rejects NaN
            raise ValueError("flip_probability must be in [0, 0.5)")
        object.__setattr__(self, "flip_probability", float(p))

    @property
    def hardened(self) -> bool:
        """Whether any hardening option is on."""
        return (
            self.balance or self.xor_fold or bool(self.salt_source) or self.flip_probability > 0.0
        )

    @property
    def clk_bits(self) -> int:
        """Length in bits of the CLKs this schema produces, after hardening."""
        bits = self.filter_bits // 2 if self.xor_fold else self.filter_bits
        return bits * 2 if self.balance else bits

    def to_json(self) -> dict[str, object]:
        """The schema as the JSON-ready document its fingerprint hashes.

        The hardening object appears only when some option is on, so a plain
        schema keeps the ``clk/v1`` fingerprint it has always had.
        """
        doc: dict[str, object] = {
            "version": SCHEMA_VERSION,
            "filter_bits": self.filter_bits,
            "fields": [{"name": f.name, "ngram": f.ngram, "hashes": f.hashes} for f in self.fields],
        }
        if self.hardened:
            doc["hardening"] = {
                "balance": self.balance,
                "xor_fold": self.xor_fold,
                "salt_source": self.salt_source,
                "salted_fields": list(self.salted_fields),
                # repr() of a float round-trips exactly, so equal schemas hash
                # equally on every platform.
                "flip_probability": repr(self.flip_probability),
            }
        return doc

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the schema's canonical JSON, version included."""
        canonical = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


DEFAULT_SCHEMA = ClkSchema()


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
    plain = np.zeros((n, schema.filter_bits // 8), dtype=np.uint8)
    if n:
        salt_of = SALT_SOURCES.get(schema.salt_source)
        salts = [salt_of(i) for i in identities] if salt_of is not None else None
        columns = _columns(identities, [spec.name for spec in schema.fields])
        tables = [
            _field_table(
                spec,
                keys[spec.name],
                column,
                salts if spec.name in schema.salted_fields else None,
                schema.filter_bits,
            )
            for spec, column in zip(schema.fields, columns, strict=True)
        ]
        _set_bits(plain, tables)
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


# --- encoding internals ------------------------------------------------------------
#
# Encoding works on distinct values, not records: a department's records share
# a few thousand first names and surnames and a few dozen n-grams per field,
# so the per-record work is one dictionary-free pass (pandas.factorize, in C)
# and the numba kernel that sets the bits. For each field:
#
# 1. factorize the column (with its salt, when salted) into *items*;
# 2. split each distinct value into tokens, vectorised over a code-point
#    matrix of the distinct values (`_tokenise`);
# 3. hash each distinct (salt, token) pair once with HMAC (`_token_positions`);
# 4. hand the kernel the ragged tables record -> item -> tokens -> positions.


@dataclass(frozen=True, slots=True)
class _FieldTable:
    """One field's ragged tables for `_kernel.set_bloom_bits` (all ``int64``
    but ``positions``, ``int32``): record ``r`` sets, for each token ``t`` in
    ``item_tokens[item_starts[i] : item_starts[i + 1]]`` with
    ``i = item_ids[r]``, the bits ``positions[token_starts[t] : token_starts[t + 1]]``."""

    item_ids: np.ndarray
    item_starts: np.ndarray
    item_tokens: np.ndarray
    token_starts: np.ndarray
    positions: np.ndarray


def _columns(identities: Sequence[Identity], names: Sequence[str]) -> list[list[str]]:
    """The named fields of every identity, one list per field."""
    # One pass per field: fetching all fields as one tuple per record was 6x
    # slower (50,000 short-lived tuples wake the garbage collector).
    return [
        # A date that could not be read keeps the parts that could (`salvage_date`).
        [i.date_of_birth or i.birth_partial for i in identities]
        if name == "date_of_birth"
        else list(map(operator.attrgetter(name), identities))
        for name in names
    ]


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(code of each value as ``int64``, distinct values in first-seen order)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=False)
    return codes.astype(np.int64, copy=False), [str(u) for u in uniques]


def _ragged_take(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges ``starts[i] : starts[i] + counts[i]``, as ``int64``."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    # Offset of each output element within its range: 0, 1, ..., count - 1.
    within = np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts)
    taken: np.ndarray = np.repeat(starts, counts) + within
    return taken


def _field_table(
    spec: FieldSpec,
    key: bytes,
    values: Sequence[str],
    salts: Sequence[str] | None,
    filter_bits: int,
) -> _FieldTable:
    """Bloom filter tables for one field of every record (see `_FieldTable`).

    A salted field's tokens are hashed under ``HMAC-SHA256(field key,
    b"salt\\x00" + salt)``, one derived key per salt value (a missing salt
    value, ``""``, is a salt like any other).
    """
    codes, uniques = _factorize(values)
    m = len(uniques)
    token_rows, token_ids, tokens = _tokenise(spec, uniques)
    order = np.argsort(token_rows, kind="stable")
    token_ids = token_ids[order]
    value_counts = np.bincount(token_rows, minlength=m).astype(np.int64)
    value_starts = np.cumsum(value_counts) - value_counts
    if salts is None:
        item_ids = codes
        item_value = np.arange(m, dtype=np.int64)
        item_salt = np.zeros(m, dtype=np.int64)
        salt_keys = [key]
    else:
        salt_codes, salt_values = _factorize(salts)
        item_ids, item_codes = pd.factorize(salt_codes * m + codes, sort=False)
        item_ids = item_ids.astype(np.int64, copy=False)
        item_salt, item_value = np.divmod(item_codes.astype(np.int64), m)
        salt_keys = [
            hmac.digest(key, b"salt\x00" + salt.encode("utf-8"), "sha256") for salt in salt_values
        ]
    counts = value_counts[item_value]
    item_token_texts = token_ids[_ragged_take(value_starts[item_value], counts)]
    # Each distinct (salt, token) pair is hashed once, whatever number of
    # records and values hold it.
    pair_ids, pair_codes = pd.factorize(
        np.repeat(item_salt, counts) * max(1, len(tokens)) + item_token_texts, sort=False
    )
    k = spec.hashes
    stride = max(1, len(tokens))
    positions = _token_positions(
        [
            (salt_keys[salt], tokens[token])
            for salt, token in (divmod(c, stride) for c in pair_codes.tolist())
        ],
        k,
        filter_bits,
    )
    item_starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=item_starts[1:])
    return _FieldTable(
        item_ids=item_ids,
        item_starts=item_starts,
        item_tokens=pair_ids.astype(np.int64, copy=False),
        token_starts=np.arange(len(pair_codes) + 1, dtype=np.int64) * k,
        positions=positions,
    )


def _set_bits(out: np.ndarray, tables: Sequence[_FieldTable]) -> None:
    """Set every record's bits in ``out`` (``uint8``, zeroed, one row per record).

    A field with few distinct items (names, dates, postcodes, nearly always)
    gets one Bloom filter per item, and each record ORs in its items' filters
    a 64-bit word at a time: far fewer writes than setting each record's few
    hundred bits one by one. A field with more distinct items than half the
    records sets its bits record by record, so the item filters never take
    more memory than the output.
    """
    n = len(out)
    shared = [t for t in tables if 2 * (len(t.item_starts) - 1) <= n]
    direct = [t for t in tables if 2 * (len(t.item_starts) - 1) > n]
    if direct:
        _kernel.set_bloom_bits(out, *_joined(direct))
    if shared:
        item_ids, *ragged = _joined(shared)
        total = sum(len(t.item_starts) - 1 for t in shared)
        filters = np.zeros((total, out.shape[1]), dtype=np.uint8)
        _kernel.set_bloom_bits(filters, np.arange(total, dtype=np.int64)[None, :], *ragged)
        # OR is the same on any byte order, so the packed rows can be read
        # as 64-bit words (filter_bits is a multiple of 64).
        _kernel.or_rows(out.view(np.uint64), item_ids, filters.view(np.uint64))


def _joined(
    tables: Sequence[_FieldTable],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fields' tables as one set of ragged arrays, ids offset field by field:
    (item ids per field and record, item starts, item tokens, token starts, positions)."""
    items = np.empty((len(tables), len(tables[0].item_ids)), dtype=np.int64)
    item_starts: list[np.ndarray] = []
    item_tokens: list[np.ndarray] = []
    token_starts: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    n_items = n_item_tokens = n_tokens = n_positions = 0
    for f, table in enumerate(tables):
        items[f] = table.item_ids + n_items
        item_starts.append(table.item_starts[:-1] + n_item_tokens)
        item_tokens.append(table.item_tokens + n_tokens)
        token_starts.append(table.token_starts[:-1] + n_positions)
        positions.append(table.positions)
        n_items += len(table.item_starts) - 1
        n_item_tokens += len(table.item_tokens)
        n_tokens += len(table.token_starts) - 1
        n_positions += len(table.positions)
    item_starts.append(np.array([n_item_tokens], dtype=np.int64))
    token_starts.append(np.array([n_positions], dtype=np.int64))
    return (
        items,
        np.concatenate(item_starts),
        np.concatenate(item_tokens),
        np.concatenate(token_starts),
        np.concatenate(positions).astype(np.int32, copy=False),
    )


_PAD = ord("_")
_NAME_FIELDS = ("first_name", "last_name", "locality")


def _tokenise(spec: FieldSpec, uniques: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tokens of each distinct value: (value index, token id) pairs and the token texts.

    The texts are those `_tokeniser` gives (`_tokens_python` computes them that
    way, one value at a time); this computes n-grams and date parts over a
    matrix of code points instead, and falls back to the per-value path only
    for text it cannot pack (a NUL character, or an alphabet too large for a
    token's characters to fit 64 bits).
    """
    if spec.name == "address":
        # House and flat numbers become tokens of their own: per value.
        return _tokens_python(spec, uniques)
    values = [v.replace(" ", "") for v in uniques] if spec.name in _NAME_FIELDS else list(uniques)
    tokenised = _tokens_numpy(spec, values)
    return tokenised if tokenised is not None else _tokens_python(spec, uniques)


def _tokens_python(
    spec: FieldSpec, uniques: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`_tokenise`, one value at a time through `_tokeniser`."""
    tokenise = _tokeniser(spec)
    index: dict[str, int] = {}
    rows: list[int] = []
    ids: list[int] = []
    for row, value in enumerate(uniques):
        for token in tokenise(value):
            rows.append(row)
            ids.append(index.setdefault(token, len(index)))
    return np.asarray(rows, dtype=np.int64), np.asarray(ids, dtype=np.int64), list(index)


def _tokens_numpy(
    spec: FieldSpec, values: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """`_tokenise` over a code-point matrix, or None when the text cannot be packed.

    ``values`` are the distinct values, spaces already removed from names.
    Characters are renumbered 1..A in code-point order (0 = no character), so
    a token of w characters packs into w * bits(A) bits, and comparing packed
    codes compares the strings as Python does (a shorter prefix sorts first).
    """
    index: dict[str, int] = {}
    rows: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    m = len(values)
    text = "".join(values)
    if "\x00" in text:
        return None
    width = max(map(len, values), default=0)
    if width == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    n = spec.ngram
    is_date = spec.name == "date_of_birth"
    chars = np.zeros((m, max(width, 10)), dtype=np.uint32)
    chars[:, :width] = np.array(values, dtype=f"<U{width}").view(np.uint32).reshape(m, width)
    lengths = np.count_nonzero(chars, axis=1)
    alphabet = np.union1d(np.unique(chars), [_PAD])
    alphabet = alphabet[alphabet != 0]
    bits = len(alphabet).bit_length()
    widest = max(n if n > 1 else 0, 4 if is_date else 0)
    if widest * bits > 64:
        return None
    letters = [""] + [chr(c) for c in alphabet.tolist()]

    # Code point -> 1..A (0 stays 0), by table lookup.
    lookup = np.zeros(int(alphabet[-1]) + 1, dtype=np.uint64)
    lookup[alphabet] = np.arange(1, len(alphabet) + 1, dtype=np.uint64)

    def dense(block: np.ndarray) -> np.ndarray:
        found: np.ndarray = lookup[block]
        return found

    def pack(columns: np.ndarray) -> np.ndarray:
        code = np.zeros(columns.shape[0], dtype=np.uint64)
        for j in range(columns.shape[1]):
            code = (code << np.uint64(bits)) | columns[:, j]
        return code

    def decode(code: int, chars_wide: int) -> str:
        mask = (1 << bits) - 1
        return "".join(
            letters[(code >> (bits * (chars_wide - 1 - j))) & mask] for j in range(chars_wide)
        )

    def add(rows_of: np.ndarray, codes: np.ndarray, name: Callable[[int], str]) -> None:
        local, distinct = pd.factorize(codes, sort=False)
        global_ids = np.array(
            [index.setdefault(name(int(c)), len(index)) for c in distinct], dtype=np.int64
        )
        rows.append(rows_of)
        ids.append(global_ids[local])

    present = np.flatnonzero(lengths > 0)
    if n > 1:
        # "_" + value + "_", then every window of n characters; a padded value
        # shorter than n is one token (its window ends in "no character").
        padded = np.zeros((m, max(width + 2, n)), dtype=np.uint32)
        padded[:, 0] = _PAD
        padded[:, 1 : width + 1] = chars[:, :width]
        padded[np.arange(m), lengths + 1] = _PAD
        digits = dense(padded)
        windows = np.where(lengths > 0, np.maximum(lengths + 3 - n, 1), 0)
        span = int(windows.max())
        codes = np.zeros((m, span), dtype=np.uint64)
        for j in range(n):
            codes = (codes << np.uint64(bits)) | digits[:, j : j + span]
        row_of, column = np.nonzero(np.arange(span) < windows[:, None])
        add(row_of, codes[row_of, column], lambda c: "g:" + decode(c, n))
    if is_date:
        # iso[:4], iso[5:7], iso[8:10] and the sorted (day, month) pair; a
        # short value leaves "no character" where Python's slice would end.
        digits = dense(chars[present, :10])
        year, month, day = pack(digits[:, 0:4]), pack(digits[:, 5:7]), pack(digits[:, 8:10])
        add(present, year, lambda c: "t:y:" + decode(c, 4))
        add(present, month, lambda c: "t:m:" + decode(c, 2))
        add(present, day, lambda c: "t:d:" + decode(c, 2))
        pair = (np.minimum(day, month) << np.uint64(2 * bits)) | np.maximum(day, month)
        half = (1 << (2 * bits)) - 1
        add(present, pair, lambda c: f"t:dm:{decode(c >> (2 * bits), 2)}:{decode(c & half, 2)}")
    else:
        # Whole-value tokens: one per distinct value, so plain Python is cheap.
        extra: list[tuple[int, str]] = []
        if n == 1:
            extra += [(r, "t:" + values[r]) for r in present.tolist()]
        if spec.name == "postcode":
            extra += [
                (r, "t:out:" + values[r][:-3])
                for r in present.tolist()
                if is_uk_postcode(values[r])
            ]
        if extra:
            rows.append(np.array([r for r, _ in extra], dtype=np.int64))
            ids.append(
                np.array([index.setdefault(t, len(index)) for _, t in extra], dtype=np.int64)
            )
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    return (
        np.concatenate(rows).astype(np.int64, copy=False),
        np.concatenate(ids),
        list(index),
    )


def _token_positions(keyed: Sequence[tuple[bytes, str]], k: int, filter_bits: int) -> np.ndarray:
    """The k bit positions of each (key, token) pair, as one flat ``int32`` array.

    A token's positions are independent 32-bit big-endian slices of
    HMAC-SHA256(key, token || 0x00 || counter), counter 0, 1, ..., reduced
    mod ``filter_bits`` (bias below 2**-19 for filters up to 8192 bits).
    Slicing rather than double hashing (h1 + i*h2) on purpose: double
    hashing's arithmetic structure is what Kroll and Steinmetzer (2015)
    exploited to decode CLKs without the key, while independent slices leave
    no such pattern. The digests are joined into one buffer so that slicing
    and reduction run in numpy rather than per token.
    """
    blocks = -(-k // 8)  # HMAC outputs per token, 8 slices each
    suffixes = [b"\x00" + bytes([counter]) for counter in range(blocks)]
    digest = hmac.digest
    buffer = b"".join(
        digest(key, message + suffix, "sha256")
        for key, message in ((key, token.encode("utf-8")) for key, token in keyed)
        for suffix in suffixes
    )
    words = np.frombuffer(buffer, dtype=">u4").reshape(len(keyed), 8 * blocks)[:, :k]
    return (words % np.uint32(filter_bits)).astype(np.int32).reshape(-1)


def _tokeniser(spec: FieldSpec) -> Callable[[str], list[str]]:
    """The function splitting one field's value into the tokens that get hashed.

    Token kinds are prefixed ("g:" for n-grams, "t:" for whole tokens) so that a
    whole-token and an n-gram of the same text can never share positions.
    """
    n = spec.ngram
    if spec.name == "date_of_birth":
        return lambda v: _date_tokens(v, n)
    if spec.name == "postcode":
        return lambda v: _postcode_tokens(v, n)
    if spec.name in ("first_name", "last_name", "locality"):
        # Spaces are removed before taking n-grams so "mary ann", "maryann" and
        # "mary-ann" (normalised to "mary ann") encode identically.
        return lambda v: _ngrams(v.replace(" ", ""), n)
    if spec.name == "address":
        return lambda v: _address_tokens(v, n)
    return lambda v: _ngrams(v, n)


def _address_tokens(address: str, n: int) -> list[str]:
    # N-grams of the compacted line tolerate typos and spacing; each number
    # (house, flat) as a whole token makes "12" and "21" differ as a clerk
    # would see them, while a moved family keeps its street's n-grams apart.
    if not address:
        return []
    tokens = _ngrams(address.replace(" ", ""), n) if n > 1 else ["t:" + address]
    return [*tokens, *("t:no:" + w for w in address.split() if w.isdigit())]


def _ngrams(value: str, n: int) -> list[str]:
    if not value:
        return []
    if n == 1:
        return ["t:" + value]
    padded = "_" + value + "_"
    if len(padded) < n:
        return ["g:" + padded]
    return ["g:" + padded[i : i + n] for i in range(len(padded) - n + 1)]


def _date_tokens(iso: str, n: int) -> list[str]:
    # Bigrams of the ISO string tolerate a single mistyped digit; the y/m/d tokens
    # make year, month and day count as units; "dm" (day and month in sorted
    # order) is shared by a date and its day/month transposition, so the most
    # common date error keeps most of the field's bits.
    if not iso:
        return []
    year, month, day = iso[:4], iso[5:7], iso[8:10]
    tokens = _ngrams(iso, n) if n > 1 else []
    tokens += [
        "t:y:" + year,
        "t:m:" + month,
        "t:d:" + day,
        "t:dm:" + ":".join(sorted((day, month))),
    ]
    return tokens


def _postcode_tokens(postcode: str, n: int) -> list[str]:
    # The outward code (district, e.g. "SW1A") as a whole token rewards a family
    # that moved within its district or a typo in the inward code.
    if not postcode:
        return []
    tokens = _ngrams(postcode, n) if n > 1 else ["t:" + postcode]
    if not is_uk_postcode(postcode):
        return tokens  # another country's code: no outward code to add
    return [*tokens, "t:out:" + postcode[:-3]]
