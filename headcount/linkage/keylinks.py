"""Links from match-keys: exact, one-to-one agreement on keyed match-keys, strictest level first.

The keys (`headcount.linkage.matchkeys`) are compared as 8-byte digests
(`key_digests`, `wire_digests`); a key value held by more than one record on
a side is never used to link (see `match_by_keys`). `agreement_levels` asks
only whether two records agree, for the quality estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage.matchkeys import KEY_BYTES

__all__ = [
    "DigestIndex",
    "KeyLinks",
    "MatchKeyLevels",
    "agreement_levels",
    "index_digests",
    "key_digests",
    "link_by_key_digests",
    "link_indexed",
    "match_by_keys",
    "wire_digests",
]

log = logging.getLogger(__name__)

MatchKeyLevels = Sequence[Sequence[bytes | None]]  # per level, per record; None: no key


def key_digests(keys: MatchKeyLevels | np.ndarray) -> np.ndarray:
    """Match-keys as a ``(levels, records)`` ``uint64`` array; 0 means no key.

    Each 16-byte key is cut to its first 8 bytes (read little-endian): keys
    are HMAC outputs, so two distinct keys share 8 bytes with probability
    2**-64, and a level of a million records on each side has a chance of
    about 1e-7 of one such collision. A key whose first 8 bytes are all zero
    (probability 2**-64) is read as 1, so 0 keeps meaning "no key". An array
    is checked and returned as is.

    Raises:
        ValueError: levels of unequal length, a key that is not 16 bytes, or
            an array that is not 2-D ``uint64``.
    """
    if isinstance(keys, np.ndarray):
        if keys.ndim != 2 or keys.dtype != np.uint64:
            raise ValueError("match-key digests must be a 2-D uint64 array")
        return keys
    n = _records(keys, "match-key")
    out = np.zeros((len(keys), n), dtype=np.uint64)
    absent = bytes(KEY_BYTES)
    for level, values in enumerate(keys):
        if not n:
            continue
        if any(k is not None and len(k) != KEY_BYTES for k in values):
            raise ValueError(f"match-keys must be {KEY_BYTES} bytes")
        raw = np.frombuffer(b"".join(absent if k is None else k for k in values), dtype="<u8")
        present = np.fromiter((k is not None for k in values), dtype=np.bool_, count=n)
        out[level] = _first_words(raw.reshape(n, KEY_BYTES // 8), present)
    return out


def wire_digests(raw: bytes, records: int, levels: int) -> np.ndarray:
    """`key_digests` of match-keys as the wire carries them: per record, ``levels``
    16-byte keys back to back, all zeros meaning "no key".

    Builds the ``(levels, records)`` array straight from the bytes, with no
    Python object per key (a million records carry seven million keys).

    Raises:
        ValueError: ``raw`` is not ``records * levels`` keys long.
    """
    if len(raw) != records * levels * KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes are not {records} x {levels} match-keys")
    words = np.frombuffer(raw, dtype="<u8").reshape(records, levels, KEY_BYTES // 8)
    present: np.ndarray = np.any(words, axis=2)
    digests = np.empty((levels, records), dtype=np.uint64)
    for level in range(levels):
        digests[level] = _first_words(words[:, level, :], present[:, level])
    return digests


def _first_words(words: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each key's first 8 bytes (rows of ``words``); 1 for a present key whose
    first 8 bytes are zero, 0 for an absent one."""
    first = words[:, 0].copy()
    first[present & (first == 0)] = 1
    first[~present] = 0
    return first


@dataclass(frozen=True, slots=True)
class KeyLinks:
    """Links found by match-keys, as parallel ``int64`` arrays sorted by
    (level, left): row in the left party, row in the right party, level index."""

    left: np.ndarray
    right: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return len(self.left)


