"""PULL feed cursors a file-linkage vendor really presents, over real HTTP: one this store
never issued (a cursor kept from before a database restore, or from the test hub) is refused
instead of silently skipping every message up to its position; a cursor the store did issue
stays valid after retention purged the newest messages of every stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.feeds import Cursor
from bus.settings import Settings
from tests.support.hub_server import hub_server
from tests.test_feeds import (
    MOVE_IN,
    TAKEN,
    feed_config,
    get,
    notice,
    purge_once_delivered,
    read_all,
    send,
)

pytestmark = pytest.mark.feed

SERVICE = "ResidentChangeNotice"


@pytest.fixture
def config(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    yield feed_config(tmp_path)


def test_a_cursor_this_store_never_issued_is_refused_and_an_issued_one_outlives_a_purge(
    tmp_path: Path, config: tuple[Path, dict[str, str]]
) -> None:
    directory, keys = config
    with hub_server(tmp_path, config_source=directory, loopback=False) as server:
        sent = [send(server, keys["juki"], notice(i, 0, MOVE_IN)) for i in range(3)]
        ids, end = read_all(server, keys["kotei"], TAKEN, None, 2)
        assert ids == sent
        position = Cursor.decode(end, tenant=TAKEN, service=SERVICE).position

        # the vendor kept a cursor from before the database was restored from a backup
        ahead = Cursor(TAKEN, SERVICE, position + 1000).encode()
        refused = get(server, keys["kotei"], tenant=TAKEN, since=ahead)
        assert refused.status_code == 400, refused.text
        assert refused.json()["findings"][0]["code"] == "RK-FED001"
        late = send(server, keys["juki"], notice(50, 0, MOVE_IN))  # would have been skipped
        assert read_all(server, keys["kotei"], TAKEN, end, 10)[0] == [late]
        _, end = read_all(server, keys["kotei"], TAKEN, end, 10)

        # retention purges everything, the newest message included: the issued cursor is
        # still this store's (nothing after it was lost), the forged one still is not
        assert purge_once_delivered(Settings(data_dir=tmp_path / "hub-data")) >= 4
        after = get(server, keys["kotei"], tenant=TAKEN, since=end)
        assert after.status_code == 200 and after.json()["entries"] == []
        assert get(server, keys["kotei"], tenant=TAKEN, since=ahead).status_code == 400
