"""The .deb as built by `make package`, read with dpkg-deb: what is in it, what it depends on,
which files are conffiles, and that nothing of the cloud came along."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.package.conftest import Debs

pytestmark = pytest.mark.package

ENTRY_POINTS = ("plaza-gateway", "plaza-portal", "plaza-ctl", "plaza-provision-agent")
UNITS = (
    "plaza-gateway.service", "plaza-portal.service", "plaza-dnsmasq.service",
    "plaza-boot-check.service", "plaza-fleet-enrol.service",
)  # fmt: skip
DEPENDS = ("nftables", "dnsmasq-base", "libnetfilter-queue1", "iptables", "adduser")


def _contents(deb) -> dict[str, str]:
    """path -> mode string, from dpkg-deb -c."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True)
    files = {}
    for line in out.stdout.splitlines():
        fields = line.split(maxsplit=5)
        files[fields[5].removeprefix(".").split(" -> ")[0]] = fields[0]
    return files


def _field(deb, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_name_and_version_follow_pyproject(debs: Debs) -> None:
    assert debs.old.name == f"plaza_{debs.old_version}_amd64.deb"
    assert _field(debs.old, "Package") == "plaza"
    assert _field(debs.old, "Version") == debs.old_version
    assert _field(debs.new, "Version") == debs.new_version
    assert _field(debs.old, "Architecture") == "amd64"


def test_depends_on_debian_only(debs: Debs) -> None:
    depends = [d.strip() for d in _field(debs.old, "Depends").split(",")]
    names = {re.split(r"[ (]", d)[0] for d in depends}
    assert set(DEPENDS) <= names
    assert "python3 (>= 3.11~)" in depends and "python3 (<< 3.12)" in depends
    assert not any(n.startswith("python3-") for n in names), "libraries are bundled, not Debian's"


def test_contents(debs: Debs) -> None:
    files = _contents(debs.old)
    for name in ENTRY_POINTS:
        assert files[f"/usr/bin/{name}"].startswith("-rwxr-xr-x"), name
    for unit in UNITS:
        assert f"/lib/systemd/system/{unit}" in files
    assert "/etc/plaza/gateway.toml" in files
    for package in ("gateway", "portal", "plaza", "provisioning"):
        assert f"/usr/lib/plaza/{package}/__init__.py" in files
    # Compiled for Python 3.11 at build time (/usr is read-only to the services).
    assert "/usr/lib/plaza/gateway/__pycache__/daemon.cpython-311.pyc" in files
    # The router's libraries, compiled parts included.
    for library in ("flask", "cheroot", "cryptography", "netfilterqueue", "requests"):
        assert any(p.startswith(f"/usr/lib/plaza/{library}/") for p in files), library
    assert any(re.search(r"netfilterqueue/.*cpython-311-x86_64-linux-gnu\.so$", p) for p in files)
    assert f"/usr/lib/plaza/plaza-{debs.old_version}.dist-info/METADATA" in files


def test_no_cloud_code(debs: Debs) -> None:
    cloud = re.compile(
        r"^/usr/lib/plaza/(cloud|lab|sqlalchemy|alembic|psycopg|gunicorn|pywebpush)[/_.-]",
        re.IGNORECASE,
    )
    found = [p for p in _contents(debs.old) if cloud.search(p) or "sqlalchemy" in p.lower()]
    assert found == []
    assert not any(p.startswith("/usr/lib/plaza/bin/") for p in _contents(debs.old))


def test_conffiles(debs: Debs) -> None:
    out = subprocess.run(
        ["dpkg-deb", "-I", str(debs.old), "conffiles"], capture_output=True, text=True, check=True
    )
    assert sorted(out.stdout.split()) == [
        "/etc/plaza/dnsmasq.d/local.conf",
        "/etc/plaza/gateway.toml",
    ]


def test_maintainer_scripts_are_shipped(debs: Debs) -> None:
    out = subprocess.run(["dpkg-deb", "-I", str(debs.old)], capture_output=True, text=True)
    for script in ("preinst", "postinst", "prerm", "postrm"):
        assert re.search(rf"\s{script}\s+#!/bin/sh", out.stdout), script


def test_entry_point_is_a_small_isolated_wrapper(extracted) -> None:
    text = (extracted / "usr/bin/plaza-gateway").read_text()
    assert text.startswith("#!/usr/bin/python3 -I\n")
    assert 'sys.path.insert(0, "/usr/lib/plaza")' in text
    assert "from gateway.ops.cli import main" in text