def link_by_key_digests(left: np.ndarray, right: np.ndarray) -> KeyLinks:
    """`match_by_keys` on `key_digests` arrays, with sorts and joins in numpy.

    Args:
        left, right: ``(levels, records)`` ``uint64`` arrays, 0 for no key,
            with the same number of levels.

    Raises:
        ValueError: the sides have different numbers of levels or are not
            2-D ``uint64`` arrays.
    """
    return link_indexed(index_digests(left), index_digests(right))


@dataclass(frozen=True, slots=True)
class DigestIndex:
    """One party's match-key digests, sorted for joining: per level, the key
    values held by exactly one record (sorted) and that record's row.

    A party in several pairs is indexed once (`index_digests`) and joined
    with each partner (`link_indexed`): its sorts are not repeated per pair,
    which made the joins grow faster than the records (13x for 10x at a
    million records a party).
    """

    records: int
    keys: tuple[np.ndarray, ...]
    rows: tuple[np.ndarray, ...]


def index_digests(digests: np.ndarray) -> DigestIndex:
    """Index a ``(levels, records)`` `key_digests` array for `link_indexed`.

    Raises:
        ValueError: as `key_digests`.
    """
    digests = key_digests(digests)
    levels = [_unique_digests(digests[level]) for level in range(digests.shape[0])]
    return DigestIndex(digests.shape[1], tuple(k for k, _ in levels), tuple(r for _, r in levels))


def link_indexed(left: DigestIndex, right: DigestIndex) -> KeyLinks:
    """`link_by_key_digests` on two indexed parties.

    Raises:
        ValueError: the sides have different numbers of levels.
    """
    if len(left.keys) != len(right.keys):
        raise ValueError(
            f"left has {len(left.keys)} match-key levels and right has {len(right.keys)}"
        )
    linked_left = np.zeros(left.records, dtype=np.bool_)
    linked_right = np.zeros(right.records, dtype=np.bool_)
    found_left: list[np.ndarray] = []
    found_right: list[np.ndarray] = []
    found_level: list[np.ndarray] = []
    for level, (keys_l, rows_l, keys_r, rows_r) in enumerate(
        zip(left.keys, left.rows, right.keys, right.rows, strict=True)
    ):
        # Both sides sorted and unique: a binary search of each left key in
        # the right keys finds the shared ones in key order, as intersect1d
        # would, without concatenating and re-sorting both.
        if len(keys_r):
            at = np.minimum(np.searchsorted(keys_r, keys_l), len(keys_r) - 1)
            hit = keys_r[at] == keys_l
            at_l, at_r = np.flatnonzero(hit), at[hit]
        else:
            at_l = at_r = np.zeros(0, dtype=np.int64)
        i, j = rows_l[at_l], rows_r[at_r]
        free = ~linked_left[i] & ~linked_right[j]
        i, j = i[free], j[free]
        # Each unique key appears once per side, so links found at one level
        # never share a record; mark them after the pass.
        linked_left[i] = True
        linked_right[j] = True
        order = np.argsort(i, kind="stable")
        found_left.append(i[order])
        found_right.append(j[order])
        found_level.append(np.full(len(i), level, dtype=np.int64))
    empty = np.zeros(0, dtype=np.int64)
    links = KeyLinks(
        np.concatenate(found_left) if found_left else empty,
        np.concatenate(found_right) if found_right else empty,
        np.concatenate(found_level) if found_level else empty,
    )
    log.debug("match-keys linked %d of %d x %d records", len(links), left.records, right.records)
    return links


