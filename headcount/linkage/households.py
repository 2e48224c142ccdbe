"""One household per person: resolve each record's address through its person links.

A department records a person at one address, and sometimes it is out of date
(the person moved and this department has not heard) or missing. The node's
keyed household key (`headcount.linkage.address`) is then the wrong one, and a
child whose school still holds the old address is not placed with the adults
the health service records at the new one. The coordinator already holds, for
every record, its keyed household key and its person cluster (the records of
the same person in other departments); this module picks one household key per
person from those, so every record of a person is placed in the same household.

The rule, per person cluster (an unlinked record is a cluster of one):

1. the key most of the person's records carry;
2. on a tie, the key more *other* people's records carry: a real household is
   shared, while an out-of-date address is usually somewhere the person's
   household no longer lives (the synthetic data put such records at a random
   address; in real data it is the old home, which a new family may share);
3. then the smaller key, so the choice never depends on the order of input.

A cluster whose records carry no key at all keeps none. Nothing here needs an
address: keys are opaque 16-byte digests, and neither the rule nor its result
leaves the coordinator (nodes still receive one ciphertext per record, see
`coordinator.Coordinator._align`).

`household_groups` turns the resolved keys into the groups a household hop
serves. The origin of a household chain sends one 0/1 flag per *raw*
household key of its own (1 if any of its records there passes), signed, and
the coordinator only places those flags (`headcount.crypto.signed_sets`); a
resolved household may gather records of several raw keys (a person whose
record there was out of date), whose flags could then add up to 2. Each
resolved household therefore takes the flag of one raw key only (the raw key
most of its records carry; on a tie, the resolved key itself, then the
smaller key), and `household_flag_sources` gives each raw key's flag to one
resolved household only (the one holding most of its records), so a flag
reaches at most `household_cap` records of the next node and the query's
sensitivity holds. The flags of the records left out are lost for that
household; the benchmark counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from headcount.linkage.address import HOUSEHOLD_KEY_BYTES

__all__ = ["household_flag_sources", "household_groups", "resolve_households"]


def resolve_households(
    parties: Sequence[str],
    members: np.ndarray,
    keys: Mapping[str, Sequence[bytes]],
) -> dict[str, list[bytes]]:
    """Each record's household key, chosen from its person cluster's records.

    Args:
        parties: party names, the column order of ``members``.
        members: ``(clusters, len(parties))`` row indices, -1 where a cluster
            has no record of that party (``LinkResult.members``).
        keys: per party, each row's raw household key (``b""`` when it has
            none), as the nodes sent them.

    Returns:
        Per party, each row's resolved key (``b""`` when neither the record
        nor any record of its person has a key).

    Raises:
        ValueError: a party of ``keys`` missing from ``parties`` or the other
            way round, a member row out of range, or a key of the wrong length.
    """
    parties = list(parties)
    if sorted(parties) != sorted(keys):
        raise ValueError("keys must be given for exactly the linked parties")
    if members.ndim != 2 or members.shape[1] != len(parties):
        raise ValueError("members must have one column per party")
    sizes = [len(keys[p]) for p in parties]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])

    # Cluster of every record; an unlinked record is its own cluster.
    clusters = len(members)
    cluster = np.arange(clusters, clusters + total, dtype=np.int64)
    for col in range(len(parties)):
        rows = members[:, col]
        present = rows >= 0
        if present.any() and int(rows[present].max()) >= sizes[col]:
            raise ValueError(f"{parties[col]}: a cluster names a row past its records")
        cluster[offsets[col] + rows[present]] = np.flatnonzero(present)

    flat, has_key = _pack_keys([k for p in parties for k in keys[p]])
    if not has_key.any():
        return {p: [b""] * n for p, n in zip(parties, sizes, strict=True)}
    # Keys as small integers; np.unique sorts, so a smaller id is a smaller key.
    uniq, key_id = np.unique(flat[has_key], return_inverse=True)
    frame = pd.DataFrame({"cluster": cluster[has_key], "key": key_id.astype(np.int64)})
    votes = frame.groupby(["cluster", "key"], sort=False).size().rename("votes").reset_index()
    # Other people at a key: distinct clusters there, less the cluster itself.
    people = votes.groupby("key", sort=False)["cluster"].size()
    votes["others"] = people.reindex(votes["key"]).to_numpy() - 1
    votes = votes.sort_values(
        ["cluster", "votes", "others", "key"], ascending=[True, False, False, True], kind="stable"
    )
    chosen = votes.drop_duplicates("cluster", keep="first")
    pick = np.full(clusters + total, -1, dtype=np.int64)
    pick[chosen["cluster"].to_numpy()] = chosen["key"].to_numpy()

    resolved = pick[cluster]
    key_bytes = [bytes(k) for k in uniq]
    out: dict[str, list[bytes]] = {}
    for col, p in enumerate(parties):
        ids = resolved[offsets[col] : offsets[col + 1]].tolist()
        out[p] = [key_bytes[i] if i >= 0 else b"" for i in ids]
    return out


def household_groups(raw: Sequence[bytes], resolved: Sequence[bytes]) -> dict[bytes, list[int]]:
    """Per resolved household, the rows whose flags a household hop sums.

    ``raw`` and ``resolved`` are one party's keys per row (``b""`` for none).
    Each group holds rows of a single raw key, so if the party set at most
    one 1 per raw key, every group's sum is 0 or 1 (see the module notes).
    """
    if len(raw) != len(resolved):
        raise ValueError("raw and resolved keys must have one entry per row")
    by_pair: dict[tuple[bytes, bytes], list[int]] = {}
    for row, (r, h) in enumerate(zip(raw, resolved, strict=True)):
        if r and h:
            by_pair.setdefault((h, r), []).append(row)
    best: dict[bytes, tuple[int, bool, bytes]] = {}
    for (h, r), rows in by_pair.items():
        # Most rows first, then the resolved key's own raw key, then the smaller.
        rank = (-len(rows), r != h, r)
        if h not in best or rank < best[h]:
            best[h] = rank
    return {h: by_pair[(h, rank[2])] for h, rank in best.items()}


def household_flag_sources(raw: Sequence[bytes], resolved: Sequence[bytes]) -> dict[bytes, bytes]:
    """Per resolved household, the raw key whose flag it takes.

    ``raw`` and ``resolved`` as for `household_groups`. Each resolved household
    takes the raw key of its group; a raw key that is the group of several
    resolved households goes to the one with most of its records (then the
    smaller resolved key), so no flag is counted in two households.
    """
    groups = household_groups(raw, resolved)
    owner: dict[bytes, bytes] = {}
    for h, rows in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        owner.setdefault(raw[rows[0]], h)
    return {h: r for r, h in owner.items()}


def _pack_keys(keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Keys as a ``(n,)`` array of 16-byte void scalars, and which rows have one."""
    has_key = np.fromiter((len(k) > 0 for k in keys), dtype=bool, count=len(keys))
    bad = {len(k) for k in keys if k} - {HOUSEHOLD_KEY_BYTES}
    if bad:
        raise ValueError(f"household keys must be {HOUSEHOLD_KEY_BYTES} bytes, got {sorted(bad)}")
    blank = bytes(HOUSEHOLD_KEY_BYTES)
    buf = b"".join(k or blank for k in keys)
    flat = np.frombuffer(buf, dtype=np.dtype((np.void, HOUSEHOLD_KEY_BYTES)))
    return flat, has_key
