"""Helpers for the browser tests (tests/browser): Debian's Chromium, driven by
Playwright, and where screenshots go.

Every browser test saves its screenshots under ``$HEADCOUNT_TEST_ARTIFACTS``
(else the test's tmp_path). ``$HEADCOUNT_SCREENSHOTS`` names a directory that
also receives the two pictures a closing note shows: a register event page
(``register-event.png``) and the quality report's subgroup figure
(``report-subgroups.png``):

    HEADCOUNT_SCREENSHOTS=/tmp/shots .venv/bin/python -m pytest -q tests/browser
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium not found (looked for `chromium` on PATH and {path}). The browser "
            "tests need it: apt-get install -y --no-install-recommends chromium "
            "(.ci/run installs it in CI)."
        )
    return path


def artefacts(tmp_path: Path) -> Path:
    """Where a test's screenshots go."""
    directory = Path(os.environ.get("HEADCOUNT_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def screenshot(target: Page | Locator, tmp_path: Path, name: str, *, keep: bool = False) -> Path:
    """Save a PNG of ``target`` (a whole page, or one element) as ``name``; with
    ``keep``, also into ``$HEADCOUNT_SCREENSHOTS`` when it is set. Returns the
    artefact's path."""
    path = artefacts(tmp_path) / name
    shots = [path]
    chosen = os.environ.get("HEADCOUNT_SCREENSHOTS")
    if keep and chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        shots.append(Path(chosen) / name)
    for shot in shots:
        if isinstance(target, Locator):
            target.screenshot(path=str(shot))
        else:
            target.screenshot(path=str(shot), full_page=True)
    assert path.stat().st_size > 1000  # a real picture, not an empty file
    return path