def _unique_digests(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted key values held by exactly one record, that record's row), no-key excluded."""
    rows = np.flatnonzero(keys)
    # Not a stable sort: records sharing a key are all dropped below, so their
    # order does not matter (introsort is 1.5-2x faster on a million keys).
    order = np.argsort(keys[rows])
    rows = rows[order]
    values = keys[rows]
    if not len(values):
        return values, rows
    alone = np.ones(len(values), dtype=np.bool_)
    same = values[1:] == values[:-1]
    alone[1:] &= ~same
    alone[:-1] &= ~same
    return values[alone], rows[alone]


def match_by_keys(
    left_keys: MatchKeyLevels | np.ndarray,
    right_keys: MatchKeyLevels | np.ndarray,
) -> list[tuple[int, int, int]]:
    """One-to-one exact links from two parties' match-keys, strictest level first.

    At each level, in order, a left and a right record are linked when they
    hold the same key, neither is linked yet, and that key value is held by
    exactly one record on each side. Uniqueness is judged over all of a side's
    records, linked or not: a key shared by two records of one party (twins
    with the same initial, a duplicated record) is not evidence of which one a
    record of the other party is, so it is never used at that level. Keys are
    compared as `key_digests` (their first 8 bytes); the engine calls
    `link_by_key_digests` directly.

    Args:
        left_keys: per level, the left party's keys (``None`` for no key), as
            returned by `match_keys`, or their `key_digests`.
        right_keys: the right party's keys, with the same number of levels.

    Returns:
        ``(left index, right index, level index)`` triples sorted by level, then
        left index; no left and no right index appears twice.

    Raises:
        ValueError: the sides have different numbers of levels, or a side's
            levels hold different numbers of records.
    """
    if len(left_keys) != len(right_keys):
        raise ValueError(
            f"left has {len(left_keys)} match-key levels and right has {len(right_keys)}"
        )
    links = link_by_key_digests(key_digests(left_keys), key_digests(right_keys))
    return list(zip(links.left.tolist(), links.right.tolist(), links.level.tolist(), strict=True))


def _records(keys: Sequence[Sequence[bytes | None]], side: str) -> int:
    sizes = {len(level) for level in keys}
    if len(sizes) > 1:
        raise ValueError(f"{side} match-key levels hold different numbers of records")
    return sizes.pop() if sizes else 0


def agreement_levels(
    left_keys: Sequence[Sequence[bytes | None]],
    right_keys: Sequence[Sequence[bytes | None]],
    left: np.ndarray,
    right: np.ndarray,
) -> np.ndarray:
    """For each (left[p], right[p]) pair, the strictest level whose keys agree.

    Used as a second feature when estimating match quality (`quality`):
    unlike `match_by_keys`, shared key values count here, since the question
    is only whether the two records agree.

    Args:
        left_keys, right_keys: per-level keys of each party, as from `match_keys`.
        left, right: equal-length integer arrays of row indices into each side.

    Returns:
        An ``int64`` array, one entry per pair: the level index, or -1 when the
        two records agree on no level.

    Raises:
        ValueError: the sides have different numbers of levels, the index
            arrays differ in length, or an index is out of range.
    """
    if len(left_keys) != len(right_keys):
        raise ValueError("left and right have different numbers of match-key levels")
    n_left, n_right = _records(left_keys, "left"), _records(right_keys, "right")
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    if left.shape != right.shape or left.ndim != 1:
        raise ValueError("left and right must be 1-D arrays of equal length")
    if len(left) and (
        left.min() < 0 or right.min() < 0 or left.max() >= n_left or right.max() >= n_right
    ):
        raise ValueError("pair indices out of range")
    out = np.full(len(left), -1, dtype=np.int64)
    # Strictest level last, so that its agreement overwrites looser ones.
    for level in range(len(left_keys) - 1, -1, -1):
        left_ids, right_ids = _key_ids(left_keys[level], right_keys[level])
        a, b = left_ids[left], right_ids[right]
        out[(a >= 0) & (a == b)] = level
    return out


def _key_ids(
    left: Sequence[bytes | None], right: Sequence[bytes | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Small-int ids for key values, shared by both sides; -1 for no key."""
    ids: dict[bytes, int] = {}

    def encode(keys: Sequence[bytes | None]) -> np.ndarray:
        return np.fromiter(
            (-1 if k is None else ids.setdefault(k, len(ids)) for k in keys),
            dtype=np.int64,
            count=len(keys),
        )

    return encode(left), encode(right)
