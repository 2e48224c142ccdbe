"""One household per person: resolution through person links, and the groups a
household hop sums (headcount.linkage.households)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headcount import synth
from headcount.linkage.address import household_keys
from headcount.linkage.clk import encode_clks
from headcount.linkage.engine import link_parties
from headcount.linkage.households import (
    household_flag_sources,
    household_groups,
    resolve_households,
)
from headcount.linkage.matchkeys import match_keys
from headcount.linkage.normalise import normalise_postcode
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from party_node.data import load_department_file

K1, K2, K3, K4 = (bytes([i]) * 16 for i in (1, 2, 3, 4))
PARTIES = ("a", "b", "c")


def _members(*clusters: tuple[int, int, int]) -> np.ndarray:
    return np.array(clusters, dtype=np.int64).reshape(-1, len(PARTIES))


def test_most_of_a_persons_records_decide() -> None:
    # One person in a, b and c: two records at K1, one (out of date) at K2.
    keys = {"a": [K1], "b": [K2], "c": [K1]}
    got = resolve_households(PARTIES, _members((0, 0, 0)), keys)
    assert got == {"a": [K1], "b": [K1], "c": [K1]}


def test_a_tie_goes_to_the_key_other_people_share() -> None:
    # Person 0: a at K1 (where nobody else lives), b at K2, where person 1
    # (b's row 1, unlinked) also lives. K1 < K2, so order alone would pick K1.
    keys = {"a": [K1], "b": [K2, K2], "c": []}
    got = resolve_households(PARTIES, _members((0, 0, -1)), keys)
    assert got == {"a": [K2], "b": [K2, K2], "c": []}
    # With a second person at K1 the tie on others too goes to the smaller key.
    keys = {"a": [K1, K1], "b": [K2, K2], "c": []}
    got = resolve_households(PARTIES, _members((0, 0, -1)), keys)
    assert got == {"a": [K1, K1], "b": [K1, K2], "c": []}


def test_unlinked_records_keep_their_key_and_a_keyless_record_borrows_its_persons() -> None:
    keys = {"a": [K1, b"", b""], "b": [K3, K4], "c": [b""]}
    # Cluster 0: a0 (K1) and b0 (K3) -> tie, no others -> K1. Cluster 1: a1
    # (no key) with b1 (K4) -> K4. a2 and c0: unlinked, no key.
    got = resolve_households(PARTIES, _members((0, 0, -1), (1, 1, -1)), keys)
    assert got == {"a": [K1, K4, b""], "b": [K1, K4], "c": [b""]}


@given(st.data())
def test_the_result_depends_on_clusters_and_keys_not_on_order(data: st.DataObject) -> None:
    pool = [K1, K2, K3, K4, b""]
    sizes = {p: data.draw(st.integers(1, 6), label=p) for p in PARTIES}
    keys = {
        p: data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        for p, n in sizes.items()
    }
    # Random clusters: each cluster takes at most one unused row per party.
    free = {p: list(range(n)) for p, n in sizes.items()}
    rows = []
    for _ in range(data.draw(st.integers(0, 6))):
        row = []
        for p in PARTIES:
            take = free[p] and data.draw(st.booleans())
            row.append(free[p].pop(data.draw(st.integers(0, len(free[p]) - 1))) if take else -1)
        if max(row) >= 0:  # a cluster has at least one record
            rows.append(row)
    members = np.array(rows, dtype=np.int64).reshape(-1, 3)
    got = resolve_households(PARTIES, members, keys)
    # Cluster order and party order do not matter.
    perm = data.draw(st.permutations(range(len(members))))
    shuffled = members[list(perm)] if len(members) else members
    assert resolve_households(PARTIES, shuffled, keys) == got
    reordered = tuple(reversed(PARTIES))
    assert resolve_households(reordered, shuffled[:, ::-1], keys) == got
    # Every record of a cluster gets the same key, one its cluster carries.
    for row in members:
        resolved = {got[p][r] for p, r in zip(PARTIES, row, strict=True) if r >= 0}
        carried = {keys[p][r] for p, r in zip(PARTIES, row, strict=True) if r >= 0} - {b""}
        assert len(resolved) == 1
        assert resolved <= carried or (not carried and resolved == {b""})
    # An unlinked record keeps its own key.
    linked = {(p, r) for row in members for p, r in zip(PARTIES, row, strict=True) if r >= 0}
    for p in PARTIES:
        for r, key in enumerate(keys[p]):
            if (p, r) not in linked:
                assert got[p][r] == key


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly the linked parties"):
        resolve_households(PARTIES, _members(), {"a": [], "b": []})
    with pytest.raises(ValueError, match="past its records"):
        resolve_households(PARTIES, _members((3, -1, -1)), {"a": [K1], "b": [], "c": []})
    with pytest.raises(ValueError, match="16 bytes"):
        resolve_households(PARTIES, _members(), {"a": [b"short"], "b": [], "c": []})
    with pytest.raises(ValueError, match="one column per party"):
        resolve_households(PARTIES, np.zeros((1, 2), dtype=np.int64), {p: [] for p in PARTIES})
    with pytest.raises(ValueError, match="one entry per row"):
        household_groups([K1], [])


@given(
    st.lists(st.tuples(st.sampled_from([K1, K2, K3, b""]), st.sampled_from([K1, K2, K3, b""]))),
    st.randoms(use_true_random=False),
)
def test_a_household_sum_stays_a_flag(pairs: list[tuple[bytes, bytes]], rnd: object) -> None:
    """If the origin sets at most one 1 per raw key, every group sums to 0 or 1."""
    raw = [r for r, _ in pairs]
    resolved = [h for _, h in pairs]
    groups = household_groups(raw, resolved)
    # Worst case for the sum: a 1 on one record of every raw key.
    first: dict[bytes, int] = {}
    for row, r in enumerate(raw):
        if r:
            first.setdefault(r, row)
    flags = [int(first.get(r) == row) for row, r in enumerate(raw)]
    seen: set[int] = set()
    for hh, rows in groups.items():
        assert sum(flags[i] for i in rows) <= 1
        assert {resolved[i] for i in rows} == {hh}
        assert len({raw[i] for i in rows}) == 1
        assert not seen & set(rows)
        seen |= set(rows)
        # The chosen raw key has the most of this household's records.
        counts = Counter(raw[i] for i, h in enumerate(resolved) if h == hh and raw[i])
        assert len(rows) == max(counts.values())
    # Every resolved household with a keyed record gets a group.
    assert set(groups) == {h for r, h in pairs if r and h}


def test_resolution_places_moved_records_on_synthetic_data(tmp_path: Path) -> None:
    """On a synthetic population, with the engine's own person links, more
    records carry their person's true household key after resolution."""
    synth.generate_population(3000, 5, tmp_path)
    secret = bytes(range(32))
    schema = DEFAULT_LINKAGE_SCHEMA
    names = ("education", "health", "immigration", "justice")
    data = {n: load_department_file(tmp_path / f"{n}.csv", n, synth.REFERENCE_DATE) for n in names}
    raw = {
        n: household_keys(
            d.addresses,
            [i.postcode for i in d.identities],
            secret,
            d.attributes["local_authority"].astype(str).tolist(),
        )
        for n, d in data.items()
    }
    result = link_parties(
        {n: encode_clks(d.identities, secret, schema.clk) for n, d in data.items()},
        schema.threshold,
        floor=schema.candidate_floor,
        match_keys={
            n: match_keys(d.identities, secret, schema.match_keys) for n, d in data.items()
        },
    )
    resolved = resolve_households(result.parties, result.members, raw)
    truth = pd.read_csv(tmp_path / "ground_truth.csv", dtype=str, keep_default_na=False)
    true_key = dict(
        zip(
            truth["person_id"],
            household_keys(
                truth["address"], [normalise_postcode(p) for p in truth["postcode"]], secret
            ),
            strict=True,
        )
    )
    right_raw = right_resolved = outvoted = total = 0
    for n in names:
        ids = pd.read_csv(tmp_path / f"{n}.csv", dtype=str, usecols=["record_id"])["record_id"]
        person = dict(zip(truth[f"{n}_id"], truth["person_id"], strict=True))
        for row, rid in enumerate(ids):
            key = true_key[person[rid]]
            total += 1
            right_raw += raw[n][row] == key
            right_resolved += resolved[n][row] == key
            outvoted += raw[n][row] == key != resolved[n][row]
    # Moves put about 5% of each department's records at another address, and
    # some have no postcode. Persons seen in one department only cannot be
    # corrected; measured (seed 5): 214 wrong keys, 75 of them corrected.
    assert right_raw / total < 0.95
    assert right_resolved - right_raw >= 0.25 * (total - right_raw)
    assert outvoted <= 0.005 * total  # a right key is rarely overruled


