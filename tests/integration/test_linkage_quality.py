"""Linkage quality of a federation epoch against the synthetic ground truth,
and the quality the coordinator estimates without it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pandas as pd
import pytest
from harness import Federation, make_federation


@pytest.fixture(scope="module")
def epoch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, object]]:
    fed = make_federation(tmp_path_factory.mktemp("quality") / "fed", people=4000, seed=21)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            summary = op.run_linkage()
        yield fed, summary
    finally:
        fed.stop()


def test_person_links_match_ground_truth_and_the_estimate(epoch: tuple[Federation, object]) -> None:
    fed, summary = epoch
    truth = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)
    pairs = {(p.left, p.right): p for p in summary.pairs}  # type: ignore[attr-defined]
    checked = 0
    for a, b in itertools.combinations(sorted(fed.config.party_names), 2):
        true = {(x, y) for x, y in zip(truth[f"{a}_id"], truth[f"{b}_id"], strict=True) if x and y}
        if len(true) < 50:
            continue
        found = fed.linked_record_ids(summary.epoch_id, a, b)  # type: ignore[attr-defined]
        precision = len(found & true) / len(found)
        recall = len(found & true) / len(true)
        f1 = 2 * precision * recall / (precision + recall)
        assert f1 >= 0.98, (a, b, precision, recall)
        p = pairs[(a, b)]
        assert p.est_precision is not None and p.est_recall is not None and p.key_links > 0
        # The estimate comes from score distributions alone: no ground truth.
        # It does not see the links a cluster makes through a third department
        # (a known limit, docs/linkage.md), which on a pair of about 100 links
        # moves precision by up to 3 links: within 3 points or 3 links.
        slack = max(0.03, 3 / len(found))
        assert abs(p.est_precision - precision) <= slack, (a, b, p.est_precision, precision)
        assert abs(p.est_recall - recall) <= max(0.05, 3 / len(true)), (a, b, p.est_recall)
        checked += 1
    assert checked >= 3
