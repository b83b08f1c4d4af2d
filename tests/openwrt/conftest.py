"""The OpenWrt userland with Plaza's .ipk installed (tests/openwrt/stage.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.openwrt.host import ROOT, need_runner


@pytest.fixture(scope="session")
def ipk() -> Path:
    """dist/plaza_<version>_all.ipk, built afresh by `make package` (the code under test)."""
    need_runner()
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    path = ROOT / "dist" / f"plaza_{version}_all.ipk"
    subprocess.run(["make", "-s", "package"], cwd=ROOT, check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def plaza_rootfs(ipk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.openwrt.stage import stage

    return stage(ipk, tmp_path_factory.mktemp("openwrt"))
