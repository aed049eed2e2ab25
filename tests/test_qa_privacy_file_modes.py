"""Files holding residents' data are not readable by other local users.

Real ``renkei`` processes started under the common umask 022: a batch import (its work file,
the 評価変更リスト and the error report) and ``renkei serve`` storing a message (the Message
Store's SQLite database and its WAL, where the body is kept in clear). Each file is first
shown to carry the resident's name, so the mode is what stands between it and every other
account on the host (docs/data-protection.md, "Files").
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from tests.support.hub_server import sample, serialize
from tests.support.receivers import SAMPLE_CONFIG_DIR, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
RENKEI = str(Path(sys.executable).parent / "renkei")
NAME = "髙橋　ＰＲＩＶＡＣＹ太郎"
ADDRESS = "佐賀県PRIVACY町1-2-3"
MY_NUMBER = "777333111556"  # check digit 6 (総務省令第85号 第5条)
OTHERS = 0o007
HEADER = (
    "受付年月日,受付番号,登記の目的,登記原因及びその日付,不動産番号,所在,地番,地目,地積,"
    "家屋番号,種類,床面積,権利者住所,権利者氏名,権利者氏名カナ,持分,義務者住所,義務者氏名"
)


def _under_umask_022(command: list[str]) -> list[str]:
    """The command as a shell with the usual umask would run it (not the test runner's)."""
    return ["sh", "-c", "umask 022 && exec " + shlex.join(command)]


def _environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RENKEI_DATA_DIR": str(tmp_path / "data"),
        "RENKEI_CONFIG_DIR": str(SAMPLE_CONFIG_DIR),
    }


def _readable_by_others(paths: list[Path]) -> list[str]:
    return [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in paths if p.stat().st_mode & OTHERS]


def test_an_import_keeps_its_work_file_and_outputs_from_other_users(tmp_path: Path) -> None:
    notices = tmp_path / "notices.csv"
    good = (
        f"令和6年4月3日,3001,所有権移転,令和6年3月25日売買,4100000000011,武雄市武雄町大字富岡,"
        f"1234番,宅地,215.33,,,,{ADDRESS},{NAME},タカハシ　タロウ,,{ADDRESS},{NAME}"
    )
    bad_date = good.replace("令和6年4月3日,3001", "令和6年13月40日,3002")
    short = f"{ADDRESS},{NAME},{MY_NUMBER}"
    notices.write_text("\n".join([HEADER, good, bad_date, short]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    command = [RENKEI, "import", "notices", str(notices), "--tenant", "412066", "--out", str(out)]

    done = subprocess.run(
        _under_umask_022(command),
        cwd=ROOT,
        env=_environment(tmp_path),
        capture_output=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr.decode()
    outputs = sorted(out.iterdir())
    listing = next(p for p in outputs if p.name.endswith("評価変更リスト.csv"))
    assert "PRIVACY" in listing.read_text(encoding="utf-8-sig")  # the resident, in clear
    assert any(p.name.endswith("エラー.csv") for p in outputs)
    work_files = sorted((tmp_path / "data" / "imports").glob("*.sqlite"))
    assert work_files
    assert not _readable_by_others([*outputs, *work_files, tmp_path / "data" / "imports"])


def test_the_message_store_of_a_serving_hub_is_kept_from_other_users(tmp_path: Path) -> None:
    port = free_port()
    command = [RENKEI, "serve", "--no-samples", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        _under_umask_022(command),
        cwd=ROOT,
        env=_environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=60)
        document = sample("ResidentChangeNotice")
        document.find(f".//{{{NS_ENVELOPE}}}messageId").text = str(uuid.uuid4())  # type: ignore[union-attr]
        document.find(f".//{{{NS_STANDARD}}}name").text = NAME  # type: ignore[union-attr]
        document.find(f".//{{{NS_STANDARD}}}address").text = ADDRESS  # type: ignore[union-attr]
        answer = httpx.post(
            f"{url}/api/v1/messages/ResidentChangeNotice",
            content=serialize(document),
            headers={"Content-Type": "application/xml"},
        )
        assert answer.status_code == 202, answer.text
        data = tmp_path / "data"
        store = [data / "renkei.db", data / "renkei.db-wal", data / "renkei.db-shm"]
        assert all(p.exists() for p in store)
        held = b"".join(p.read_bytes() for p in store[:2])
        assert b"PRIVACY" in held  # the body is stored unencrypted: the mode protects it
        assert not _readable_by_others([data, *store])
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
