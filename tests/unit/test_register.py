"""The transparency register: built from a real audit log (an in-process
federation that ran a project, queries and a refusal), escaping of hostile text,
tampered copies of the log rendering the FAILED banner, and the read-only server."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pandas as pd
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import make_federation
from markupsafe import escape

from headcount.cli import cli
from headcount.config import FederationConfig
from headcount.domain.audit import event_hash, sign_event_hash
from headcount.domain.query import Predicate, QuerySpec
from headcount.errors import FailedPrecondition, PolicyRefused
from headcount.register import build_register, load_register, make_server
from headcount.register.model import REFUSED, RELEASED

PROJECT = "school-support-2026"
HOSTILE_TITLE = '<b onmouseover="alert(1)">School support</b>'
HOSTILE_PURPOSE = 'Count pupils </td><script>alert("x")</script> & <img src=x onerror=alert(1)>'
PLAIN_PURPOSE = "Pupils by GP registration, to plan school nursing"


@dataclass(frozen=True)
class Logged:
    config: FederationConfig
    config_path: Path
    db: Path  # a consistent copy of the coordinator's state file


def _copy_db(source: Path, target: Path) -> Path:
    """A consistent copy (WAL included) through SQLite's backup API."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def _tamper(db: Path, sql: str, *params: object) -> None:
    """Edit the file behind the append-only triggers, as an attacker with the file can."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        conn.execute(sql, params)
        conn.commit()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """A federation that ran a project, two released queries and one refused one."""
    base = tmp_path_factory.mktemp("register")
    fed = make_federation(base / "fed", require_projects=True)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            PROJECT,
            HOSTILE_TITLE,
            "Plan school support by immigration status and GP registration.",
            parties=["education", "health", "immigration"],
            expires=dt.date.today() + dt.timedelta(days=60),
        )
        edu = pd.read_csv(fed.config.party("education").data, dtype=str, keep_default_na=False)
        keys = ["local_authority", "year_group", "sen", "fsm"]
        smallest = cast(tuple[str, ...], edu.groupby(keys).size().idxmin())
        with fed.analyst() as analyst:
            analyst.query(
                QuerySpec(
                    HOSTILE_PURPOSE,
                    "education",
                    "immigration",
                    "immigration_status",
                    project_id=PROJECT,
                )
            )
            analyst.query(
                QuerySpec(
                    PLAIN_PURPOSE,
                    "education",
                    "health",
                    "gp_registered",
                    epsilon=0.25,
                    project_id=PROJECT,
                )
            )
            # Refused on the project alone (justice is not in it): a refusal
            # never depends on the data, and a tiny population is not refused.
            with pytest.raises(PolicyRefused, match="does not cover"):
                analyst.query(
                    QuerySpec(
                        "One pupil, by sentence in the justice file",
                        "education",
                        "justice",
                        "sentence",
                        population_filters=tuple(
                            Predicate(k, (str(v),)) for k, v in zip(keys, smallest, strict=True)
                        ),
                        project_id=PROJECT,
                    )
                )
        db = _copy_db(fed.config.coordinator.database, base / "audit-copy.sqlite")
    finally:
        fed.stop()
    yield Logged(fed.config, base / "fed" / "federation.toml", db)


@pytest.fixture
def copy(logged: Logged, tmp_path: Path) -> Path:
    """A private copy of the log for a test to tamper with."""
    return _copy_db(logged.db, tmp_path / "copy.sqlite")


def _esc(text: str) -> str:
    """``text`` as the templates' autoescaping writes it."""
    return str(escape(text))


def _pages(out: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*.html"))}


def _seq_of(db: Path, kind: str) -> int:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT seq FROM audit_events WHERE kind = ? ORDER BY seq LIMIT 1", (kind,)
        ).fetchone()
    return int(row[0])


# -- what a verified log shows ---------------------------------------------------------------
def test_verified_log_lists_projects_epochs_queries_and_tables(
    logged: Logged, tmp_path: Path
) -> None:
    index = build_register(logged.config, tmp_path / "site", db_path=logged.db)
    assert index == tmp_path / "site" / "index.html"
    pages = _pages(tmp_path / "site")
    page = pages["index.html"]
    assert 'class="banner ok"' in page and "Audit log verified" in page
    assert "FAILED" not in page
    reg = load_register(logged.config, logged.db)
    assert reg.verification.ok and reg.verification.head in page
    assert logged.config.audit_public_key in page
    # Projects: approved by all three departments, each approval checked by its certificate.
    (project,) = reg.projects
    assert project.status == "approved"
    assert sorted(a.party for a in project.approvals if a.signature_ok) == [
        "education",
        "health",
        "immigration",
    ]
    assert PROJECT in page
    # Queries: two released, one refused, each with its own page.
    assert [q.status for q in reg.queries] == [RELEASED, RELEASED, REFUSED]
    assert {f"query-{q.seq}.html" for q in reg.queries} <= set(pages)
    assert page.count('<tr><td><a href="query-') == 3
    assert _esc(PLAIN_PURPOSE) in page
    # Budget per department per period, across epochs: refusals are not charged.
    (epoch,) = reg.epochs
    year = str(dt.datetime.now(dt.UTC).year)
    assert {line.period for line in reg.budgets} == {year}
    budget = {
        line.party: (round(line.spent, 9), round(line.left, 9), line.queries)
        for line in reg.budgets
    }
    assert budget["education"] == (0.5, 0.5, 2)
    assert budget["immigration"] == (0.25, 0.75, 1)
    assert budget["health"] == (0.25, 0.75, 1)
    assert budget["justice"] == (0.0, 1.0, 0)
    assert "Privacy budget per department per period" in page
    assert "73.1% sure" in page  # the guessing bound of the default budget
    assert epoch.status == "completed" and epoch.records["education"] > 0
    released = reg.queries[1]
    assert released.budget_left == {"education": 0.5, "health": 0.75}


