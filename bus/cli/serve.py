"""``renkei serve``: the hub's HTTP application with its in-process dispatch workers."""

from __future__ import annotations

import os
import ssl
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.cli.app import app
from bus.settings import DISPATCH_WORKERS_ENV, Settings

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


def _tls_options(
    cert: Path | None, key: Path | None, client_ca: Path | None, require: bool
) -> dict[str, Any]:
    """uvicorn's TLS arguments; with a client CA, the protocol that passes the client
    certificate to the application (bus/tls.py)."""
    if cert is None:
        if client_ca is not None or key is not None:
            typer.echo("--tls-key/--tls-client-ca need --tls-cert", err=True)
            raise typer.Exit(2)
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key or cert)}
    if client_ca is not None:
        from bus.tls import ClientCertificateProtocol

        options |= {
            "ssl_ca_certs": str(client_ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL,
            "http": ClientCertificateProtocol,
        }
    return options


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    http_workers: Annotated[
        int,
        typer.Option(
            help="HTTP server processes, each with its dispatch workers (on SQLite: one "
            "machine, the processes take turns to write; one worker each unless "
            "RENKEI_DISPATCH_WORKERS says otherwise)."
        ),
    ] = 1,
    samples: Annotated[
        bool | None,
        typer.Option(
            "--samples/--no-samples",
            help="Run the sample connected systems at their configured addresses "
            "(default: when the shipped sample configuration is in use).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this PEM certificate (chain).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's PEM key.")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            help="Mutual TLS: verify client certificates against these CA(s) and map them to "
            "systems (credentials.certificate_fingerprints)."
        ),
    ] = None,
    require_client_cert: Annotated[
        bool, typer.Option(help="Refuse TLS connections without a client certificate.")
    ] = False,
) -> None:
    """Run the hub. The embedded default needs nothing else: a SQLite file under
    RENKEI_DATA_DIR, in-process workers (RENKEI_DISPATCH_WORKERS, default 2) and the sample
    configuration, whose sample connected systems start too (``--no-samples`` to skip;
    ``--samples`` with another configuration)."""
    import uvicorn

    settings = Settings()
    from bus.observability.logs import configure_logging
    from bus.observability.metrics import MULTIPROC_ENV, reset_multiprocess_dir

    configure_logging()
    if http_workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # several processes: /metrics adds up what each counted (set before they start)
        metrics_dir = settings.data_dir.resolve() / "metrics"
        reset_multiprocess_dir(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    if http_workers > 1 and settings.is_sqlite and DISPATCH_WORKERS_ENV not in os.environ:
        # one dispatch worker a process: the processes' workers contend for the same
        # deliveries and write turn, and each worker's send lanes for its process's one GIL
        # (3 processes × 2 workers carried ~12 % fewer messages than × 1: docs/benchmarks.md)
        os.environ[DISPATCH_WORKERS_ENV] = "1"
    if samples is None:  # another configuration's systems are real ones, or the tests' own
        samples = settings.config_dir is None
    running = start_samples(settings) if samples else []
    try:
        uvicorn.run(
            "bus.webapp:create_app",
            factory=True,
            host=host,
            port=port,
            workers=http_workers,
            log_config=None,  # uvicorn's lines go through renkei's JSON formatter
            **_tls_options(tls_cert, tls_key, tls_client_ca, require_client_cert),
        )
    finally:
        for handle in running:
            handle.stop()
