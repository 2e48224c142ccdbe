"""Linkage quality reports: what a data steward sees about each linkage epoch.

``build_quality_report(federation, out_dir, ...)`` writes one self-contained
HTML page per epoch (see docs/quality-report.md). The modules:

* `scores`: score histograms the coordinator stores at epoch time;
* `summary`: the coordinator's link, score and household counts, protected;
* `subgroups`: link rates by subgroup from ordinary protected queries;
* `plots`, `html`: the page (matplotlib, Agg, inline PNG);
* `build`: the entry point; `cli`: ``headcount report quality``.

matplotlib is imported only when a page is drawn, so the coordinator, which
imports `scores` at epoch time, does not load it.
"""

from headcount.report.build import build_quality_report, report_path
from headcount.report.subgroups import SubgroupPlan

__all__ = ["SubgroupPlan", "build_quality_report", "report_path"]