@given(
    st.lists(st.tuples(st.sampled_from([K1, K2, K3, b""]), st.sampled_from([K1, K2, K3, b""]))),
)
def test_each_raw_flag_reaches_one_household(pairs: list[tuple[bytes, bytes]]) -> None:
    """A raw household's flag is handed to one resolved household at most, the one
    whose group it is with the most records; every source is a group's raw key."""
    raw = [r for r, _ in pairs]
    resolved = [h for _, h in pairs]
    sources = household_flag_sources(raw, resolved)
    groups = household_groups(raw, resolved)
    assert len(set(sources.values())) == len(sources)
    for h, r in sources.items():
        assert raw[groups[h][0]] == r
    for h, rows in groups.items():
        r = raw[rows[0]]
        if h not in sources:
            # Another household took r: it holds at least as many of r's records.
            (other,) = [g for g, src in sources.items() if src == r]
            assert len(groups[other]) >= len(rows)
    # Every raw key that is some group's key has exactly one household.
    assert set(sources.values()) == {raw[rows[0]] for rows in groups.values()}


def test_a_raw_flag_shared_by_two_households_goes_to_the_larger() -> None:
    # K1's records resolve to K1 (two of them) and K2 (one): K2 takes no flag.
    sources = household_flag_sources([K1, K1, K1], [K1, K1, K2])
    assert sources == {K1: K1}
