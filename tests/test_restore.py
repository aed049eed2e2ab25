"""Back up and restore as docs/operations.md says: the online backup of a store holding a
WS-Security secret, restored into a new data directory. Without its ``secrets.key`` the hub
must refuse to start (RK-OPS005) rather than make a new key and answer every SOAP caller with
a 500; with the key back it starts and the restored secret authenticates."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.security.secret_box import KEY_FILE, SecretBox
from bus.security.wsse import set_soap_secret
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.hub_server import RENKEI, ROOT, sample
from tests.support.receivers import answers, free_port, wait_for
from tests.support.towns import soap_with_token


def _backup(source: Path, target: Path) -> None:
    """The documented online backup (Python's sqlite3 backup API)."""
    target.mkdir(parents=True)
    src, dst = sqlite3.connect(source / "renkei.db"), sqlite3.connect(target / "renkei.db")
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path, str]:
    """(the original data dir, a restored copy of its store without the key, juki's password)."""
    original = tmp_path / "data"
    settings = Settings(data_dir=original)
    store = open_store(settings)
    try:
        _, password = set_soap_secret(store.sessions, SecretBox.from_settings(settings), "juki")
    finally:
        store.close()
    assert (original / KEY_FILE).exists()
    restored = tmp_path / "restored"
    _backup(original, restored)
    return original, restored, password


def _serve(data_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    inherited = {k: v for k, v in os.environ.items() if k != "RENKEI_SECRETS_KEY"}
    environment = {**inherited, "RENKEI_DATA_DIR": str(data_dir), **env}
    return subprocess.Popen(
        [RENKEI, "serve", "--no-samples", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


def _refused(process: subprocess.Popen[bytes], url: str) -> str:
    """The process ends by itself (never answering): its standard error."""
    wait_for(lambda: process.poll() is not None or answers(url), timeout=60)
    assert not answers(url), "the hub started"
    process.wait(timeout=15)
    assert process.returncode == 1
    assert process.stderr is not None
    return process.stderr.read().decode("utf-8")


def test_restore_without_the_secrets_key_is_refused_at_start(
    backed_up: tuple[Path, Path, str], started: list[subprocess.Popen[bytes]]
) -> None:
    _, restored, _ = backed_up
    port = free_port()
    process = _serve(restored, port)
    started.append(process)
    errors = _refused(process, f"http://127.0.0.1:{port}")
    assert "RK-OPS005" in errors and "secrets.key" in errors
    assert not (restored / KEY_FILE).exists(), "a new key would hide the missing one"


def test_a_wrong_secrets_key_is_refused_at_start(
    backed_up: tuple[Path, Path, str], started: list[subprocess.Popen[bytes]]
) -> None:
    _, restored, _ = backed_up
    port = free_port()
    other = "A" * 43 + "="  # Base64 of 32 bytes, not the key the secret was sealed with
    process = _serve(restored, port, RENKEI_SECRETS_KEY=other)
    started.append(process)
    errors = _refused(process, f"http://127.0.0.1:{port}")
    assert "RK-OPS005" in errors and "juki" in errors  # the systems whose secrets do not open


def _accepted(restored: Path, password: str, started: list[subprocess.Popen[bytes]]) -> None:
    """The hub starts on the restored store and ``password`` authenticates juki over SOAP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(restored, port, RENKEI_DISPATCH_WORKERS="0")
    started.append(process)
    wait_for(lambda: answers(url) or process.poll() is not None, timeout=60)
    assert process.poll() is None
    body = soap_with_token(sample("ResidentChangeNotice"), "juki", password)
    response = httpx.post(
        f"{url}/soap/ResidentChangeNotice",
        content=body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:500]


def test_restore_with_the_key_starts_and_the_secret_still_authenticates(
    backed_up: tuple[Path, Path, str], started: list[subprocess.Popen[bytes]]
) -> None:
    original, restored, password = backed_up
    shutil.copy2(original / KEY_FILE, restored / KEY_FILE)
    _accepted(restored, password, started)


def test_a_key_lost_for_good_is_replaced_by_new_passwords(
    backed_up: tuple[Path, Path, str], started: list[subprocess.Popen[bytes]]
) -> None:
    _, restored, _ = backed_up
    settings = Settings(data_dir=restored)  # what `renkei keys soap --system juki` does
    store = open_store(settings)
    try:
        _, password = set_soap_secret(store.sessions, SecretBox.from_settings(settings), "juki")
    finally:
        store.close()
    _accepted(restored, password, started)
