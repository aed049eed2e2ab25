"""The hub as a real uvicorn server on a free 127.0.0.1 port, with one recording receiver
playing every connected system of the sample configuration (so inquiries are answered and
notifications delivered), and sample messages with fresh message ids."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml
from lxml import etree

from bus.catalogue import NS_ENVELOPE
from tests.support.receivers import SAMPLE_CONFIG_DIR, Receiver, free_port

ROOT = Path(__file__).resolve().parents[2]
RENKEI = str(Path(sys.executable).parent / "renkei")
SAMPLES = ROOT / "samples" / "messages"
NOTIFICATIONS = (
    "ResidentChangeNotice",
    "LevyNotice",
    "PaymentNotice",
    "DelinquencyActionNotice",
    "NhiEligibilityNotice",
    "RegistrationNotice",
    "PropertyValuationChangeNotice",
)
INQUIRIES = ("AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry")
SERVICES = NOTIFICATIONS + INQUIRIES
_MESSAGE_ID = f"{{{NS_ENVELOPE}}}messageId"


@dataclass(frozen=True, slots=True)
class HubServer:
    url: str
    receiver: Receiver
    config_dir: Path
    process: subprocess.Popen[bytes]


def sample(service: str, name: str = "valid-full.xml") -> etree._Element:
    """A sample PlatformMessage with a fresh messageId (samples share ids between files)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    document = etree.parse(str(SAMPLES / service / name), parser).getroot()
    message_id = document.find(f".//{_MESSAGE_ID}")
    assert message_id is not None
    message_id.text = str(uuid.uuid4())
    return document


def serialize(document: etree._Element) -> bytes:
    return etree.tostring(document, encoding="UTF-8", xml_declaration=True)


def soap_envelope(document: etree._Element) -> bytes:
    """The SOAP 1.1 binding of a PlatformMessage: Header block + service element in Body."""
    soap = "http://schemas.xmlsoap.org/soap/envelope/"
    header, service = document[0], document[1]
    envelope = etree.Element(f"{{{soap}}}Envelope", nsmap={"soap": soap})
    etree.SubElement(envelope, f"{{{soap}}}Header").append(header)  # moved out of document
    etree.SubElement(envelope, f"{{{soap}}}Body").append(service)
    return serialize(envelope)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.1)


def _config(tmp: Path, source: Path, receiver_port: int, *, loopback: bool) -> Path:
    """A copy of ``source`` whose every system is the receiver over plain HTTP; without
    ``loopback`` the address allowlists are removed (only API keys identify callers)."""
    directory = tmp / "hub-config"
    shutil.copytree(source, directory, dirs_exist_ok=True)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        parts = urlsplit(system["endpoint"]["url"])
        url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{receiver_port}"))
        system["endpoint"].update(transport="http", url=url)
        if not loopback:
            system.get("credentials", {}).pop("allow_addresses", None)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


@contextmanager
def hub_server(
    tmp: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    config_source: Path = SAMPLE_CONFIG_DIR,
    loopback: bool = True,
    receiver_args: tuple[str, ...] = (),
    log_level: str = "warning",
    stderr: IO[bytes] | None = None,
    http: str = "auto",
    serve_options: tuple[str, ...] | None = None,
) -> Iterator[HubServer]:
    """uvicorn serving ``bus.webapp:create_app`` (the one ASGI app: SOAP, REST, schemas).
    ``receiver_args``: the recording receiver's options (e.g. ``--fail-message-ids``);
    ``stderr``: where the hub's log lines go (default: inherited); ``http``: uvicorn's HTTP
    implementation (``auto`` takes httptools; the mTLS listener uses ``h11``).
    With ``serve_options`` the hub is ``renkei serve --no-samples`` with those options
    instead (``workers``, ``log_level`` and ``http`` do not apply)."""
    receiver = Receiver(tmp, "systems").start(*receiver_args)
    config = _config(tmp, config_source, receiver.port, loopback=loopback)
    port = free_port()
    environment = {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp / "hub-data"),
        "RENKEI_CONFIG_DIR": str(config),
        **(env or {}),
    }
    if serve_options is None:
        command = [sys.executable, "-m", "uvicorn", "bus.webapp:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        command += ["--log-level", log_level, "--http", http]
    else:
        command = [RENKEI, "serve", "--no-samples", "--port", str(port), *serve_options]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, timeout=60)
        yield HubServer(url, receiver, config, process)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        receiver.stop()
