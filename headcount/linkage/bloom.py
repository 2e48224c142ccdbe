"""The plain Bloom filters of a CLK, before hardening (`bloom_filters`).

Encoding works on distinct values, not records: a department's records share
a few thousand first names and surnames and a few dozen n-grams per field,
so the per-record work is one dictionary-free pass (pandas.factorize, in C)
and the numba kernel that sets the bits. For each field:

1. factorize the column (with its salt, when salted) into *items*;
2. split each distinct value into tokens, vectorised over a code-point
   matrix of the distinct values (`clk_tokens.tokenise`);
3. hash each distinct (salt, token) pair once with HMAC (`token_positions`);
4. hand the kernel the ragged tables record -> item -> tokens -> positions.
"""

from __future__ import annotations

import hmac
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from headcount.linkage import _kernel
from headcount.linkage.clk_schema import SALT_SOURCES, ClkSchema, FieldSpec
from headcount.linkage.clk_tokens import tokenise
from headcount.linkage.normalise import Identity

__all__ = ["bloom_filters", "token_positions"]


def bloom_filters(
    identities: Sequence[Identity], schema: ClkSchema, keys: dict[str, bytes]
) -> np.ndarray:
    """Each identity's Bloom filter under ``schema``, before any hardening.

    ``keys``: one HMAC key per schema field (`clk.field_keys`). Returns a
    ``uint8`` array of shape ``(len(identities), schema.filter_bits // 8)``;
    empty fields set no bits, so an all-empty identity gives zeros.
    """
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
    return plain


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
    token_rows, token_ids, tokens = tokenise(spec, uniques)
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
    positions = token_positions(
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


def token_positions(keyed: Sequence[tuple[bytes, str]], k: int, filter_bits: int) -> np.ndarray:
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
