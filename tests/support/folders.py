"""Hot-folder test material: a configuration whose 国保 system sends 国保資格異動通知 as
fixed-width CP932 files, and such files (header H, trailer T, records from the golden
sample with distinct 被保険者証番号)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.receivers import config_dir_for

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "mappings" / "golden" / "kokuho" / "NhiEligibilityNotice.inbound.full.input.dat"
RECORD = GOLDEN.read_bytes().rstrip(b"\r\n")  # 220 bytes, CP932
INSURED = slice(21, 41)  # 被保険者証番号 (bytes 22-41)
ACQUIRED = slice(150, 158)  # 資格取得日


def record(number: int, *, bad: bool = False) -> bytes:
    data = bytearray(RECORD)
    data[INSURED] = str(80_000_000 + number).ljust(20).encode("ascii")
    if bad:
        data[ACQUIRED] = b"20261399"  # no such date
    return bytes(data)


def nhi_file(count: int, *, declared: int | None = None, bad: tuple[int, ...] = ()) -> bytes:
    """A 差分 file of ``count`` records (numbered from 1; those in ``bad`` broken)."""
    lines = [b"H2 20260401"]
    lines += [record(n, bad=n in bad) for n in range(1, count + 1)]
    lines.append(b"T%09d" % (count if declared is None else declared))
    return b"\r\n".join(lines) + b"\r\n"


def folder_config(
    tmp_path: Path,
    inbound: dict[str, Any],
    outbound: dict[str, dict[str, Any]] | None = None,
    *,
    system: str = "kokuho",
    mapping: str = "kokuho.yaml",
) -> Path:
    """The sample configuration; ``system`` (with ``mapping``) gets the inbound hot folder
    ``inbound``; each system in ``outbound`` gets that outbound folder instead of its
    endpoint."""
    directory = config_dir_for(tmp_path, {})
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entry in document["systems"]:
        if entry["id"] == system:
            entry["mapping"] = mapping
            entry["file_linkage"] = {"inbound": [inbound]}
        if outbound and entry["id"] in outbound:
            entry.pop("endpoint", None)
            entry.setdefault("file_linkage", {})["outbound"] = outbound[entry["id"]]
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


def inbound_folder(path: Path, **options: Any) -> dict[str, Any]:
    return {
        "path": str(path),
        "service": "NhiEligibilityNotice",
        "tenant": "412066",
        "subject": "addresseeNumber",
        "encoding": "cp932",
        **options,
    }


def report_of(path: Path) -> dict[str, Any]:
    """The watcher's report beside a moved file."""
    report = json.loads(Path(f"{path}.report.json").read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    return report


def drop(inbox: Path, name: str, data: bytes) -> None:
    """A vendor's delivery: the data file, then its end file."""
    (inbox / name).write_bytes(data)
    (inbox / f"{name}.end").write_bytes(b"")
