"""Failed console logins are limited per client address too (RK-CON008): one password tried
against many accounts (password spraying) meets no account's limit (RK-CON005). A hub of its
own: the refusal covers every login from 127.0.0.1 for the rest of the minute."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from adapters.console.auth import FAILED_LOGINS_PER_ADDRESS
from bus.security.operators import Role, add_operator
from bus.store.db import open_store
from tests.support.towns import Towns, towns_hub

TOWN = "412015"
PASSWORD = "correct horse battery"
ACCOUNTS = ("saga.a", "saga.b", "saga.c")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def towns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Towns]:
    with towns_hub(tmp_path_factory.mktemp("login-spraying")) as hub:
        store = open_store(hub.settings)
        try:
            for name in ACCOUNTS:
                add_operator(store.sessions, name, PASSWORD, Role.OPERATOR, frozenset({TOWN}))
        finally:
            store.close()
        yield hub


def _login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    client.cookies.clear()
    token = _CSRF.search(client.get("/console/login").text)
    assert token is not None
    form = {"csrf": token[1], "username": username, "password": password, "next": ""}
    return client.post("/console/login", data=form)


def test_one_password_across_many_accounts_is_throttled_by_address(towns: Towns) -> None:
    allowed = FAILED_LOGINS_PER_ADDRESS.per_minute
    assert allowed is not None
    if time.time() % 60 > 40:  # all in one counting window (a minute)
        time.sleep(60.5 - time.time() % 60)
    with httpx.Client(base_url=towns.hub.url, timeout=30) as client:
        # successful logins are not counted: more of them than the limit, spread over accounts
        for n in range(allowed + 4):
            assert _login(client, ACCOUNTS[n % 3], PASSWORD).status_code == 303
        sprayed = [_login(client, f"saga.sprayed{n}", "Summer2026!") for n in range(allowed)]
        assert {answer.status_code for answer in sprayed} == {401}  # each account new
        refused = _login(client, "saga.sprayed-next", "Summer2026!")
        assert refused.status_code == 429 and "RK-CON008" in refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # while the address is throttled, a right password from it waits too
        right = _login(client, ACCOUNTS[0], PASSWORD)
        assert right.status_code == 429 and "RK-CON008" in right.text
