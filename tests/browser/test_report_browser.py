"""The linkage quality report in a real browser (Debian Chromium through Playwright).

A federation links its departments and the report is built with its subgroup
queries (protected queries under an approved project); Chromium opens the
self-contained page from disk and the test reads the rendered page: every
figure decodes, no rate or interval leaves 0%–100%, and each withheld rate is
shown as withheld with the rule that withheld it. The subgroup figure is kept
as a screenshot (tests/browsing.py: $HEADCOUNT_SCREENSHOTS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browsing import screenshot
from harness import make_federation
from playwright.sync_api import Page

from headcount.report import SubgroupPlan, build_quality_report

PROJECT = "linkage-quality-2026"
PLAN = SubgroupPlan(
    populations=("health",),
    partners=("education", "immigration"),
    attributes=("age_band", "local_authority"),
    epsilon=1.0,
)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("report-browser")
    fed = make_federation(root / "fed", require_projects=True, epsilon_per_period=10.0)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            PROJECT,
            "Linkage quality",
            "Measure whether linkage works equally well for every group of children.",
            parties=("education", "health", "immigration"),
        )
        yield build_quality_report(fed.config, root / "reports", project_id=PROJECT, subgroups=PLAN)
    finally:
        fed.stop()


def test_quality_report_renders_bounded_rates_and_withheld_ones(
    report: Path, page: Page, tmp_path: Path
) -> None:
    response = page.goto(report.as_uri())
    assert response is not None and response.ok
    assert page.title().startswith("Linkage quality report")
    # The inline stylesheet applied, and every figure is a PNG that decodes.
    assert page.eval_on_selector("th", "e => getComputedStyle(e).backgroundColor") == (
        "rgb(242, 244, 245)"
    )
    images = page.locator("img")
    assert images.count() >= 6
    for i in range(images.count()):
        assert images.nth(i).evaluate("e => e.complete && e.naturalWidth > 0")
    subgroups = page.locator("#subgroups div.subgroup")
    assert subgroups.count() == 4
    withheld_rows = 0
    for i in range(subgroups.count()):
        block = subgroups.nth(i)
        assert block.locator("img").count() == 1
        header = block.locator("thead th").all_inner_texts()
        assert header[3] == "link rate (95% interval)"
        for row in block.locator("tbody tr").all():
            cells = row.locator("td").all_inner_texts()
            rate = cells[3]
            for value in _PERCENT.findall(rate):
                assert 0.0 <= float(value) <= 100.0, rate
            if rate.startswith("withheld"):
                withheld_rows += 1
                assert cells[4].startswith(("withheld", "subgroup total")), cells
                assert any(c.startswith("withheld") for c in cells[1:3]), (
                    cells
                )  # the count that was withheld says why, as the register does
            else:
                assert re.fullmatch(r"\d+\.\d% \(\d+\.\d%–\d+\.\d%\)", rate), rate
    assert "±" not in page.locator("body").inner_text()
    screenshot(page, tmp_path, "report.png")
    # The figure a closing note shows: the subgroup breakdown with the most withheld rates.
    counts = [
        subgroups.nth(i).locator("tbody td.withheld").count() for i in range(subgroups.count())
    ]
    chosen = subgroups.nth(counts.index(max(counts)))
    chosen.scroll_into_view_if_needed()
    screenshot(chosen, tmp_path, "report-subgroups.png", keep=True)
    # The page shows as withheld exactly the rates its embedded data withholds.
    data = json.loads(page.locator("#report-data").text_content() or "{}")
    rates = [r for result in data["subgroups"] for r in result["rates"]]
    assert withheld_rows == sum(r["rate"] is None for r in rates)
