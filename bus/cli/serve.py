"""``renkei serve``: the hub's HTTP application with its dispatch workers (in-process, or in
dispatch processes it starts and supervises: :mod:`bus.dispatch.processes`)."""

from __future__ import annotations

import os
import signal
import ssl
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.cli.app import app
from bus.dispatch.heartbeat import EXPECTED_PROCESSES_ENV
from bus.dispatch.processes import SERVE_PARENT_ENV, DispatchProcesses
from bus.settings import DISPATCH_WORKERS_ENV, Settings

SAMPLES_GROUP = "renkei.samples"
#: An HTTP process could not start (uvicorn's own startup-failure status): serve stops
#: with it, so that systemd's ``Restart=on-failure`` starts the hub again
HTTP_FAILED = 3
#: How long a SIGTERM waits for requests in flight before cancelling them (uvicorn waits
#: without end by default: a client sending slowly held the stop past systemd's
#: TimeoutStopSec, and systemd's SIGKILL left the claimed deliveries to their leases)
HTTP_GRACE_SECONDS = 30


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


def check_secrets_key(settings: Settings) -> None:
    """Refuse to start (RK-OPS005, exit 1) when the store holds WS-Security secrets that the
    secrets key cannot open: a store restored without its ``secrets.key`` (the hub would
    otherwise make a new key on first use and answer every SOAP caller with a 500) or with
    another deployment's ``RENKEI_SECRETS_KEY``. A previous password still in its overlap
    (``renkei keys soap --overlap-hours``) is checked like the current one and named
    ``<system> (previous)``. A store without secrets needs no key."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from bus.errors import make_finding
    from bus.security.secret_box import KEY_FILE, SecretBox, SecretKeyError, load_key
    from bus.security.wsse import previous_secret
    from bus.store.db import open_store
    from bus.store.models import SoapCredential

    now = datetime.now(UTC)
    store = open_store(settings)
    sealed: list[tuple[str, str, bytes]] = []  # (name in the message, system, ciphertext)
    try:
        with store.sessions() as session:
            for row in session.scalars(select(SoapCredential).order_by(SoapCredential.system)):
                sealed.append((row.system, row.system, bytes(row.secret_encrypted)))
                # a previous password still in its overlap is checked too (an expired one
                # is never opened again)
                previous = previous_secret(row, now)
                if previous is not None:
                    sealed.append((f"{row.system} (previous)", row.system, previous))
    finally:
        store.close()
    if not sealed:
        return
    key_file = Path(settings.data_dir) / KEY_FILE
    if not settings.secrets_key and not key_file.exists():
        actual = f"{key_file} missing, RENKEI_SECRETS_KEY unset"
    else:
        try:
            box = SecretBox(load_key(settings))
        except SecretKeyError as error:
            actual = str(error)
        else:
            closed = []
            for name, system, secret in sealed:
                try:
                    box.open(secret, system)
                except SecretKeyError:
                    closed.append(name)
            if not closed:
                return
            actual = "not with this key: " + ", ".join(closed)
    finding = make_finding("RK-OPS005", path="/", actual=actual)
    typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
    raise typer.Exit(1)


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
            help="HTTP server processes (on SQLite: one machine, the processes take turns "
            "to write)."
        ),
    ] = 1,
    dispatch_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Run the dispatch workers in this many processes of their own, started and "
            "restarted by serve, instead of inside the HTTP processes (default: 1 with "
            "--http-workers N > 1, else 0). RENKEI_DISPATCH_WORKERS then sets each one's "
            "workers (default 1).",
        ),
    ] = None,
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
    from bus.observability.metrics import MULTIPROC_ENV
    from bus.observability.metrics_dir import reset_multiprocess_dir

    configure_logging()
    _check_port(host, port)
    _watch_certificates(tls_cert, tls_client_ca)
    check_secrets_key(settings)
    processes, threads = _dispatch_layout(dispatch_processes, http_workers, settings)
    if (http_workers > 1 or processes) and not os.environ.get(MULTIPROC_ENV):
        # several processes: /metrics adds up what each counted (set before they start)
        metrics_dir = settings.data_dir.resolve() / "metrics"
        reset_multiprocess_dir(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    if processes:
        os.environ[DISPATCH_WORKERS_ENV] = "0"  # the HTTP processes dispatch nothing themselves
        os.environ[EXPECTED_PROCESSES_ENV] = str(processes)  # /readyz reads their heartbeats
    elif http_workers > 1 and settings.is_sqlite and DISPATCH_WORKERS_ENV not in os.environ:
        # one dispatch worker a process: the processes' workers contend for the same
        # deliveries and write turn, and each worker's send lanes for its process's one GIL
        # (3 processes × 2 workers carried ~12 % fewer messages than × 1: docs/benchmarks.md)
        os.environ[DISPATCH_WORKERS_ENV] = "1"
    if samples is None:  # another configuration's systems are real ones, or the tests' own
        samples = settings.config_dir is None
    running = start_samples(settings) if samples else []
    dispatchers = (
        DispatchProcesses(processes, threads, _claims_releaser(settings)) if processes else None
    )
    # uvicorn serving in this process re-raises SIGTERM after its graceful shutdown, to the
    # handler found before it ran: let that unwind through the ``finally`` below (which stops
    # the dispatch processes and the samples) instead of ending the process on the spot
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, _exit_on_sigterm)  # re-raised by uvicorn, as SIGTERM is
    if http_workers == 1:  # a SIGHUP ended it on the spot (uvicorn's supervisor takes it)
        signal.signal(signal.SIGHUP, _ignore_sighup)
    else:  # its HTTP processes stop when it dies (bus/webapp.py)
        os.environ[SERVE_PARENT_ENV] = str(os.getpid())
    if dispatchers is not None:
        dispatchers.start()
    try:
        _run_http(
            uvicorn.Config(
                "bus.webapp:create_app",
                factory=True,
                host=host,
                port=port,
                workers=http_workers,
                log_config=None,  # uvicorn's lines go through renkei's JSON formatter
                timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
                **_tls_options(tls_cert, tls_key, tls_client_ca, require_client_cert),
            )
        )
    finally:
        if dispatchers is not None:
            dispatchers.stop()
        for handle in running:
            handle.stop()


def _check_port(host: str, port: int) -> None:
    """Refuse (RK-OPS012, exit 2) a port another process listens on, before anything starts.
    A second `renkei serve` on a busy port used to open the hub, start its dispatch workers
    and sample systems and empty the metrics folder of the serve already running there,
    then end with uvicorn's "address already in use" log line and exit 3."""
    import socket

    from bus.errors import make_finding

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        finding = make_finding("RK-OPS012", path="/port", actual=f"{host}:{port}", expected=reason)
        typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
        raise typer.Exit(2) from None


