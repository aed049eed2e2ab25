"""A closed network (LGWAN): the hub's machine reaches nothing outside. The interactive API
docs (``/docs`` Swagger UI, ``/redoc`` ReDoc) and the web console must work from the hub's
own files: a real hub (uvicorn) in real headless Chromium whose name resolution fails for
every host but 127.0.0.1, so a CDN script or a web font cannot load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.browser import chromium
from tests.support.hub_server import HubServer, hub_server

pytestmark = pytest.mark.console

# Chromium's own resolver: every name fails, only the hub's address is reachable
CUT_OFF = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
DOC_PAGES = ("/docs", "/redoc")
# ReDoc's "API docs by Redocly" footer: an image it drops when it does not load
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_REFERENCE = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]?([^'"\s)>]+)""")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("closed-network")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(args=[CUT_OFF]) as launched:
        yield launched


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page at ``url`` and the list (filled as it loads) of every URL it requested."""
    context = browser.new_context(locale="ja-JP")
    context.set_default_timeout(15_000)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    return page, requested


def _outside(hub: HubServer, requested: list[str]) -> list[str]:
    own = urlsplit(hub.url).netloc
    return [
        url
        for url in requested
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != own
    ]


@pytest.mark.parametrize("path", DOC_PAGES)
def test_doc_pages_reference_only_the_hubs_own_files(hub: HubServer, path: str) -> None:
    page = httpx.get(f"{hub.url}{path}", timeout=10)
    assert page.status_code == 200
    references = [urljoin(f"{hub.url}{path}", ref) for ref in _REFERENCE.findall(page.text)]
    assert references, page.text
    assert _outside(hub, references) == []
    for reference in references:
        assert httpx.get(reference, timeout=10).status_code == 200, reference


def test_swagger_ui_lists_the_operations_without_internet(hub: HubServer, browser: Any) -> None:
    page, requested = _open(browser, f"{hub.url}/docs")
    for path in ("/healthz", "/api/v1/messages/{service}", "/api/v1/validate"):
        page.locator(f'.opblock-summary-path[data-path="{path}"]').first.wait_for()
    assert _outside(hub, requested) == []
    page.context.close()


def test_redoc_lists_the_operations_without_internet(hub: HubServer, browser: Any) -> None:
    page, requested = _open(browser, f"{hub.url}/redoc")
    for summary in ("Liveness (稼働確認)", "Readiness (受付可否)"):
        page.locator(f'h2:has-text("{summary}")').first.wait_for()
    assert _outside(hub, requested) in ([], [REDOCLY_LOGO])
    page.context.close()


def test_console_login_loads_nothing_from_outside(hub: HubServer, browser: Any) -> None:
    page, requested = _open(browser, f"{hub.url}/console/login")
    page.locator("form").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert any(url.endswith("/console/static/console.css") for url in requested)
    assert _outside(hub, requested) == []
    page.context.close()


def test_the_check_itself_blocks_the_internet(browser: Any) -> None:
    """Without this the tests above could pass on a machine that reaches the CDN."""
    context = browser.new_context()
    page = context.new_page()
    with pytest.raises(Exception, match="ERR_NAME_NOT_RESOLVED"):
        page.goto("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css")
    context.close()
