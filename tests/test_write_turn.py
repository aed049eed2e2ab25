"""The SQLite write turn is shared by every process on the file: a writer of another process
waits for it (in the kernel, on ``<database>.write.lock``) instead of polling SQLite's busy
handler, and gets it as soon as it is released."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

from bus.settings import Settings
from bus.store.db import open_store
from bus.store.writers import write_transaction, writer_turn

ROOT = Path(__file__).resolve().parent.parent

# Another process: one write transaction, then the monotonic time it got the turn.
_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bus.settings import Settings
    from bus.store.db import open_store
    from bus.store.writers import write_transaction
    store = open_store(Settings(data_dir=Path(sys.argv[1])))
    print("ready", flush=True)
    with write_transaction(store.sessions):
        print(time.monotonic(), flush=True)
    store.close()
    """
)


def test_another_process_waits_for_the_turn_and_gets_it_on_release(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings)
    command = [sys.executable, "-c", _WRITER, str(settings.data_dir)]
    turn = ExitStack()
    try:
        turn.enter_context(writer_turn(store.sessions))  # the turn alone: no SQLite lock
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            assert writer.poll() is None, "the other process wrote while the turn was held"
            released = time.monotonic()
            turn.close()
            entered = float(writer.stdout.readline())
            assert writer.wait(30) == 0
    finally:
        turn.close()
        store.close()
    assert released <= entered < released + 0.5


def test_the_turn_is_reentrant_and_in_memory_databases_have_no_lock_file(
    tmp_path: Path,
) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        with writer_turn(store.sessions), write_transaction(store.sessions):
            pass  # the group commit's leader opens its transaction inside the turn
        database = store.engine.url.database
        assert database is not None and Path(f"{database}.write.lock").exists()
    finally:
        store.close()
    memory = open_store(Settings(data_dir=tmp_path, database_url="sqlite://"))
    try:
        with write_transaction(memory.sessions):
            pass
    finally:
        memory.close()
    assert not list(tmp_path.glob("*.write.lock"))
