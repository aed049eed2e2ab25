"""One sample connected system in its own process, for benchmarks that call it directly and
through the hub: ``python bench/sample_system.py juki http://127.0.0.1:PORT/juki DATA_DIR``."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from samples.systems.launcher import start


def main() -> None:
    system, url, data_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    running = start({system: url}, data_dir)
    print(f"listening {running.urls[system]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
