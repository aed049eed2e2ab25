"""Two operators at once: `renkei purge` twice at the same time (a cron job and a person).
Each expired message is purged once, and the audit chain says so once.

On PostgreSQL both purges picked the same batch (a plain SELECT), the second's DELETEs waited
for the first's commit and then found nothing, yet it reported and audited the batch as its
own: 2 × N messages purged in the report and in the `purged` audit records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bus.settings import Settings
from bus.store.db import open_store
from bus.store.models import AuditRecord, StoredMessage
from bus.store.models import Delivery as DeliveryRow
from bus.store.retention import _purge_batch
from tests.test_retention import ingest

RENKEI = str(Path(sys.executable).with_name("renkei"))


@pytest.mark.postgres
def test_a_second_purge_does_not_claim_the_batch_the_first_is_deleting(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    store = open_store(settings)
    try:
        for seed in range(1, 6):
            ingest(store, seed)
        past = datetime.now(UTC) - timedelta(days=1)
        with store.sessions.begin() as session:
            session.execute(update(DeliveryRow).values(state="delivered"))
            session.execute(update(StoredMessage).values(expires_at=past))
        env = {**os.environ, "RENKEI_DATA_DIR": str(tmp_path / "data")}
        env["RENKEI_DATABASE_URL"] = postgres_url
        second: dict[str, subprocess.CompletedProcess[str]] = {}

        def run_second() -> None:
            second["run"] = subprocess.run(
                [RENKEI, "purge", "--json"], env=env, capture_output=True, text=True, timeout=120
            )

        with store.sessions.begin() as session:  # the first purge, its batch not committed
            first, _ = _purge_batch(session, datetime.now(UTC), 500)
            assert first.messages == 5
            other = threading.Thread(target=run_second)
            other.start()
            other.join(8)  # the CLI starts, reads the batch and (before the fix) waits on it
        other.join(120)
        run = second["run"]
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["messages"] == 0
        with store.sessions() as session:
            purged = session.scalars(select(AuditRecord).where(AuditRecord.event == "purged"))
            assert sum(record.detail["messages"] for record in purged) == 5
            assert session.scalars(select(StoredMessage.id)).all() == []
    finally:
        store.close()
