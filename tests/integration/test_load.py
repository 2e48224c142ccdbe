"""Bounded load on loopback: many analysts querying at once.

Nothing may be lost (every query ends released or refused, each exactly once in
the audit log), no node may spend more budget than an epoch has, the audit
chain must still verify, and no query may hang. Figures for larger loads come
from ``benchmarks/bench_load.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import make_federation

from headcount.client import Client
from headcount.domain.query import QuerySpec
from headcount.errors import BudgetExhausted

QUERIES = 10
ANALYST_THREADS = 5
PERIOD_BUDGET = 1.0
QUERY_EPSILON = 0.25  # so at most four queries fit in a period's budget
LATENCY_BOUND_S = 120.0  # a hang, not a slow machine, should trip this


def test_concurrent_queries_lose_nothing_and_never_overspend(tmp_path: Path) -> None:
    fed = make_federation(
        tmp_path / "fed", epsilon_per_period=PERIOD_BUDGET, default_query_epsilon=QUERY_EPSILON
    )
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()

        def one(i: int) -> tuple[str, float]:
            spec = QuerySpec(
                purpose=f"Load test query {i}: pupils by immigration status.",
                population_party="education",
                group_party="immigration",
                group_by="immigration_status",
            )
            started = time.monotonic()
            with Client(fed.config, analyst=fed.config.analysts[0].name) as analyst:
                try:
                    analyst.query(spec)
                    outcome = "released"
                except BudgetExhausted:
                    outcome = "refused"
            return outcome, time.monotonic() - started

        with ThreadPoolExecutor(ANALYST_THREADS) as pool:
            results = list(pool.map(one, range(QUERIES)))

        outcomes = Counter(o for o, _ in results)
        assert sum(outcomes.values()) == QUERIES
        assert 1 <= outcomes["released"] <= PERIOD_BUDGET / QUERY_EPSILON
        assert max(t for _, t in results) < LATENCY_BOUND_S

        for party, running in fed.nodes.items():
            spent = running.node.ledger.spent()
            assert spent <= PERIOD_BUDGET + 1e-9, party

        coord = fed.coordinator.coordinator
        coord.audit.verify()  # raises on a broken chain
        events = coord.audit.events()
        releases = [e for e in events if e.kind == "release"]
        assert len(releases) == outcomes["released"]
        announced = [e.body["query_id"] for e in events if e.kind == "query"]
        terminal = Counter(e.body["query_id"] for e in events if e.kind in ("release", "refusal"))
        # Each announced query ended exactly once; refusals before the
        # announcement (the coordinator's own budget check) are not announced.
        assert all(terminal[q] == 1 for q in announced)
        assert coord.store.running_queries() == []
    finally:
        fed.stop()
