"""Changing the configuration of a running hub: applying a version that drops a system which
still has unfinished deliveries is allowed (nothing queued is lost: the deliveries are kept,
retried and dead-lettered with "no endpoint configured"), but the operator is told at apply
time, with a coded warning naming the system and the count (RK-OPS006)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import yaml
from typer.testing import CliRunner

from bus.cli import app
from bus.config.snapshots import ensure_config
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.receivers import SAMPLE_CONFIG_DIR
from tests.test_store import accepted, sample, stage, with_message_id


def _without(tmp_path: Path, gone: str) -> Path:
    """The sample configuration without the system ``gone`` (and its routes and grants)."""
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    edits = {
        "systems.yaml": lambda d: [s for s in d["systems"] if s["id"] != gone],
        "access.yaml": lambda d: [a for a in d["access"] if a["system"] != gone],
    }
    for name, keep in edits.items():
        path = directory / name
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document[name.removesuffix(".yaml")] = keep(document)
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    path = directory / "routes.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    routes = []
    for route in document["routes"]:
        if route.get("provider") == gone:
            continue
        if "subscribers" in route:
            route["subscribers"] = [s for s in route["subscribers"] if s["system"] != gone]
        routes.append(route)
    document["routes"] = routes
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return directory


def with_two_pending_for_zeimu(data_dir: Path) -> None:
    """A store with the sample configuration (version 1) and two notices routed to zeimu and
    shuno, not yet sent."""
    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    try:
        ensure_config(store.sessions, settings)
        for seed in (1, 2):
            raw = with_message_id(sample("ResidentChangeNotice", seed), str(uuid.uuid4()))
            stage(store)(accepted(raw, ("zeimu", "shuno")))
    finally:
        store.close()


def test_dropping_a_system_with_pending_deliveries_is_reported(
    tmp_path: Path, data_dir: Path
) -> None:
    with_two_pending_for_zeimu(data_dir)
    result = CliRunner().invoke(app, ["config", "apply", str(_without(tmp_path, "zeimu"))])
    assert result.exit_code == 0, result.output
    assert "applied: configuration version 2" in result.output
    assert "RK-OPS006" in result.output and "zeimu: 2" in result.output
    assert "shuno" not in result.output  # still configured: nothing to say


def test_dropping_a_system_without_deliveries_says_nothing(tmp_path: Path, data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["config", "apply", str(_without(tmp_path, "zeimu"))])
    assert result.exit_code == 0, result.output
    assert "RK-OPS006" not in result.output
