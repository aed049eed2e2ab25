"""Two integrators changing one live hub's configuration (docs/configuration.md, "Two
integrators on one hub"): a ``renkei config apply`` of files edited from an older version
never silently undoes a colleague's apply or ``renkei tenants add`` (a lost update), while
first-time setup, the one-integrator loop and CI scripts keep working without flags."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from bus.cli import app
from bus.config.base_marker import MARKER, read_base, write_base
from bus.config.snapshots import Base, undone_paths
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.db import open_store
from bus.store.models import AuditRecord, ConfigSnapshot
from tests.support.receivers import SAMPLE_CONFIG_DIR

TARA = "414417"  # 太良町 (check digit 7)


def _run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def _edit(directory: Path, file: str, old: str, new: str) -> None:
    path = directory / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _in_force(data: Path) -> tuple[int, dict[str, str]]:
    store = open_store(Settings(data_dir=data))
    try:
        with store.sessions() as session:
            latest = session.scalars(
                select(ConfigSnapshot).order_by(ConfigSnapshot.version.desc()).limit(1)
            ).one()
            return latest.version, dict(latest.files)
    finally:
        store.close()


def _last_apply(data: Path) -> dict[str, object]:
    store = open_store(Settings(data_dir=data))
    try:
        with store.sessions() as session:
            record = session.scalars(
                select(AuditRecord)
                .where(AuditRecord.tenant == ADMIN_CHAIN, AuditRecord.event == "config.apply")
                .order_by(AuditRecord.seq.desc())
                .limit(1)
            ).one()
            return dict(record.detail)
    finally:
        store.close()


def _shared_start(tmp_path: Path) -> tuple[Path, Path]:
    """The hub set up from one directory (first-time setup: version 1); both integrators
    then work on a copy of that directory as it was applied (a git clone of it, say)."""
    first = tmp_path / "first"
    shutil.copytree(SAMPLE_CONFIG_DIR, first)
    assert "applied: configuration version 1" in _run("config", "apply", str(first))
    mine, colleague = tmp_path / "mine", tmp_path / "colleague"
    shutil.copytree(first, mine)
    shutil.copytree(first, colleague)
    return mine, colleague


def test_a_stale_apply_does_not_undo_a_colleagues_apply(tmp_path: Path, data_dir: Path) -> None:
    mine, colleague = _shared_start(tmp_path)
    _edit(colleague, "retention.yaml", "keep: 365 days", "keep: 400 days")
    assert "configuration version 2" in _run("config", "apply", str(colleague))
    _edit(mine, "routes.yaml", "      - system: kokuho\n", "")  # my change, made from version 1
    refused = _run("config", "apply", str(mine), code=1)
    assert "RK-OPS018" in refused and "retention.yaml" in refused, refused
    assert "版 1 を元に" in refused and "版 2 まで" in refused  # what changed, since when
    assert "routes.yaml" not in refused  # my own edit is not the conflict
    version, files = _in_force(data_dir)
    assert version == 2 and "400 days" in files["retention.yaml"]  # the colleague's stays
    assert read_base(mine) == read_base(colleague.parent / "first")  # still version 1


def test_a_stale_apply_does_not_drop_a_town_added_meanwhile(tmp_path: Path, data_dir: Path) -> None:
    mine, _ = _shared_start(tmp_path)
    _run("tenants", "add", TARA, "太良町")  # the colleague, on the database only (version 2)
    _edit(mine, "retention.yaml", "keep: 365 days", "keep: 400 days")
    refused = _run("config", "apply", str(mine), code=1)
    assert "RK-OPS018" in refused and f"tenants/{TARA}.yaml" in refused, refused
    assert f"tenants/{TARA}.yaml" in _in_force(data_dir)[1]
    # the way out the message gives: export the version in force, carry the edit over
    fresh = tmp_path / "fresh"
    assert "base version 2" in _run("config", "export", str(fresh))
    _edit(fresh, "retention.yaml", "keep: 365 days", "keep: 400 days")
    assert "applied: configuration version 3" in _run("config", "apply", str(fresh))
    files = _in_force(data_dir)[1]
    assert f"tenants/{TARA}.yaml" in files and "400 days" in files["retention.yaml"]


def test_changes_the_directory_already_holds_are_no_conflict(
    tmp_path: Path, data_dir: Path
) -> None:
    """A merged colleague's change (git pull) and a town `tenants add --config-dir` wrote
    into the directory itself are in the files: nothing would be undone."""
    mine, colleague = _shared_start(tmp_path)
    _edit(colleague, "retention.yaml", "keep: 365 days", "keep: 400 days")
    _run("config", "apply", str(colleague))  # version 2
    shutil.copy(colleague / "retention.yaml", mine / "retention.yaml")  # merged
    _run("tenants", "add", TARA, "太良町", "--config-dir", str(mine))  # version 3
    _edit(mine, "routes.yaml", "      - system: kokuho\n", "")
    assert "applied: configuration version 4" in _run("config", "apply", str(mine))
    files = _in_force(data_dir)[1]
    assert "400 days" in files["retention.yaml"] and f"tenants/{TARA}.yaml" in files
    assert "system: kokuho\n" not in files["routes.yaml"].split("ResidentChangeNotice")[1]
    assert read_base(mine) == Base(4, str(_last_apply(data_dir)["digest"]))


def test_one_integrator_applies_again_and_again_without_flags(
    tmp_path: Path, data_dir: Path
) -> None:
    _run("config", "show")  # the database gets the sample by itself (automatic version 1)
    mine = tmp_path / "mine"
    shutil.copytree(SAMPLE_CONFIG_DIR, mine)  # a plain copy, no .renkei-base yet
    _edit(mine, "retention.yaml", "keep: 365 days", "keep: 400 days")
    assert "applied: configuration version 2" in _run("config", "apply", str(mine))
    assert (mine / MARKER).is_file()
    for days in (401, 402):
        _edit(mine, "retention.yaml", f"keep: {days - 1} days", f"keep: {days} days")
        assert f"applied: configuration version {days - 398}" in _run("config", "apply", str(mine))
    assert "unchanged: configuration version 4" in _run("config", "apply", str(mine))
    assert "base" not in _run("config", "apply", str(mine))
    assert not (SAMPLE_CONFIG_DIR / MARKER).exists()  # never written into the shipped sample


def test_without_a_base_a_directory_is_refused_once_someone_applied(
    tmp_path: Path, data_dir: Path
) -> None:
    _shared_start(tmp_path)  # version 1 by a person
    copied = tmp_path / "copied"
    shutil.copytree(SAMPLE_CONFIG_DIR, copied)  # from somewhere else, no .renkei-base
    _edit(copied, "retention.yaml", "keep: 365 days", "keep: 400 days")
    refused = _run("config", "apply", str(copied), code=1)
    assert "RK-OPS019" in refused and "--base-version" in refused and "--force" in refused
    assert _in_force(data_dir)[0] == 1
    assert "applied: configuration version 2" in _run(
        "config", "apply", str(copied), "--base-version", "1"
    )
    assert _last_apply(data_dir)["base"] == 1


def test_force_replaces_whatever_is_in_force_and_is_recorded(
    tmp_path: Path, data_dir: Path
) -> None:
    mine, colleague = _shared_start(tmp_path)
    _edit(colleague, "retention.yaml", "keep: 365 days", "keep: 400 days")
    _run("config", "apply", str(colleague))  # version 2
    _edit(mine, "routes.yaml", "      - system: kokuho\n", "")
    assert "applied: configuration version 3" in _run("config", "apply", str(mine), "--force")
    assert "400 days" not in _in_force(data_dir)[1]["retention.yaml"]  # undone, on purpose
    detail = _last_apply(data_dir)
    assert detail["forced"] is True and detail["replaced"] == 2
    assert read_base(mine) == Base(3, str(detail["digest"]))


def test_a_directory_exported_from_another_hub_is_refused(tmp_path: Path, data_dir: Path) -> None:
    mine, _ = _shared_start(tmp_path)
    write_base(mine, Base(1, "0" * 64))  # version 1 of a staging hub, say
    _edit(mine, "retention.yaml", "keep: 365 days", "keep: 400 days")
    refused = _run("config", "apply", str(mine), code=1)
    assert "RK-OPS020" in refused and "このハブの版ではありません" in refused
    write_base(mine, Base(7))
    assert "RK-OPS020" in _run("config", "apply", str(mine), code=1)  # no version 7 here


def test_export_writes_into_a_new_directory_only(tmp_path: Path, data_dir: Path) -> None:
    mine, _ = _shared_start(tmp_path)
    refused = _run("config", "export", str(mine), code=1)
    assert "RK-OPS021" in refused
    out = tmp_path / "out"
    assert "exported: configuration version 1" in _run("config", "export", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, *(p.name for p in SAMPLE_CONFIG_DIR.glob("*.yaml"))]
    )
    assert "unchanged: configuration version 1" in _run("config", "apply", str(out))


def test_a_roll_back_is_made_from_the_version_in_force(tmp_path: Path, data_dir: Path) -> None:
    """`config export --version N` starts from an old content but on the version in force:
    the roll-back applies, and still does not undo what someone applied after the export."""
    mine, _ = _shared_start(tmp_path)
    _edit(mine, "retention.yaml", "keep: 365 days", "keep: 400 days")
    _run("config", "apply", str(mine))  # version 2
    old = tmp_path / "old"
    assert "base version 2" in _run("config", "export", str(old), "--version", "1")
    assert "applied: configuration version 3" in _run("config", "apply", str(old))
    assert "365 days" in _in_force(data_dir)[1]["retention.yaml"]
    older = tmp_path / "older"
    _run("config", "export", str(older), "--version", "2")
    _run("tenants", "add", TARA, "太良町")  # version 4, after that export
    assert "RK-OPS018" in _run("config", "apply", str(older), code=1)
    assert "no configuration version 9" in _run(
        "config", "export", str(tmp_path / "x"), "--version", "9", code=1
    )


def test_undone_paths_names_only_what_would_be_changed_back() -> None:
    base = {"a.yaml": "1", "b.yaml": "1", "gone.yaml": "1"}
    in_force = {"a.yaml": "2", "b.yaml": "1", "new.yaml": "1"}  # a edited, gone removed, new added
    assert undone_paths(base, in_force, {**base, "b.yaml": "mine"}) == (
        "a.yaml",
        "gone.yaml",
        "new.yaml",
    )
    assert undone_paths(base, in_force, {**in_force, "b.yaml": "mine"}) == ()
    assert undone_paths(base, base, {"b.yaml": "x"}) == ()


def test_tenants_add_into_a_stale_directory_does_not_undo_a_colleagues_apply(
    tmp_path: Path, data_dir: Path
) -> None:
    mine, colleague = _shared_start(tmp_path)
    _edit(colleague, "retention.yaml", "keep: 365 days", "keep: 400 days")
    _run("config", "apply", str(colleague))  # version 2
    refused = _run("tenants", "add", TARA, "太良町", "--config-dir", str(mine), code=1)
    assert "RK-OPS018" in refused and "retention.yaml" in refused
    version, files = _in_force(data_dir)
    assert version == 2 and "400 days" in files["retention.yaml"]
    assert not (mine / "tenants" / f"{TARA}.yaml").exists()  # the directory as it was
    shutil.copy(colleague / "retention.yaml", mine / "retention.yaml")  # merged
    assert "configuration version 3" in _run(
        "tenants", "add", TARA, "太良町", "--config-dir", str(mine)
    )
    assert "version: 3" in (mine / ".renkei-base").read_text(encoding="utf-8")
    assert "400 days" in _in_force(data_dir)[1]["retention.yaml"]
