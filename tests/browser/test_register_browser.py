"""The transparency register in a real browser (Debian Chromium driven by Playwright).

The site is built from the audit log of an in-process federation, served by
the register's own server on a free loopback port, and read by Chromium: the
pages load under their Content-Security-Policy with styles applied, tables
render with the expected rows and cells, and a tampered copy of the log shows
the FAILED banner; each event has its own page with a typed view of its kind.
Screenshots are kept as test artefacts (tests/browser/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from browsing import screenshot
from harness import make_federation
from playwright.sync_api import ConsoleMessage, Page

from headcount.domain.query import QuerySpec
from headcount.register import build_register, load_register, make_server
from headcount.register.model import Register

PROJECT = "school-support-2026"
HOSTILE_PURPOSE = 'Count pupils <script>alert("x")</script> by immigration status'
OK_GREEN = "rgb(218, 251, 225)"  # .banner.ok background: proves the stylesheet applied
FAIL_RED = "rgb(255, 235, 233)"  # .banner.fail background


@dataclass(frozen=True)
class Site:
    url: str
    register: Register


def _serve(site: Path) -> Generator[str, None, None]:
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    """(the register of a verified log, the register of a tampered copy), both served."""
    base = tmp_path_factory.mktemp("register-browser")
    fed = make_federation(base / "fed", require_projects=True)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            PROJECT,
            "School support",
            "Plan school support by immigration status and GP registration.",
            parties=["education", "health", "immigration"],
            expires=dt.date.today() + dt.timedelta(days=60),
        )
        with fed.analyst() as analyst:
            for purpose, group_party, group_by in (
                (HOSTILE_PURPOSE, "immigration", "immigration_status"),
                ("Pupils by GP registration, to plan school nursing", "health", "gp_registered"),
            ):
                analyst.query(
                    QuerySpec(purpose, "education", group_party, group_by, project_id=PROJECT)
                )
        good, bad = base / "good.sqlite", base / "tampered.sqlite"
        for target in (good, bad):
            with (
                closing(sqlite3.connect(fed.config.coordinator.database)) as src,
                closing(sqlite3.connect(target)) as dst,
            ):
                src.backup(dst)
        cfg = fed.config
    finally:
        fed.stop()
    with closing(sqlite3.connect(bad)) as conn:
        seq, body = conn.execute(
            "SELECT seq, body FROM audit_events WHERE kind = 'release' ORDER BY seq LIMIT 1"
        ).fetchone()
        edited = json.loads(body)
        edited["table"]["total"] = 999_999
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET body = ? WHERE seq = ?", (json.dumps(edited), seq))
        conn.commit()
    build_register(cfg, base / "good", db_path=good)
    build_register(cfg, base / "bad", db_path=bad)
    serving_good, serving_bad = _serve(base / "good"), _serve(base / "bad")
    good_url, bad_url = next(serving_good), next(serving_bad)
    try:
        yield (
            Site(good_url, load_register(cfg, good)),
            Site(bad_url, load_register(cfg, bad)),
        )
    finally:
        for gen in (serving_good, serving_bad):
            gen.close()


def _background(page: Page, selector: str) -> str:
    return str(page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor"))


def test_register_loads_and_its_tables_render(
    sites: tuple[Site, Site], page: Page, tmp_path: Path
) -> None:
    site = sites[0]
    problems: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.text:
            problems.append(message.text)

    page.on("console", note)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    response = page.goto(site.url)
    assert response is not None and response.status == 200
    assert page.title().startswith("Transparency register")
    banner = page.locator("#verification")
    assert "Audit log verified" in banner.inner_text()
    assert _background(page, "#verification") == OK_GREEN  # the stylesheet passed the CSP
    assert page.locator("script").count() == 0
    # Projects, budgets per department, queries: rows and cells.
    assert page.locator("#projects-table tbody tr").count() == 1
    assert page.locator("#projects-table tbody tr td").count() == 7
    assert len(site.register.epochs) == 1
    # One row per department for the current period, across every epoch.
    budget_rows = page.locator("#budget tbody tr")
    assert budget_rows.count() == 4
    assert budget_rows.nth(0).locator("td").count() == 5
    assert "73.1% sure" in page.content()
    assert page.locator("meter").count() == 4
    queries = page.locator("#queries-table tbody tr")
    assert queries.count() == len(site.register.queries) == 2
    assert queries.nth(0).locator("td").count() == 8
    assert HOSTILE_PURPOSE in queries.nth(0).inner_text()  # shown as text, never run
    screenshot(page, tmp_path, "register-index.png")
    # A query's own page, reached by its link: the released table in full.
    queries.nth(0).locator("a").first.click()
    page.wait_for_load_state()
    query = site.register.queries[0]
    assert page.url.endswith(query.page)
    assert query.table is not None
    assert page.locator("#purpose").inner_text() == HOSTILE_PURPOSE
    assert page.locator("#released-table tbody tr").count() == len(query.table.cells)
    assert page.locator("#released-table tfoot td").first.inner_text() == "Total"
    for badge in page.locator("#released-table tbody .badge").all_inner_texts():
        assert badge in ("rounded to 5", "withheld: < 10", "withheld: protects another cell")
    assert page.locator("ul.legend li").count() == 3  # what each rule means
    screenshot(page, tmp_path, "register-query.png")
    assert problems == []


def test_tampered_log_shows_failing_verification(
    sites: tuple[Site, Site], page: Page, tmp_path: Path
) -> None:
    site = sites[1]
    page.goto(site.url)
    banner = page.locator("#verification")
    text = banner.inner_text()
    assert "Verification FAILED" in text
    assert "Audit log verified" not in page.content()
    bad = site.register.verification.first_bad_seq
    assert bad is not None
    assert page.locator("#first-bad").inner_text() == f"event #{bad} (release)"
    assert _background(page, "#verification") == FAIL_RED
    assert page.locator("#queries-table tbody tr.unverified").count() == 2
    screenshot(page, tmp_path, "register-tampered.png")
    page.goto(site.url + "events.html")
    assert page.locator("#events-table tbody tr.unverified").count() >= 1
    assert "first bad event" in page.locator("#events-table").inner_text()


def test_each_event_page_shows_its_kind_typed(
    sites: tuple[Site, Site], page: Page, tmp_path: Path
) -> None:
    site = sites[0]
    page.goto(site.url + "events.html")
    kinds = page.locator("#events-table tbody td.kind")
    assert kinds.count() == len(site.register.events)
    # The Kind column never breaks a word: one line per kind, however narrow.
    page.set_viewport_size({"width": 700, "height": 900})
    for i in range(kinds.count()):
        cell = kinds.nth(i)
        assert cell.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
        code = cell.locator("code")
        line = float(code.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20"))
        assert code.bounding_box()["height"] <= line * 1.5  # type: ignore[index]
    assert page.locator("pre").count() == 0
    page.set_viewport_size({"width": 1280, "height": 900})
    seen: set[str] = set()
    for event in site.register.events:
        page.goto(site.url + f"event-{event.seq}.html")
        assert page.locator("pre").count() == 0  # no raw JSON anywhere
        assert page.locator("#event-facts").inner_text().count(event.kind) >= 1
        assert "Audit log verified" in page.locator("#verification").inner_text()
        body = page.locator("#event-body")
        assert body.locator("dl.facts, table").count() >= 1
        if event.kind == "epoch":  # each department's dataset size, by name
            records = sorted(event.body["records"].items())
            rows = page.locator("#epoch-records tbody tr").all_inner_texts()
            assert len(rows) == len(records)
            for row, (party, n) in zip(rows, records, strict=True):
                assert row.startswith(party) and f"{n:,}" in row
        if event.kind == "query":
            assert page.locator("#purpose").inner_text() == event.body["purpose"]
        if event.kind == "release" and "release" not in seen:
            cells = event.body["table"]["cells"]
            assert page.locator("#released-table tbody tr").count() == len(cells)
            badges = page.locator("#released-table tbody td .badge").all_inner_texts()
            assert set(badges) <= {
                "rounded to 5",
                "withheld: < 10",
                "withheld: protects another cell",
            }
            assert page.locator("#release-budget tbody tr").count() == len(event.body["parties"])
            assert "95% interval" in page.locator("#released-table thead").inner_text()
            screenshot(page, tmp_path, "register-event.png", keep=True)
        seen.add(event.kind)
    assert {"ceremony", "epoch_started", "epoch", "project_proposed", "project_approved"} <= seen
    assert {"query", "release"} <= seen
