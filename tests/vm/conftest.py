"""The router image booted under QEMU (lab/vm.py), always shut down; one VM at a time.

Needs root (namespaces, taps, losetup for the build) and qemu-system-x86; CI runs as root.
The session starts with `make router-image` (cached: ~15 s when nothing changed, a few
minutes cold). QEMU boots with `-snapshot`, so tests never change the image. Run with
`flock /tmp/plaza-netns.lock .venv/bin/python -m pytest tests/vm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.vm import IMAGE, RouterVM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def router_image() -> Path:
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (taps, namespaces, image build); CI runs as root")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 missing: make setup installs it (apt: qemu-system-x86)")
    start = time.monotonic()
    done = subprocess.run(
        ["make", "-s", "router-image"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"make router-image failed:\n{done.stdout}{done.stderr}"
    print(f"\nmake router-image: {time.monotonic() - start:.0f} s; {done.stdout.strip()}")
    return IMAGE


@pytest.fixture(scope="module")
def vm(router_image: Path) -> Iterator[RouterVM]:
    """One boot per test module (never two VMs at once: the machine has two cores)."""
    machine = RouterVM(name=f"pvm{os.getpid() % 10000}", image=router_image)
    try:
        machine.up()
        seconds = machine.wait_ssh()
        print(f"\nboot to SSH under TCG: {seconds:.0f} s")
        yield machine
    finally:
        machine.down()


@pytest.fixture(scope="session")
def newer_package(router_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree packaged as version 0.1.1 into a temp dir (dist/'s .deb is left alone):
    the upgrade the end-to-end tests flash. Built before any VM boots (the CPUs are shared)."""
    out = tmp_path_factory.mktemp("newer-deb")
    done = subprocess.run(
        [sys.executable, "provisioning/package/build.py", "--version", "0.1.1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "plaza_0.1.1_amd64.deb"
