"""``renkei folders``: the file-linkage hot folders (ファイル連携), run in their own process."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from bus.cli.app import app

folders_app = typer.Typer(help="File linkage hot folders (ファイル連携).")
app.add_typer(folders_app, name="folders")


@folders_app.command("run")
def run(
    once: Annotated[
        bool, typer.Option("--once", help="One pass (take ready files, close due batches).")
    ] = False,
) -> None:
    """Watch the configured inbound folders and write the outbound batch files (what
    ``renkei serve`` also does in process). Stops on SIGINT/SIGTERM after the current file."""
    from bus.folders.watcher import FolderWatcher
    from bus.hub import Hub
    from bus.observability.logs import configure_logging

    hub = Hub.open()
    watcher = FolderWatcher(hub)
    try:
        if once:
            for path in watcher.poll_once():
                typer.echo(f"{path.parent.name}/{path.name}")
            return
        stopped = threading.Event()

        def stop(_signal: int, _frame: FrameType | None) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        configure_logging()
        watcher.start()
        typer.echo("フォルダ監視を開始しました folder watcher running", err=True)
        stopped.wait()
        watcher.stop()
    finally:
        hub.close()
