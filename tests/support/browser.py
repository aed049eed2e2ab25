"""Debian's Chromium through Playwright's Python package, for the console's browser tests
(never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


def require_chromium() -> Any:
    """Playwright's sync API, or skip (fail under RENKEI_REQUIRE_SERVICES=1) with the reason."""
    reason = None
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} not installed (apt-get install -y chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        reason = reason or "the playwright package is not installed (pip install '.[test]')"
    if reason is not None:
        if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return sync_api


@contextmanager
def chromium(args: Sequence[str] = ()) -> Iterator[Any]:
    """Debian's Chromium, headless, with command-line ``args``, launched through Playwright
    (skips as :func:`require_chromium` does); closed on leaving."""
    sync_api = require_chromium()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(args)
        )
        try:
            yield launched
        finally:
            launched.close()


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    """Log ``page`` in to the console at ``base_url`` (the hub's root URL) as ``username``."""
    page.goto(f"{base_url}/console/login")
    page.get_by_label("利用者名").fill(username)
    page.get_by_label("パスワード").fill(password)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_url("**/console/")
