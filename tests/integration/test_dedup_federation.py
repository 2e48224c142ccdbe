"""A department file holding several records of some people, through the federation.

With the schema's ``[linkage] dedup = true``, the coordinator finds each
department's own records of one person from that department's encodings alone,
links and counts each person once: queries count people, not records. The
policy releases exact counts (as in test_query_chains.py), so differences from
the truth come from linkage only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from harness import Federation, make_federation

from headcount.domain.query import QuerySpec, unlinked_group
from headcount.linkage.normalise import normalise_date

PURPOSE = "Check that duplicates within a department are counted once."
EPSILON = 12.5


def _add_duplicates(fed: Federation) -> dict[str, str]:
    """Give every fourth pupil a second record, as a re-registration at a new
    school would (a typo in the first name, the date in another style, another
    record id); returns new record id -> the original's."""
    path = fed.directory / "data" / "education.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(3)
    extra = []
    for i in range(0, len(frame), 4):
        row = frame.iloc[i].copy()
        name = row.first_name
        if len(name) > 4:
            k = int(rng.integers(1, len(name) - 2))
            row.first_name = name[:k] + name[k + 1] + name[k] + name[k + 2 :]
        iso = normalise_date(row.date_of_birth)
        row.date_of_birth = f"{iso[8:10]}/{iso[5:7]}/{iso[:4]}" if iso else ""
        row.record_id = f"EDU-9{i:05d}"
        extra.append(row)
    pd.concat([frame, pd.DataFrame(extra)]).to_csv(path, index=False)
    return {
        str(r.record_id): str(frame.record_id.iloc[i])
        for i, r in zip(range(0, len(frame), 4), extra, strict=True)
    }


@pytest.fixture(scope="module")
def deduped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Federation, dict[str, str]]]:
    fed = make_federation(
        tmp_path_factory.mktemp("dedup") / "fed",
        people=1500,
        seed=5,
        suppress_below=1,
        rounding_base=1,
        secondary_suppression=False,
        epsilon_per_period=100,
        default_query_epsilon=EPSILON,
        dedup=True,
    )
    try:
        added = _add_duplicates(fed)
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield fed, added
    finally:
        fed.stop()


def test_the_coordinator_finds_the_duplicates(
    deduped: tuple[Federation, dict[str, str]],
) -> None:
    fed, added = deduped
    store = fed.coordinator.coordinator.store
    epoch_id = store.latest_epoch()
    ids = fed.record_ids("education", epoch_id)
    # Further record -> counted record: which of a person's records is counted
    # follows the epoch's random token order, so either may stand for them.
    found = {
        frozenset((ids[t], ids[p])) for t, p in store.duplicates(epoch_id, "education").items()
    }
    true = {frozenset(pair) for pair in added.items()}
    assert len(found & true) >= 0.98 * len(true)
    assert len(found - true) <= 0.01 * len(ids) + 1
    # Another department's records are never its duplicates.
    assert store.duplicates(epoch_id, "immigration").keys() <= set(
        fed.record_ids("immigration", epoch_id)
    )


def test_queries_count_people_not_records(deduped: tuple[Federation, dict[str, str]]) -> None:
    """Pupils by immigration status: each pupil once, however many records."""
    fed, added = deduped
    spec = QuerySpec(PURPOSE, "education", "immigration", "immigration_status", epsilon=EPSILON)
    with fed.analyst() as analyst:
        release = analyst.query(spec)
    table = release.table
    cells = table[table.group != "Total"]
    got = {
        str(g): int(c) if pd.notna(c) else 0
        for g, c in zip(cells.group, cells["count"], strict=True)
    }
    truth = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)
    imm = pd.read_csv(
        fed.directory / "data" / "immigration.csv", dtype=str, keep_default_na=False
    ).set_index("record_id")
    want: dict[str, int] = {}
    for _, p in truth[truth.education_id != ""].iterrows():
        group = (
            imm.loc[p.immigration_id, "immigration_status"]
            if p.immigration_id
            else unlinked_group("immigration")
        )
        want[group] = want.get(group, 0) + 1
    for group in set(got) | set(want):
        g, w = got.get(group, 0), want.get(group, 0)
        assert abs(g - w) <= max(3, 0.03 * w), (group, g, w)
    # The total is the people, not the records (which are a quarter more).
    people = sum(want.values())
    assert abs(sum(got.values()) - people) <= 0.01 * people + 3
    assert sum(got.values()) < people + len(added) / 2
