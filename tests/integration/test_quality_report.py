"""The linkage quality report of a real epoch: aggregates only, protected,
self-contained, and subgroup rates (from protected queries) close to the truth."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from harness import Federation, make_federation
from markupsafe import escape

from headcount.cli import cli
from headcount.domain.query import unlinked_group
from headcount.errors import InvalidRequest
from headcount.protect.labels import status_label
from headcount.protect.sdc import TOTAL, SdcPolicy
from headcount.register import build_register, load_register
from headcount.report import SubgroupPlan, build_quality_report
from headcount.report.summary import summarise_epoch

PROJECT = "linkage-quality-2026"
PARTIES = ("education", "health", "immigration")
EPSILON = 1.0  # per subgroup query: noise scale 2 (a changed record moves two cells)
# Health is the population: with the harness's 900 people it holds most of
# them, so its subgroups are large enough to be released.
PLAN = SubgroupPlan(
    populations=("health",),
    partners=("education", "immigration"),
    attributes=("age_band", "local_authority"),
    epsilon=EPSILON,
)
# The noise is two shares (the coordinator's and the partner's), each discrete
# Laplace at scale 2, which exceeds 30 in absolute value with probability about
# 3e-7; a released count is also rounded (at most 2.5 away).
NOISE_BOUND = 60
ROUNDING_SLACK = 2.5


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, Path]]:
    root = tmp_path_factory.mktemp("quality-report")
    fed = make_federation(root / "fed", require_projects=True, epsilon_per_period=10.0)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            PROJECT,
            "Linkage quality",
            "Measure whether linkage works equally well for every group of children.",
            parties=PARTIES,
        )
        path = build_quality_report(
            fed.config, root / "reports", project_id=PROJECT, subgroups=PLAN
        )
        yield fed, path
    finally:
        fed.stop()


def _data(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text)
    assert found is not None
    loaded: dict[str, Any] = json.loads(found.group(1).replace("<\\/", "</"))
    return loaded


def test_the_page_is_self_contained_with_its_plots(report: tuple[Federation, Path]) -> None:
    fed, path = report
    epoch_id = fed.coordinator.coordinator.store.latest_epoch()
    assert path.name == f"quality-{epoch_id}.html"
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.IGNORECASE)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    pairs = len(list(itertools.combinations(fed.config.party_names, 2)))
    # Link-rate and household matrices, a histogram per pair, precision/recall,
    # and one figure per answered subgroup query.
    assert len(sources) >= 2 + pairs + 1 + 1
    assert "@import" not in page and "url(" not in page


def test_threshold_and_pair_rates_are_the_coordinators_link_counts(
    report: tuple[Federation, Path],
) -> None:
    fed, path = report
    store = fed.coordinator.coordinator.store
    info = store.epoch(store.latest_epoch())
    policy = SdcPolicy()
    page = path.read_text(encoding="utf-8")
    data = _data(path)["epoch"]
    assert data["epoch_id"] == info.epoch_id
    shown = {(p["left"], p["right"]): p for p in data["pairs"]}
    assert set(shown) == set(info.pair_links)
    for (a, b), links in info.pair_links.items():
        p = shown[(a, b)]
        threshold = info.quality[(a, b)].threshold
        assert p["threshold"] == pytest.approx(threshold)
        assert f"{threshold:.3f}" in page
        assert p["links"] == policy.release_value(links)
        records = policy.release_value(info.records[a])
        assert p["left_records"] == records
        if p["links"] is not None and records:
            assert p["left_rate"] == pytest.approx(p["links"] / records, abs=1e-4)
            assert f"{p['links'] / records:.1%}" in page
        quality = info.quality[(a, b)]
        if quality.est_precision is not None:
            assert p["est_precision"] == pytest.approx(quality.est_precision, abs=1e-3)


def _counts(doc: Any) -> Iterator[int | None]:
    """Every count-valued field of the embedded data."""
    keys = {"links", "key_links", "records", "left_records", "right_records", "linked",
            "households", "with_household", "left_households", "right_households", "shared",
            "clusters", "total", "unlinked", "sampled_records"}  # fmt: skip
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in keys and not isinstance(v, dict | list):
                yield v
            elif k == "counts":
                yield from v
            else:
                yield from _counts(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _counts(v)


def test_small_counts_are_suppressed(report: tuple[Federation, Path]) -> None:
    fed, path = report
    policy = SdcPolicy()
    values = list(_counts(_data(path)))
    assert values and None in values
    for v in values:
        assert v is None or (v >= policy.threshold and v % policy.rounding_base == 0), v
    # A histogram bin with a small raw count is withheld on the page.
    store = fed.coordinator.coordinator.store
    raw = store.score_histograms(store.latest_epoch())
    shown = {(p["left"], p["right"]): p["histogram"] for p in _data(path)["epoch"]["pairs"]}
    small = 0
    for pair, h in raw.items():
        for count, released in zip(h["counts"], shown[pair]["counts"], strict=True):
            if count < policy.threshold:
                assert released is None
                small += 1
    assert small > 0


def test_no_token_household_key_or_record_id_appears(report: tuple[Federation, Path]) -> None:
    fed, path = report
    page = path.read_text(encoding="utf-8").lower()
    with closing(sqlite3.connect(fed.config.coordinator.database)) as db:
        rows = db.execute("SELECT token, household FROM encodings").fetchall()
    secrets = {bytes(t).hex() for t, _ in rows} | {bytes(h).hex() for _, h in rows if h}
    assert len(secrets) > 1000
    assert not [s for s in secrets if s in page]
    ids: set[str] = set()
    for party in fed.config.party_names:
        frame = pd.read_csv(fed.config.party(party).data, dtype=str, keep_default_na=False)
        ids.update(frame["record_id"])
    assert len(ids) > 500
    assert not [i for i in ids if i.lower() in page]


def _exact(fed: Federation, population: str, partner: str, attribute: str) -> pd.DataFrame:
    """Per subgroup: records, linked into partner (from the epoch's links), and
    truly known to partner (ground truth). Test-only: reads the node's own state."""
    store = fed.coordinator.coordinator.store
    epoch_id = store.latest_epoch()
    node = fed.nodes[population].node
    tokens, rows = node.store.token_rows(epoch_id)
    data = node.data()
    linked = set(store.linked(epoch_id, population, partner).values())
    ids = pd.read_csv(fed.config.party(population).data, dtype=str, keep_default_na=False)
    truth = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)
    known = set(truth.loc[truth[f"{partner}_id"] != "", f"{population}_id"])
    frame = pd.DataFrame(
        {
            "group": [data.attributes[attribute].iloc[r] for r in rows],
            "linked": [t in linked for t in tokens],
            "known": [ids["record_id"].iloc[r] in known for r in rows],
        }
    )
    return frame.groupby("group").agg(
        total=("linked", "size"), linked=("linked", "sum"), known=("known", "sum")
    )


