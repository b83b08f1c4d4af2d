"""The OpenWrt package `make package` builds beside the .deb: dist/plaza_<version>_all.ipk,
unpacked here as opkg reads it (a gzipped tar of debian-binary, control.tar.gz, data.tar.gz).
Structure, modes, owners, conffiles, maintainer scripts, what is bundled and what comes from
OpenWrt's feed, and the footprint targets of issue 15 (.ipk <= 1.5 MB, installed <= 6 MB)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.package.conftest import ROOT, Debs

IPK_MAX = 1_500_000
INSTALLED_MAX = 6_000_000


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            m.name: (m, tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


@pytest.fixture(scope="module")
def ipk(debs: Debs) -> Path:
    return ROOT / "dist" / f"plaza_{debs.old_version}_all.ipk"


@pytest.fixture(scope="module")
def outer(ipk: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    return members(ipk.read_bytes())


@pytest.fixture(scope="module")
def control(outer: dict) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    return members(outer["./control.tar.gz"][1])


@pytest.fixture(scope="module")
def data(outer: dict) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    return members(outer["./data.tar.gz"][1])


def fields(control: dict) -> dict[str, str]:
    text = control["./control"][1].decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if line)


def test_openwrt_layout(outer: dict, ipk: Path) -> None:
    assert sorted(outer) == ["./control.tar.gz", "./data.tar.gz", "./debian-binary"]
    assert outer["./debian-binary"][1] == b"2.0\n"
    assert ipk.stat().st_size <= IPK_MAX, f".ipk is {ipk.stat().st_size} bytes"


def test_control(control: dict, debs: Debs) -> None:
    assert sorted(control) == [".", "./conffiles", "./control", "./postinst", "./prerm"]
    f = fields(control)
    assert (f["Package"], f["Version"], f["Architecture"]) == ("plaza", debs.old_version, "all")
    depends = [d.strip() for d in f["Depends"].split(",")]
    for need in ("python3 (>= 3.11)", "python3-flask", "python3-cryptography",
                 "python3-requests", "nftables-json", "dnsmasq-full", "procd-ujail",
                 "kmod-nft-queue"):  # fmt: skip
        assert need in depends
    assert "plaza=" in f["Require-User"]  # default_postinst creates the portal's user
    assert 0 < int(f["Installed-Size"]) <= INSTALLED_MAX
    assert control["./conffiles"][1] == b"/etc/config/plaza\n"
    for script, call in (("./postinst", "default_postinst"), ("./prerm", "default_prerm")):
        info, text = control[script]
        assert info.mode == 0o755 and text is not None
        assert text.startswith(b"#!/bin/sh\n") and call.encode() in text


def test_data_files_and_modes(data: dict, control: dict) -> None:
    expect = {
        "./etc/init.d/plaza": 0o755,
        "./etc/uci-defaults/90-plaza": 0o755,
        "./etc/config/plaza": 0o644,  # the init script makes it 0640 root:plaza at start
        "./etc/capabilities/plaza-portal.json": 0o644,
        "./lib/upgrade/keep.d/plaza": 0o644,
        "./usr/share/plaza/openwrt.sh": 0o644,
        "./usr/bin/plaza-gateway": 0o755,
        "./usr/bin/plaza-portal": 0o755,
        "./usr/bin/plaza-ctl": 0o755,
    }
    for name, mode in expect.items():
        assert name in data, name
        assert data[name][0].mode == mode, (name, oct(data[name][0].mode))
    for name, (info, _) in data.items():
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "root", "root"), name
    installed = sum(len(body) for _, body in data.values() if body is not None)
    assert installed == int(fields(control)["Installed-Size"]) <= INSTALLED_MAX
    keep = data["./lib/upgrade/keep.d/plaza"][1].decode().split()
    assert keep == ["/etc/config/plaza", "/etc/plaza/"]  # device key, state db, outbox


def test_architecture_all_carries_no_compiled_code(data: dict) -> None:
    lib = "./usr/lib/plaza/"
    names = [n for n in data if n.startswith(lib)]
    assert not [n for n in names if n.endswith(".so")]
    assert [n for n in names if n.endswith(".py")] == []  # bytecode only: nothing runs by path
    assert not [n for n in data if n.startswith("./etc/hotplug.d/")]  # no process per DHCP event
    tops = {n[len(lib) :].split("/", 1)[0] for n in names if n != lib}
    # Bundled: the router's code and what the feed lacks; from the feed: Flask, cryptography,
    # requests; netfilterqueue (a C extension) is not shipped; provisioning is Debian's.
    for bundled in ("plaza", "gateway", "portal", "cheroot", "authlib", "joserfc"):
        assert bundled in tops
    for absent in ("flask", "werkzeug", "cryptography", "cffi", "requests", "netfilterqueue",
                   "provisioning"):  # fmt: skip
        assert absent not in tops
    assert not [n for n in names if "/integrations/django_" in n or "/integrations/flask_" in n]


def test_the_overlay_is_shipped_unchanged(data: dict) -> None:
    overlay = ROOT / "firmware_overlay"
    for path in overlay.rglob("*"):
        if path.is_file() and path.name != "Makefile":
            name = "./" + path.relative_to(overlay).as_posix()
            assert data[name][1] == path.read_bytes(), name
