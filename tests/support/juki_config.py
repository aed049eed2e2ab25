"""A configuration directory with one town and one destination, 住民記録 (juki), for tests
that run `renkei worker` or `renkei serve` against deliveries they store themselves."""

from __future__ import annotations

from pathlib import Path


def write_juki_config(config_dir: Path, url: str, tenant: str) -> Path:
    """``config_dir`` with juki at ``url`` (fast retries) serving ``tenant``; juki is granted
    what it receives (default deny: the worker checks the grant again at each send)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "tenants.yaml").write_text(
        f'tenants:\n  - code: "{tenant}"\n    name: 江北町\n', encoding="utf-8"
    )
    (config_dir / "systems.yaml").write_text(
        "systems:\n  - id: juki\n    name: juki\n    endpoint:\n      transport: http\n"
        f"      url: {url}\n    retry:\n      base_delay: PT0.05S\n      max_delay: PT0.2S\n",
        encoding="utf-8",
    )
    (config_dir / "access.yaml").write_text(
        "access:\n  - system: juki\n    receive: [ResidentChangeNotice]\n", encoding="utf-8"
    )
    return config_dir
