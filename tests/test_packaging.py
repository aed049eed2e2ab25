"""A built wheel carries schemas/ and mappings/ and finds them when installed elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("renkei-*.whl")
    return built


def test_wheel_contains_the_data_directories(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bus/_data/schemas/renkei.xsd" in names
    assert "bus/_data/schemas/codes/era.csv" in names
    assert any(name.startswith("bus/_data/schemas/services/") for name in names)
    assert any(name.startswith("bus/_data/mappings/") for name in names)
    assert "bus/_data/samples/config/tenants.yaml" in names
    assert "bus/migrations/versions/0001_message_store.py" in names
    assert "adapters/rest/validate.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "renkei = bus.cli:app" in text and "renkei.routers" in text


def test_installed_wheel_validates_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    sample = (ROOT / "samples/messages/ResidentChangeNotice/valid-full.xml").read_bytes()
    (tmp_path / "message.xml").write_bytes(sample)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(target)!r})
        import bus
        assert bus.__file__.startswith({str(target)!r}), bus.__file__
        from bus.resources import schemas_dir
        from bus.catalogue import load_catalogue
        from bus.validation.validator import Validator
        assert str(schemas_dir()).startswith({str(target)!r}), schemas_dir()
        catalogue = load_catalogue()
        print(catalogue.count("standard"), catalogue.count("extension"))
        print(Validator().validate(open("message.xml", "rb").read()).valid)
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["72", "42", "True"]
