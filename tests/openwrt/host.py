"""Where the OpenWrt userland of ../shared/tools/openwrt-host/ is, and how tests use it.

The userland (procd, ubusd, uci, ...) is built once per machine from OpenWrt's upstream
sources by that tool's build.sh (its README says how; the sources cannot be fetched by CI,
so a machine without the build skips these tests with one line saying so).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "firmware_overlay"
# The tool beside the project's folder, or (a clone made elsewhere on this machine kind, as CI
# makes one) at the machine's shared folder; OWRT_TOOL names it outright.
TOOL_PLACES = [
    ROOT.parent / "shared" / "tools" / "openwrt-host",
    Path("/work/shared/tools/openwrt-host"),
]
TOOL = Path(
    os.environ.get("OWRT_TOOL")
    or next((p for p in TOOL_PLACES if (p / "run-in-openwrt.sh").exists()), TOOL_PLACES[0])
)
OWRT_HOST = Path(os.environ.get("OWRT_HOST", "/opt/openwrt-host"))
ROOTFS = OWRT_HOST / "rootfs"
PREFIX = OWRT_HOST / "prefix"
NOT_BUILT = (
    f"OpenWrt userland not built at {OWRT_HOST}: see ../shared/tools/openwrt-host/README.md "
    "(build.sh; docs/openwrt.md)"
)


def need_userland() -> None:
    if not (ROOTFS / "sbin" / "procd").exists() or not (PREFIX / "usr" / "bin" / "uci").exists():
        pytest.skip(NOT_BUILT)
    if os.geteuid() != 0:
        pytest.skip("the OpenWrt userland runs as root (unshare, overlayfs); CI runs as root")


def need_runner() -> None:
    """The tool's run-in-openwrt.sh boots the instances; a clone outside the project's folder
    (no ../shared beside it) has the built userland but not the tool."""
    need_userland()
    if not (TOOL / "run-in-openwrt.sh").exists():
        pytest.skip(f"{TOOL}/run-in-openwrt.sh missing: set OWRT_TOOL to the openwrt-host tool")


def uci_wrapper(bindir: Path) -> Path:
    """A `uci` on PATH that runs the built one with its libraries (libuci, libubox)."""
    bindir.mkdir(parents=True, exist_ok=True)
    uci = bindir / "uci"
    uci.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH={PREFIX}/usr/lib exec {PREFIX}/usr/bin/uci "$@"\n')
    uci.chmod(0o755)
    return uci
