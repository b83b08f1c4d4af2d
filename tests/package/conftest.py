"""Fixtures for the package tests: the .deb built twice (a version and its upgrade), the
extracted tree, and a throwaway Debian 12 root per scenario (tests/package/chroot.py).

They need root (mmdebstrap, unshare, chroot; CI runs as root): only a non-root developer run
skips them, with the reason shown. Run them alone with `pytest tests/package` or `-m package`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.package.chroot import Chroot, base_tarball, unpack

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "provisioning" / "package" / "build.py"


def _builder():
    spec = importlib.util.spec_from_file_location("plaza_package_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Debs:
    old: Path  # `make package`: dist/plaza_<pyproject version>_amd64.deb
    new: Path  # a second build, version bumped: the upgrade
    old_version: str
    new_version: str


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("package tests need root (mmdebstrap, unshare, chroot); CI runs as root")


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    need_root()
    build = _builder()
    old_version = build.project_version()
    subprocess.run(["make", "-s", "package"], cwd=ROOT, check=True, capture_output=True)
    old = ROOT / "dist" / f"plaza_{old_version}_amd64.deb"
    new_version = f"{old_version}+upgrade1"
    new = build.build(new_version, tmp_path_factory.mktemp("dist"))
    return Debs(old, new, old_version, new_version)


@pytest.fixture(scope="session")
def extracted(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files as dpkg would lay them out, for the unit and code checks."""
    root = tmp_path_factory.mktemp("extracted")
    subprocess.run(["dpkg-deb", "-x", str(debs.old), str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def base_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root()
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: make setup installs it (apt: mmdebstrap)")
    return unpack(base_tarball(), tmp_path_factory.mktemp("debian12"))


@pytest.fixture
def debian(base_root: Path, debs: Debs, tmp_path: Path) -> Chroot:
    """A fresh Debian 12 root with both packages in /tmp and no Plaza installed."""
    root = Chroot(base_root, tmp_path)
    root.put(debs.old, "/tmp/old.deb")
    root.put(debs.new, "/tmp/new.deb")
    return root


def repack(deb: Path, out: Path, version: str, script: str, first_line: str) -> Path:
    """`deb` with `version` and `first_line` run first in maintainer script `script`: a
    package that fails where a real one could (its files and everything else unchanged)."""
    tree = out.with_suffix(".tree")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(
        "".join(
            f"Version: {version}\n" if line.startswith("Version:") else line
            for line in control.read_text().splitlines(keepends=True)
        )
    )
    path = tree / "DEBIAN" / script
    shebang, rest = path.read_text().split("\n", 1)
    path.write_text(f"{shebang}\n{first_line}\n{rest}")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return out


# systemd as the maintainer scripts see it, without a running systemd: /run/systemd/system
# exists and deb-systemd-invoke writes what it was asked to a log. No systemctl: with one,
# deb-systemd-helper would hand enabling to it (`systemctl preset`) instead of making links.
INVOKE_LOG = "/var/log/plaza-test-invoke.log"
STUB = f'#!/bin/sh\necho "$(basename "$0") $*" >> {INVOKE_LOG}\n'


def fake_systemd(root: Chroot) -> None:
    root.write("/run/systemd/system/.present", "")
    root.write("/usr/bin/deb-systemd-invoke", STUB, 0o755)
