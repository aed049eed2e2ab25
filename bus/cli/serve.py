"""``renkei serve``: the hub's HTTP application (and, with the hub core, its workers)."""

from __future__ import annotations

from typing import Annotated

import typer

from bus.cli.app import app


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 1,
) -> None:
    """Run the hub (embedded default: no external services needed)."""
    import uvicorn

    uvicorn.run("bus.webapp:create_app", factory=True, host=host, port=port, workers=workers)
