"""``renkei serve``: the hub's HTTP application with its in-process dispatch workers."""

from __future__ import annotations

from typing import Annotated

import typer

from bus.cli.app import app
from bus.settings import Settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    http_workers: Annotated[
        int, typer.Option(help="HTTP server processes (PostgreSQL only when more than one).")
    ] = 1,
) -> None:
    """Run the hub. The embedded default needs nothing else: a SQLite file under
    RENKEI_DATA_DIR, in-process workers (RENKEI_DISPATCH_WORKERS, default 2) and the sample
    configuration."""
    import uvicorn

    settings = Settings()
    if http_workers > 1 and settings.is_sqlite:
        typer.echo(
            "複数プロセスでの実行には PostgreSQL が必要です（RENKEI_DATABASE_URL）。\n"
            "Several hub processes need PostgreSQL (set RENKEI_DATABASE_URL); "
            "on SQLite run one process.",
            err=True,
        )
        raise typer.Exit(2)
    uvicorn.run("bus.webapp:create_app", factory=True, host=host, port=port, workers=http_workers)
