"""Fixtures of the browser tests: one headless Chromium per module, a fresh
context per test (helpers and screenshot directories: tests/browsing.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browsing import CHROMIUM_ARGS, chromium
from playwright.sync_api import Browser, Page, sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()
