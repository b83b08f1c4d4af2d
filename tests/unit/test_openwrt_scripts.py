"""Every shell script in firmware_overlay/ parses under busybox ash (OpenWrt's /bin/sh) and
passes shellcheck as POSIX sh (dash: no bashisms, which ash may lack). `make setup` installs
both (APT_PACKAGES): a missing one fails the test rather than skipping it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "firmware_overlay"


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted(OVERLAY.rglob("*")):
        if not path.is_file() or path.name == "Makefile":
            continue
        head = path.read_bytes()[:200]
        if head.startswith(b"#!/bin/sh") or b"# shellcheck shell=" in head:
            found.append(path)
    return found


SCRIPTS = shell_scripts()


def test_the_overlay_has_its_scripts() -> None:
    names = {p.relative_to(OVERLAY).as_posix() for p in SCRIPTS}
    assert {
        "etc/init.d/plaza",
        "etc/uci-defaults/90-plaza",
        "usr/share/plaza/openwrt.sh",
    } <= names


def test_no_handler_makes_dnsmasq_run_a_script_per_dhcp_event() -> None:
    """OpenWrt's dnsmasq init adds `dhcp-script` (a process per DHCP event) when
    /etc/hotplug.d/dhcp, tftp or neigh holds a handler: the daemon reads the lease file
    instead, so the overlay ships none."""
    for kind in ("dhcp", "tftp", "neigh"):
        assert not list((OVERLAY / "etc" / "hotplug.d" / kind).glob("*")), kind
    assert "hotplug" not in (OVERLAY / "Makefile").read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(OVERLAY).as_posix())
def test_busybox_ash_parses(script: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is missing: make setup installs it (APT_PACKAGES)"
    done = subprocess.run([busybox, "ash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(OVERLAY).as_posix())
def test_shellcheck_dash(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: make setup installs it (APT_PACKAGES)"
    done = subprocess.run(
        [shellcheck, "--shell=dash", "--severity=style", str(script)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(OVERLAY).as_posix())
def test_executable_where_run_by_path(script: Path) -> None:
    mode = script.stat().st_mode
    sourced = script.suffix == ".sh"  # a library, sourced by the others
    assert bool(mode & 0o111) != sourced, f"{script}: mode {oct(mode)}"
