"""``build_quality_report``: one linkage epoch in, ``quality-<epoch>.html`` out.

Runs where the coordinator's state is (it reads the coordinator's store for
what the coordinator already knows: link counts, scores, household counts)
and, for subgroup rates, asks protected queries as an analyst through the
federation like any other analyst would.
"""

from __future__ import annotations

import logging
from pathlib import Path

from coordinator.store import CoordinatorStore
from headcount.client import Client
from headcount.config import FederationConfig
from headcount.errors import ConfigError, InvalidRequest
from headcount.report.subgroups import (
    SubgroupPlan,
    SubgroupResult,
    plan_queries,
    run_subgroup_queries,
)
from headcount.report.summary import policy_of, summarise_epoch

log = logging.getLogger(__name__)


def report_path(out_dir: Path, epoch_id: str) -> Path:
    """Where the report of ``epoch_id`` is written."""
    return out_dir / f"quality-{epoch_id}.html"


def build_quality_report(
    federation: FederationConfig,
    out_dir: Path,
    *,
    epoch_id: str = "",
    project_id: str = "",
    subgroups: bool | SubgroupPlan = False,
    analyst: str = "",
) -> Path:
    """Write the quality report of a linkage epoch and return its path.

    Args:
        federation: the loaded federation config (the coordinator's store and
            output policy are read from it).
        out_dir: directory for ``quality-<epoch_id>.html`` (created if needed).
        epoch_id: the epoch to report on; "" for the latest.
        project_id: the approved project the subgroup queries serve.
        subgroups: run the subgroup link-rate queries (True: `SubgroupPlan()`
            defaults; or a plan). They spend privacy budget; a query the
            federation refuses (budget spent, policy) is shown with its reason.
        analyst: the analyst who asks them; "" for the federation's first.

    Raises:
        InvalidRequest: subgroups for an epoch other than the latest (queries
            always run on the latest), or without a project where the
            federation requires one.
        ConfigError: no analyst is configured but subgroups were asked for.
        UnknownJob, FailedPrecondition: no such epoch, or none at all.
    """
    store = CoordinatorStore(federation.coordinator.database)
    latest = store.latest_epoch()
    epoch_id = epoch_id or latest
    policy = policy_of(federation)
    summary = summarise_epoch(store, epoch_id, policy)

    results: list[SubgroupResult] | None = None
    skipped = "they were not asked for (they cost privacy budget; see docs/quality-report.md)."
    if subgroups:
        plan = subgroups if isinstance(subgroups, SubgroupPlan) else SubgroupPlan()
        if epoch_id != latest:
            raise InvalidRequest("subgroup queries run on the latest epoch only")
        if federation.require_projects and not project_id:
            raise InvalidRequest(
                "subgroup rates are protected queries and need an approved project"
            )
        name = analyst or (federation.analysts[0].name if federation.analysts else "")
        if not name:
            raise ConfigError("the federation has no analyst to ask the subgroup queries")
        queries = plan_queries(federation, plan)
        log.info("quality report: %d subgroup queries at epsilon %g", len(queries), plan.epsilon)
        with Client(federation, analyst=name) as client:
            results = run_subgroup_queries(
                client, queries, project_id=project_id, epsilon=plan.epsilon, policy=policy
            )

    # Plotting (matplotlib) is imported only when a page is drawn.
    from headcount.report.html import render_report

    page = render_report(
        summary,
        federation_name=federation.name,
        subgroups=results,
        subgroups_skipped=skipped,
        project_id=project_id if results is not None else "",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = report_path(out_dir, epoch_id)
    path.write_text(page, encoding="utf-8")
    log.info("quality report for epoch %s written to %s", epoch_id, path)
    return path
