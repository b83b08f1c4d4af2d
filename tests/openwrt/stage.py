"""A root file system for OpenWrt's userland with Plaza installed from its .ipk.

OpenWrt's python3 and its feed's Flask, cryptography and requests cannot be had here, so
they are stood in for by this machine's CPython 3.11 (the version OpenWrt 24.10 ships) and
the same libraries from the project's virtualenv: only what the .ipk's `Depends:` names
comes from there; Plaza's own files are the .ipk's data.tar.gz, untouched. The userland's
rootfs (glibc, busybox, procd, ubus, uci, fw4) is copied, never changed in place.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.openwrt.host import ROOT, ROOTFS

# The project's virtualenv holds the same libraries at the versions pyproject pins.
SITE = ROOT / ".venv" / "lib" / f"python3.{sys.version_info[1]}" / "site-packages"
# What the feed packages named in the .ipk's Depends carry (python3-flask, -cryptography,
# -requests and their own dependencies).
FEED = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "cryptography",
        "cffi", "_cffi_backend", "pycparser", "requests", "urllib3", "idna", "certifi",
        "charset_normalizer")  # fmt: skip
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                   "pydoc_data", "config-3.11-x86_64-linux-gnu", "site-packages")  # fmt: skip


def _libraries(binaries: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        found.update(Path(p) for p in re.findall(r"=> (/\S+)", out))
    return found


def install_ipk(ipk: Path, root: Path) -> list[str]:
    """Lay the .ipk's files under root as opkg would, and opkg's own records (control,
    file list, maintainer scripts) under usr/lib/opkg/info; the installed paths."""
    with tarfile.open(ipk, "r:gz") as outer:
        data = outer.extractfile("./data.tar.gz").read()  # type: ignore[union-attr]
        control = outer.extractfile("./control.tar.gz").read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(root)  # our own build, just made
        paths = [m.name[1:] for m in tar.getmembers() if m.isfile()]
    info = root / "usr" / "lib" / "opkg" / "info"
    info.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(control), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                body = tar.extractfile(member).read()  # type: ignore[union-attr]
                target = info / f"plaza.{member.name[2:]}"
                target.write_bytes(body)
                target.chmod(member.mode)
    (info / "plaza.list").write_text("".join(f"{p}\n" for p in paths))
    return paths


def stage(ipk: Path, dest: Path) -> Path:
    """dest/rootfs: the userland's rootfs, CPython, the feed's libraries, Plaza's .ipk."""
    root = dest / "rootfs"
    shutil.copytree(ROOTFS, root, symlinks=True)
    stdlib = Path(f"/usr/lib/python3.{sys.version_info[1]}")
    shutil.copytree(
        stdlib, root / stdlib.relative_to("/"), symlinks=True,
        ignore=lambda d, names: [n for n in names if n in STDLIB_LEFT_OUT and d == str(stdlib)],
    )  # fmt: skip
    python = Path(sys.base_prefix) / "bin" / f"python3.{sys.version_info[1]}"
    shutil.copy2(python, root / "usr" / "bin" / python.name)
    (root / "usr" / "bin" / "python3").symlink_to(python.name)
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True)
    for entry in SITE.iterdir():
        if entry.name.split(".")[0].split("-")[0] in FEED:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, site / entry.name)
    binaries = [python, *(root / "usr").rglob("*.so"), *(root / "usr").rglob("*.so.*")]
    for lib in _libraries(binaries):
        if not (root / "lib" / lib.name).exists():
            shutil.copy2(lib, root / "lib" / lib.name)
    # OpenWrt's base-files have them (nft resolves "tcp", "udp" through them); the
    # userland tool's rootfs does not.
    for name in ("protocols", "services"):
        shutil.copy2(Path("/etc") / name, root / "etc" / name)
    install_ipk(ipk, root)
    return root


STANDIN = Path(__file__).with_name("standin")
# This machine's dnsmasq stands in for OpenWrt's dnsmasq-full (same upstream, 2.90 with
# nftset), and its iptables-nft for kmod-nft-queue: this kernel has no nft `queue` expression
# (CONFIG_NFT_QUEUE is not set), only the xtables NFQUEUE target, which only iptables-nft can
# put in a rule. OpenWrt 24.10 has nft_queue; there the daemon uses the native statement.
HOST_TOOLS = (Path("/usr/sbin/dnsmasq"), Path("/usr/sbin/xtables-nft-multi"))
XT_LINKS = ("iptables-nft", "ip6tables-nft")
XT_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/xtables")


def standin_overlay(dest: Path) -> Path:
    """An overlay tree (run-in-openwrt.sh -o) with what the userland tool lacks for a phone to
    join: dnsmasq with a stand-in for OpenWrt's init and dhcp-script (tests/openwrt/standin),
    iptables-nft with its extensions, their libraries, /etc/resolv.conf as on OpenWrt."""
    shutil.copytree(STANDIN, dest, symlinks=True)
    sbin = dest / "usr" / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    for tool in HOST_TOOLS:
        shutil.copy2(tool, sbin / tool.name)
    for link in XT_LINKS:
        (sbin / link).symlink_to("xtables-nft-multi")
    shutil.copytree(XT_LIBDIR, dest / XT_LIBDIR.relative_to("/"))
    lib = dest / "lib"
    lib.mkdir(exist_ok=True)
    for found in _libraries([*HOST_TOOLS, *XT_LIBDIR.glob("*.so")]):
        if not (ROOTFS / "lib" / found.name).exists():
            shutil.copy2(found, lib / found.name)
    (dest / "etc").mkdir(exist_ok=True)
    (dest / "etc" / "resolv.conf").symlink_to("/tmp/resolv.conf")
    # musl resolves through /etc/resolv.conf by itself; glibc, standing in, asks nsswitch,
    # which the userland's rootfs limits to files.
    nss = (ROOTFS / "etc" / "nsswitch.conf").read_text()
    (dest / "etc" / "nsswitch.conf").write_text(nss.replace("hosts: files", "hosts: files dns"))
    for found in _libraries([Path("/lib/x86_64-linux-gnu/libnss_dns.so.2")]):
        if not (ROOTFS / "lib" / found.name).exists():
            shutil.copy2(found, lib / found.name)
    shutil.copy2("/lib/x86_64-linux-gnu/libnss_dns.so.2", lib / "libnss_dns.so.2")
    (dest / "run").mkdir(exist_ok=True)  # iptables' lock, /run/xtables.lock
    return dest
