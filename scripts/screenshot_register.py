"""Make docs/img/register.png: the transparency register of a small demo federation.

Starts an in-process federation (synthetic data, 1024-bit test keys), runs the
ceremony, one linkage epoch, the demo project and the demo queries, builds the
register from its audit log, serves it on a free loopback port and has
Debian Chromium (driven by Playwright) take a full-page screenshot.

    .venv/bin/python scripts/screenshot_register.py [--out docs/img/register.png]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from headcount.demo import DEMO_PROJECT, DEMO_PROJECT_PURPOSE, DEMO_PROJECT_TITLE, DEMO_QUERIES
from headcount.errors import BudgetExhausted, PolicyRefused
from headcount.local import start_local_federation
from headcount.register import build_register, make_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
log = logging.getLogger("screenshot_register")


def _populate(directory: Path, people: int, seed: int) -> Path:
    """Run a federation with the demo project and queries; return its config file."""
    fed = start_local_federation(directory, people=people, seed=seed, require_projects=True)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            DEMO_PROJECT,
            DEMO_PROJECT_TITLE,
            DEMO_PROJECT_PURPOSE,
            expires=dt.date.today() + dt.timedelta(days=365),
        )
        with fed.analyst() as analyst:
            for _, spec in DEMO_QUERIES:
                try:
                    analyst.query(spec)
                except (PolicyRefused, BudgetExhausted) as exc:
                    log.info("refused (shown in the register too): %s", exc)
    finally:
        fed.stop()
    return directory / "federation.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "register.png")
    parser.add_argument("--people", type=int, default=6000, help="Synthetic population size.")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--width", type=int, default=1280, help="Viewport width in pixels.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        log.error("Chromium not found: apt-get install -y --no-install-recommends chromium")
        return 1
    with tempfile.TemporaryDirectory(prefix="headcount-register-") as tmp:
        config = _populate(Path(tmp) / "fed", args.people, args.seed)
        index = build_register(config, Path(tmp) / "site")
        server = make_server(index.parent, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
