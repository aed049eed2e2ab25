"""``renkei config apply`` opens the store once: the apply and its three warnings (orphaned
deliveries RK-OPS006, removed tenants RK-OPS017, changed destinations RK-OPS027/028) share
it, and it is disposed once (bus/cli/config.py). Before, each warning opened its own (a new
engine, a migration check, a new connection): four per apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

import bus.store.db
from bus.cli import app
from tests.test_config_removed_systems import _without, with_two_pending_for_zeimu


def test_one_apply_creates_one_engine_and_disposes_it_once(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_two_pending_for_zeimu(data_dir)  # version 1 (the sample), two deliveries for zeimu

    engines: list[Engine] = []
    disposed: list[Engine] = []
    create = bus.store.db.create_store_engine

    def counting_create(*args: Any, **kwargs: Any) -> Engine:
        engine = create(*args, **kwargs)
        engines.append(engine)
        dispose = engine.dispose

        def counting_dispose(*a: Any, **k: Any) -> None:
            disposed.append(engine)
            dispose(*a, **k)

        monkeypatch.setattr(engine, "dispose", counting_dispose)
        return engine

    monkeypatch.setattr(bus.store.db, "create_store_engine", counting_create)
    result = CliRunner().invoke(app, ["config", "apply", str(_without(tmp_path, "zeimu"))])
    assert result.exit_code == 0, result.output
    assert "applied: configuration version 2" in result.output  # all three warnings ran
    assert "RK-OPS006" in result.output and "zeimu: 2" in result.output  # on the one store
    assert len(engines) == 1, f"{len(engines)} engines for one apply"
    assert disposed == engines
