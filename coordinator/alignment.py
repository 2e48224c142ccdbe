"""Aligning one hop's ciphertexts to the next node's tokens through the linkage graph."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.planner import Hop
from coordinator.store import CoordinatorStore
from headcount.crypto import paillier
from headcount.crypto.paillier import bulk_workers
from headcount.linkage.households import household_groups


def align(
    store: CoordinatorStore,
    household_cap: int,
    epoch_id: str,
    key: paillier.PublicKey,
    prev_party: str,
    current: dict[bytes, int],
    hop: Hop,
    next_tokens: Sequence[bytes],
) -> list[int]:
    """Ciphertexts for each of the next node's tokens, in its token order.

    Linked positions carry the previous hop's ciphertext (for a household
    link: the sum over the resolved household, of one raw key's records),
    re-randomised; every other position a fresh E(0), so the next node
    cannot tell which of its records are linked.
    """
    source: dict[bytes, int] = {}
    if hop.link == "person":
        link = store.linked(epoch_id, prev_party, hop.party)
        source = {t: current[link[t]] for t in next_tokens if t in link}
    else:
        # Households as resolved through person links; each sums the
        # records of one raw key, so a sum is still a 0/1 flag
        # (headcount.linkage.households.household_groups).
        prev_raw = store.households(epoch_id, prev_party)
        prev_resolved = store.resolved_households(epoch_id, prev_party, prev_raw)
        # A person's further records (dedup) are not counted again.
        again = store.duplicates(epoch_id, prev_party)
        prev_tokens = [t for t in current if t in prev_raw and t not in again]
        groups = household_groups(
            [prev_raw[t] for t in prev_tokens],
            [prev_resolved.get(t, b"") for t in prev_tokens],
        )
        sums = {
            hh: paillier.add_all(key, [current[prev_tokens[i]] for i in rows])
            for hh, rows in groups.items()
        }
        next_hh = store.resolved_households(epoch_id, hop.party)
        # At most household_cap of the next party's records per household
        # carry its flag (the first in token order, which is random), so
        # one flagged adult moves a count by at most the cap the query's
        # sensitivity is charged for (headcount.privacy.sensitivity).
        cap = household_cap
        taken: dict[bytes, int] = {}
        for t in next_tokens:
            hh = next_hh.get(t)
            if hh in sums and taken.get(hh, 0) < cap:
                taken[hh] = taken.get(hh, 0) + 1
                source[t] = sums[hh]
    positions = [i for i, t in enumerate(next_tokens) if t in source]
    encryptor = paillier.shared_encryptor(key)
    workers = bulk_workers(len(next_tokens))
    aligned = encryptor.encrypt_zeros(len(next_tokens) - len(positions), workers=workers)
    fresh = encryptor.rerandomise([source[next_tokens[i]] for i in positions], workers=workers)
    out: list[int] = [0] * len(next_tokens)
    zeros = iter(aligned)
    linked = dict(zip(positions, fresh, strict=True))
    for i in range(len(next_tokens)):
        out[i] = linked[i] if i in linked else next(zeros)
    return out
