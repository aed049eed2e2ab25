"""``renkei serve``: the hub's HTTP application with its in-process dispatch workers."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Annotated, Any

import typer

from bus.cli.app import app
from bus.settings import Settings

SAMPLES_GROUP = "renkei.samples"


def _configured_endpoints(settings: Settings) -> dict[str, str]:
    """Every configured system's endpoint URL, from the configuration in force."""
    from bus.config.snapshots import ensure_config, load_snapshot
    from bus.store.db import open_store

    store = open_store(settings)
    try:
        ensure_config(store.sessions, settings)
        systems = load_snapshot(store.sessions).index.config.systems
    finally:
        store.close()
    return {s.id: s.endpoint.url for s in systems if s.endpoint is not None and s.endpoint.url}


def start_samples(settings: Settings) -> list[Any]:
    """Start the sample connected systems registered under ``renkei.samples`` (each plugin is
    called with the configured endpoints and a data directory, and starts those it knows);
    returns handles with ``stop()``."""
    started = []
    endpoints = _configured_endpoints(settings)
    for entry in entry_points(group=SAMPLES_GROUP):
        try:
            start = entry.load()
        except ImportError as error:  # a wheel install ships no samples/ (a checkout does)
            typer.echo(f"サンプル接続システムなし no sample systems here ({error.name})", err=True)
            continue
        running = start(endpoints, settings.data_dir / "samples")
        urls = getattr(running, "urls", {})
        for system, url in sorted(urls.items()):
            typer.echo(f"サンプル接続システム sample system {system}: {url}", err=True)
        started.append(running)
    return started


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    http_workers: Annotated[
        int, typer.Option(help="HTTP server processes (PostgreSQL only when more than one).")
    ] = 1,
    samples: Annotated[
        bool | None,
        typer.Option(
            "--samples/--no-samples",
            help="Run the sample connected systems at their configured addresses "
            "(default: when the shipped sample configuration is in use).",
        ),
    ] = None,
) -> None:
    """Run the hub. The embedded default needs nothing else: a SQLite file under
    RENKEI_DATA_DIR, in-process workers (RENKEI_DISPATCH_WORKERS, default 2) and the sample
    configuration, whose sample connected systems start too (``--no-samples`` to skip;
    ``--samples`` with another configuration)."""
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
    if samples is None:  # another configuration's systems are real ones, or the tests' own
        samples = settings.config_dir is None
    running = start_samples(settings) if samples else []
    try:
        uvicorn.run(
            "bus.webapp:create_app", factory=True, host=host, port=port, workers=http_workers
        )
    finally:
        for handle in running:
            handle.stop()