def test_subgroup_rates_are_within_noise_of_the_truth(report: tuple[Federation, Path]) -> None:
    fed, path = report
    results = _data(path)["subgroups"]
    assert len(results) == 4 and not any(r["refused"] for r in results)
    checked = 0
    for r in results:
        assert r["epsilon"] == pytest.approx(EPSILON) and r["noise_scale"] == pytest.approx(2.0)
        exact = _exact(fed, r["population"], r["partner"], r["attribute"])
        for rate in r["rates"]:
            if rate["total"] is None:
                continue
            row = exact.loc[rate["group"]]
            # The margin sums two noisy cells (linked, not linked).
            d_total = 2 * NOISE_BOUND + ROUNDING_SLACK
            assert abs(rate["total"] - row.total) <= d_total, (r["attribute"], rate)
            if rate["unlinked"] is None:  # withheld: small, or protecting a small cell
                continue
            d_unlinked = NOISE_BOUND + ROUNDING_SLACK
            unlinked = row.total - row.linked
            assert abs(rate["unlinked"] - unlinked) <= d_unlinked, (r["attribute"], rate)
            # The rate moves at most as far as those two bounds allow ...
            low = 1 - (unlinked + d_unlinked) / max(1.0, row.total - d_total)
            high = 1 - max(0.0, unlinked - d_unlinked) / (row.total + d_total)
            assert low - 1e-9 <= rate["rate"] <= high + 1e-9, (r["attribute"], rate)
            # ... and the truth (who really is known to the partner) differs
            # from the links only by linkage error (F1 >= 0.98 on this data).
            true_rate = row.known / row.total
            assert low - 0.05 <= true_rate <= high + 0.05, (r["attribute"], rate, true_rate)
            checked += 1
    assert checked >= 8


def test_the_command_line_writes_a_report_without_spending_budget(
    report: tuple[Federation, Path], tmp_path: Path
) -> None:
    fed, _ = report
    store = fed.coordinator.coordinator.store
    before = store.query_count()
    result = CliRunner().invoke(
        cli,
        ["report", "quality", "--config", str(fed.directory / "federation.toml"),
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = Path(result.output.strip())
    assert written.parent == tmp_path and written.exists()
    assert "Not run" in written.read_text(encoding="utf-8")
    assert store.query_count() == before


def test_subgroups_need_a_project_where_the_federation_requires_one(
    report: tuple[Federation, Path], tmp_path: Path
) -> None:
    fed, _ = report
    with pytest.raises(InvalidRequest, match="approved project"):
        build_quality_report(fed.config, tmp_path, subgroups=True)


def test_the_summary_matches_the_store_without_rendering(report: tuple[Federation, Path]) -> None:
    fed, _ = report
    store = fed.coordinator.coordinator.store
    summary = summarise_epoch(store, store.latest_epoch())
    assert {p.party for p in summary.parties} == set(fed.config.party_names)
    for h in summary.households:
        if h.shared is not None and h.left_households:
            assert 0 < h.shared <= h.left_households + 5


def test_the_register_shows_the_reports_figures_for_the_same_release(
    report: tuple[Federation, Path], tmp_path: Path
) -> None:
    """Each subgroup rate's counts are the cells of a release in the register,
    with the same values and the same suppression rule, named the same way."""
    fed, path = report
    reg = load_register(fed.config)
    build_register(fed.config, tmp_path)
    by_id = {q.query_id: q for q in reg.queries}
    page = path.read_text(encoding="utf-8")
    compared = 0
    for result in _data(path)["subgroups"]:
        query = by_id[result["query_id"]]
        assert query.table is not None
        cells = {(c.group, c.column): c for c in query.table.cells}
        unlinked_label = unlinked_group(result["partner"])
        register_page = (tmp_path / query.page).read_text(encoding="utf-8")
        for rate in result["rates"]:
            total = cells[(TOTAL, rate["group"])]
            unlinked = cells[(unlinked_label, rate["group"])]
            assert (total.value, total.status) == (rate["total"], rate["total_status"])
            assert (unlinked.value, unlinked.status) == (rate["unlinked"], rate["unlinked_status"])
            for c in (total, unlinked):
                label = str(escape(status_label(c.status, reg.policy).short))
                assert label in register_page
                if c.value is None:
                    assert label in page  # the report names the rule the same way
            compared += 1
    assert compared >= 8