def test_query_page_shows_the_released_table_and_who_asked(logged: Logged, tmp_path: Path) -> None:
    build_register(logged.config, tmp_path, db_path=logged.db)
    reg = load_register(logged.config, logged.db)
    query = reg.queries[1]
    assert query.table is not None
    page = (tmp_path / query.page).read_text(encoding="utf-8")
    assert _esc(PLAIN_PURPOSE) in page
    assert "analyst (commissioner)" in page
    assert "education, health" in page
    body = page.split('id="released-table"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr") == 1 + len(query.table.cells) + 1  # header, cells, total
    assert "95% interval" in page
    for cell in query.table.cells:
        assert f"<td>{_esc(cell.group)}</td>" in body
        if cell.value is not None:
            assert f">{cell.value:,}</td>" in body
            # Every released cell shows its 95% interval, around its value.
            assert cell.interval is not None
            low, high = cell.interval
            assert low <= cell.value <= high
            assert f"{low:,} – {high:,}" in body
    # Each cell is labelled by the rule that applied to it, never a generic "suppressed".
    rows = body.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    for cell, row in zip(query.table.cells, rows, strict=False):
        expected = {
            "released": "rounded to 5",
            "primary": "withheld: &lt; 10",
            "secondary": "withheld: protects another cell",
        }[cell.status]
        assert expected in row, (cell, row)
    refused = (tmp_path / reg.queries[2].page).read_text(encoding="utf-8")
    assert "Refused" in refused and 'id="reason"' in refused


def test_hostile_text_is_escaped_on_every_page(logged: Logged, tmp_path: Path) -> None:
    build_register(logged.config, tmp_path, db_path=logged.db)
    pages = _pages(tmp_path)
    reg = load_register(logged.config, logged.db)
    assert len(pages) == 2 + 3 + len(reg.events)  # index, events, three queries, each event
    for name, text in pages.items():
        assert "<script" not in text.lower(), name
        assert "<img" not in text.lower(), name
        assert "<b onmouseover" not in text, name
    assert _esc(HOSTILE_PURPOSE) in pages["index.html"]
    assert _esc(HOSTILE_TITLE) in pages["index.html"]
    assert _esc(HOSTILE_PURPOSE) in pages["events.html"]
    query = next(e for e in reg.events if e.kind == "query")
    assert _esc(HOSTILE_PURPOSE) in pages[f"event-{query.seq}.html"]


def test_pages_allow_no_script_and_nothing_from_elsewhere(logged: Logged, tmp_path: Path) -> None:
    build_register(logged.config, tmp_path, db_path=logged.db)
    for name, text in _pages(tmp_path).items():
        assert _esc("default-src 'none'") in text, name
        assert "script-src" not in text, name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name


# -- tampered copies ----------------------------------------------------------------------------
def test_edited_release_shows_the_failed_banner_naming_it(
    logged: Logged, copy: Path, tmp_path: Path
) -> None:
    seq = _seq_of(copy, "release")
    with closing(sqlite3.connect(copy)) as conn:
        body = json.loads(
            conn.execute("SELECT body FROM audit_events WHERE seq = ?", (seq,)).fetchone()[0]
        )
    body["table"]["total"] = 999_999  # a bigger number than was released
    _tamper(copy, "UPDATE audit_events SET body = ? WHERE seq = ?", json.dumps(body), seq)
    build_register(logged.config, tmp_path, db_path=copy)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'class="banner fail"' in page and "Verification FAILED" in page
    assert f"event #{seq} (release)" in page
    assert "event hash does not match" in page
    assert 'class="banner ok"' not in page
    reg = load_register(logged.config, copy)
    assert reg.verification.first_bad_seq == seq
    assert [q.trusted for q in reg.queries] == [False, False, False]
    assert page.count('class="unverified"') >= 3
    events = (tmp_path / "events.html").read_text(encoding="utf-8")
    assert "first bad event" in events


def test_forged_chain_signed_with_another_key_fails_at_the_first_event(
    logged: Logged, copy: Path, tmp_path: Path
) -> None:
    rogue = Ed25519PrivateKey.generate()
    with closing(sqlite3.connect(copy)) as conn:
        rows = conn.execute("SELECT seq, kind, body, at FROM audit_events ORDER BY seq").fetchall()
    prev = "0" * 64
    forged = []
    for seq, kind, body, at in rows:
        digest = event_hash(seq, kind, json.loads(body), at, prev)
        forged.append((prev, digest, sign_event_hash(rogue, digest), seq))
        prev = digest
    _tamper(copy, "DELETE FROM audit_events")
    with closing(sqlite3.connect(copy)) as conn:
        for (seq, kind, body, at), (prev_hash, digest, sig, _) in zip(rows, forged, strict=True):
            conn.execute(
                "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, kind, body, at, prev_hash, digest, sig),
            )
        conn.commit()
    build_register(logged.config, tmp_path, db_path=copy)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Verification FAILED" in page and "event #0 (ceremony)" in page
    assert "signature does not verify" in page


def test_deleted_and_malformed_events_fail_verification(
    logged: Logged, copy: Path, tmp_path: Path
) -> None:
    seq = _seq_of(copy, "query")
    _tamper(copy, "DELETE FROM audit_events WHERE seq = ?", seq)
    reg = load_register(logged.config, copy)
    assert not reg.verification.ok and reg.verification.first_bad_seq == seq
    other = _copy_db(logged.db, tmp_path / "other.sqlite")
    _tamper(other, "UPDATE audit_events SET body = 'not json' WHERE seq = 2")
    build_register(logged.config, tmp_path / "site", db_path=other)
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "Verification FAILED" in page and "event #2" in page and "malformed" in page


# -- edge cases and the command line ------------------------------------------------------------
def test_missing_log_is_an_error_and_an_empty_log_renders(logged: Logged, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="no audit log"):
        build_register(logged.config, tmp_path / "a", db_path=tmp_path / "missing.sqlite")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    build_register(logged.config, tmp_path / "b", db_path=empty)
    page = (tmp_path / "b" / "index.html").read_text(encoding="utf-8")
    assert "Audit log verified" in page and "No query has been run yet." in page


def test_rebuild_removes_pages_of_queries_no_longer_in_the_log(
    logged: Logged, copy: Path, tmp_path: Path
) -> None:
    build_register(logged.config, tmp_path, db_path=logged.db)
    (tmp_path / "keep.txt").write_text("not the register's")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    build_register(logged.config, tmp_path, db_path=empty)
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["events.html", "index.html"]
    assert (tmp_path / "keep.txt").exists()


def test_cli_builds_and_exits_1_on_a_failing_log(
    logged: Logged, copy: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    config = str(logged.config_path)
    args = ["register", "build", "--config", config, "--out", str(tmp_path / "ok")]
    result = runner.invoke(cli, [*args, "--db", str(logged.db)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and (tmp_path / "ok" / "index.html").is_file()
    _tamper(copy, "UPDATE audit_events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 1")
    result = runner.invoke(cli, [*args, "--db", str(copy)])
    assert result.exit_code == 1
    assert "FAILS verification" in result.output


# -- the server -----------------------------------------------------------------------------------
@pytest.fixture
def served(logged: Logged, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    site = tmp_path / "site"
    build_register(logged.config, site, db_path=logged.db)
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1]), site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _request(host: str, port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_server_serves_the_pages_read_only(served: tuple[str, int, Path]) -> None:
    host, port, _ = served
    status, headers, body = _request(host, port, "GET", "/")
    assert status == 200 and b"Transparency register" in body
    assert headers["Content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _, body = _request(host, port, "HEAD", "/events.html?x=1")
    assert status == 200 and body == b""
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = _request(host, port, method, "/index.html")
        assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_server_serves_nothing_but_the_pages(served: tuple[str, int, Path]) -> None:
    host, port, site = served
    (site / "sub").mkdir()
    (site / "sub" / "index.html").write_text("nested")
    (site / "notes.txt").write_text("not a page")
    (site / ".hidden.html").write_text("hidden")
    (site / "link.html").symlink_to(site.parent / "outside.html")
    (site.parent / "outside.html").write_text("outside")
    for path in (
        "/sub/",
        "/sub/index.html",
        "/notes.txt",
        "/.hidden.html",
        "/link.html",
        "/../outside.html",
        "/%2e%2e/outside.html",
        "/missing.html",
    ):
        status, _, body = _request(host, port, "GET", path)
        assert status == 404, path
        assert b"outside" not in body and b"nested" not in body


def test_server_reports_a_port_in_use(served: tuple[str, int, Path]) -> None:
    host, port, site = served
    with pytest.raises(FailedPrecondition, match="cannot listen"):
        make_server(site, host, port)


@pytest.mark.parametrize("args", [["register"], ["register", "build"], ["register", "serve"]])
def test_help_explains_the_register_commands(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and "register" in result.output
    if args != ["register"]:
        assert "--config" in result.output and "--out" in result.output