def _watch_certificates(cert: Path | None, client_ca: Path | None) -> None:
    """Log when the TLS files expire and show it in /metrics (bus/observability/cert_expiry)."""
    from bus.observability.cert_expiry import log_expiries, pass_to_http_processes

    files = {"server": cert, "client_ca": client_ca}
    present = {role: path for role, path in files.items() if path is not None}
    if present:
        log_expiries(present)
        pass_to_http_processes(present)


def _claims_releaser(settings: Settings) -> Callable[[int], None]:
    """What serve does when a dispatch process has died: release its claims (the store is
    opened for that only)."""

    def release(pid: int) -> None:
        from bus.dispatch.worker import release_process_claims
        from bus.observability.logs import get_logger
        from bus.store.db import open_store

        store = open_store(settings)
        try:
            released = release_process_claims(store.sessions, pid)
        finally:
            store.close()
        get_logger(__name__).info("dispatch.claims_released", pid=pid, deliveries=released)

    return release


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _ignore_sighup(_signum: int, _frame: object) -> None:
    from bus.observability.logs import get_logger

    get_logger(__name__).warning("serve.sighup_ignored", http_workers=1)


def _run_http(config: Any) -> None:
    """Serve HTTP: in this process (exit :data:`HTTP_FAILED` when the application cannot
    start), or in ``config.workers`` processes under uvicorn's supervisor, exiting
    :data:`HTTP_FAILED` when it stopped without being sent SIGTERM/SIGINT."""
    import uvicorn

    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise typer.Exit(HTTP_FAILED)
        return
    supervisor = _supervisor_class()(config, sockets=[config.bind_socket()])
    supervisor.run()
    if not supervisor.requested:
        from bus.observability.logs import get_logger

        get_logger(__name__).error("serve.http_processes_failed", exit_status=HTTP_FAILED)
        raise typer.Exit(HTTP_FAILED)


def _dispatch_layout(asked: int | None, http_workers: int, settings: Settings) -> tuple[int, int]:
    """(dispatch processes, workers in each). By default one dispatch process beside several
    HTTP processes, none beside one (its workers run in the HTTP process); an explicit
    ``RENKEI_DISPATCH_WORKERS=0`` asks for no dispatch here (e.g. ``renkei worker`` processes
    run apart)."""
    configured = settings.dispatch_workers if DISPATCH_WORKERS_ENV in os.environ else None
    if asked is None:
        asked = 1 if http_workers > 1 and configured != 0 else 0
    if asked and configured == 0:
        typer.echo(
            f"--dispatch-processes {asked} with {DISPATCH_WORKERS_ENV}=0: nothing would dispatch",
            err=True,
        )
        raise typer.Exit(2)
    return asked, configured or 1


def _supervisor_class() -> type[Any]:
    """uvicorn's supervisor, imported when serving (not by every ``renkei`` command)."""
    from uvicorn.supervisors import Multiprocess

    class _Supervisor(Multiprocess):
        """uvicorn's supervisor of the HTTP processes, remembering whether it was asked to stop.
        It also stops when a process it restarts cannot start (uvicorn's exit status 3: the
        store cannot be opened, the certificate cannot be read…), and then returned as after a
        SIGTERM: ``renkei serve`` exited 0 and systemd's ``Restart=on-failure`` left the hub
        down."""

        requested = False

        def handle_int(self) -> None:
            self.requested = True
            super().handle_int()

        def handle_term(self) -> None:
            self.requested = True
            super().handle_term()

    return _Supervisor
