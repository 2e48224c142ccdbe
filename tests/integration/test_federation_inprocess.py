"""The federation's data flow on real servers in-process: ceremony, epoch, query."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from harness import Federation

from headcount.crypto import ceremony as ceremony_mod
from headcount.domain.query import Predicate, QuerySpec
from headcount.errors import BudgetExhausted, InvalidRequest, PolicyRefused

PURPOSE = "Count pupils by immigration status to plan school support services."


def test_every_node_derives_the_same_secret(linked_federation: Federation) -> None:
    secrets = set()
    for node in linked_federation.nodes.values():
        with closing(sqlite3.connect(node.node.store.path)) as db:
            rows = db.execute("SELECT secret FROM ceremonies WHERE secret IS NOT NULL").fetchall()
        assert len(rows) == 1
        secrets.add(bytes(rows[0][0]))
    assert len(secrets) == 1
    (secret,) = secrets
    assert len(secret) == ceremony_mod.SECRET_BYTES


def test_linkage_epoch_links_each_pair_of_departments(linked_federation: Federation) -> None:
    with linked_federation.operator() as op:
        status = op.status()
    assert status.epoch_id
    assert all(p.healthy for p in status.parties)
    info = linked_federation.coordinator.coordinator.store.epoch(status.epoch_id)
    assert info.records["health"] > info.records["education"] > 0
    # Nearly every pupil is registered with a GP; linkage must find most of them.
    assert info.pair_links[("education", "health")] >= 0.85 * info.records["education"]


def test_query_on_unknown_party_is_refused(linked_federation: Federation) -> None:
    with (
        linked_federation.analyst() as analyst,
        pytest.raises(InvalidRequest, match="unknown party"),
    ):
        analyst.query(QuerySpec(PURPOSE, "education", "police", "status"))


def test_group_by_numeric_attribute_is_refused_by_node_policy(
    linked_federation: Federation,
) -> None:
    with linked_federation.analyst() as analyst, pytest.raises(PolicyRefused):
        analyst.query(QuerySpec(PURPOSE, "immigration", "education", "absence_rate"))


def test_tiny_population_is_answered_not_refused(linked_federation: Federation) -> None:
    # An impossible combination: the filtered population is (nearly) empty.
    # Refusing it would tell the analyst so for free; it is answered, and the
    # noise and the small-number rule protect it like any other population.
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(
            Predicate("sen", ("ehcp",)),
            Predicate("year_group", ("13",)),
            Predicate("local_authority", ("Kent",)),
        ),
    )
    with linked_federation.analyst() as analyst:
        result = analyst.query(spec)
    assert len(result.table) > 1
    for status, count in zip(result.table["status"], result.table["count"], strict=True):
        assert status != "released" or count % 5 == 0


def test_budget_is_per_period_and_a_new_epoch_resets_nothing(federation: Federation) -> None:
    budget = federation.config.privacy.epsilon_per_period
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    spec = QuerySpec(PURPOSE, "education", "immigration", "immigration_status", epsilon=budget / 2)
    with federation.analyst() as analyst:
        first = analyst.query(spec)
        assert first.budget_remaining == pytest.approx(budget / 2)
    # A new linkage epoch used to restore every budget: it must not.
    with federation.operator() as op:
        op.run_linkage()
    with federation.analyst() as analyst:
        analyst.query(spec)
        with pytest.raises(BudgetExhausted, match="left"):
            analyst.query(spec)
        status = analyst.status()
    # The nodes' own ledgers, the coordinator's mirror and the status agree.
    left = {p.party: p.epsilon_left for p in status.parties}
    for party in ("education", "immigration"):
        node = federation.nodes[party].node
        assert node.ledger.remaining() == pytest.approx(0.0)
        assert federation.coordinator.coordinator.budget_remaining(party) == pytest.approx(0.0)
        assert left[party] == pytest.approx(0.0)
    assert federation.nodes["health"].node.ledger.remaining() == pytest.approx(budget)
    assert left["health"] == pytest.approx(budget)


def test_epochs_are_unlinkable(federation: Federation) -> None:
    """Two epochs of the same unchanged data share no token, CLK or match-key."""
    with federation.operator() as op:
        op.run_ceremony()
        first = op.run_linkage()
        second = op.run_linkage()
    store = federation.coordinator.coordinator.store
    with closing(sqlite3.connect(store.path)) as db:
        rows = db.execute("SELECT epoch_id, token, clk FROM encodings").fetchall()
    by_epoch: dict[str, tuple[set[bytes], set[bytes]]] = {}
    for epoch_id, token, clk in rows:
        tokens, clks = by_epoch.setdefault(epoch_id, (set(), set()))
        tokens.add(bytes(token))
        clks.add(bytes(clk))
    a, b = by_epoch[first.epoch_id], by_epoch[second.epoch_id]
    assert len(a[0]) == len(b[0]) > 100
    assert not a[0] & b[0]
    assert not a[1] & b[1]
    # Linkage is as good in both: only the keys changed (bit collisions differ,
    # so a borderline pair may fall either side of the threshold).
    assert abs(first.clusters - second.clusters) <= 0.02 * first.clusters
