"""Install, upgrade, remove and purge of the .deb in a throwaway Debian 12 root, with dpkg as
on a router; and what a package that fails to install leaves behind.

systemd is not running in the root: the maintainer scripts are made to believe it is (a
present /run/systemd/system, deb-systemd-invoke and systemctl logging what they are asked) so
the tests see which units an install starts, an upgrade restarts and a removal stops.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.package.chroot import Chroot
from tests.package.conftest import INVOKE_LOG, Debs, fake_systemd, repack

pytestmark = pytest.mark.package

UNITS = (
    "plaza-boot-check.service", "plaza-gateway.service", "plaza-dnsmasq.service",
    "plaza-portal.service",
)  # fmt: skip
FIRST_BOOT = "plaza-fleet-enrol.service"  # a baked image's enrolment: enabled, never started
WRAPPERS = ("plaza-gateway", "plaza-portal", "plaza-ctl", "plaza-provision-agent")
CHECK = ("plaza-gateway", "--config", "/etc/plaza/gateway.toml", "check-config", "--offline")


def status(root: Chroot) -> str:
    """`<version> <status>` of the plaza package, '' when dpkg knows nothing of it."""
    done = root.run("dpkg-query", "-W", "-f=${Version} ${Status}", "plaza", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def invoked(root: Chroot) -> list[str]:
    done = root.run("cat", INVOKE_LOG, check=False)
    root.run("rm", "-f", INVOKE_LOG)
    return done.stdout.splitlines()


def bundled_version(root: Chroot) -> str:
    done = root.sh("cat /usr/lib/plaza/plaza-*.dist-info/METADATA")
    return next(
        line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("Version: ")
    )


def dpkg_install(root: Chroot, deb: str, check: bool = True):
    return root.run("dpkg", "-i", deb, check=check)


def assert_installed_and_working(root: Chroot, version: str) -> None:
    assert status(root) == f"{version} install ok installed"
    assert bundled_version(root) == version
    assert root.run(*CHECK).stdout.strip() == "/etc/plaza/gateway.toml: OK"


def test_install_upgrade_remove_purge(debian: Chroot, debs: Debs) -> None:
    fake_systemd(debian)

    # Install: files, user, directories, units enabled and started.
    dpkg_install(debian, "/tmp/old.deb")
    assert_installed_and_working(debian, debs.old_version)
    for name in WRAPPERS:
        assert debian.run(name, "--help").returncode == 0, name
    assert debian.run("plaza-ctl", "status", check=False).returncode != 0  # no daemon: an error
    passwd = debian.run("getent", "passwd", "plaza").stdout.strip().split(":")
    assert int(passwd[2]) < 1000 and passwd[6] == "/usr/sbin/nologin"
    assert debian.run("stat", "-c", "%U:%G %a", "/var/lib/plaza").stdout.split() == [
        "root:plaza", "1770"
    ]  # fmt: skip
    assert debian.run("stat", "-c", "%U:%G %a", "/etc/plaza/gateway.toml").stdout.split() == [
        "root:plaza", "640"
    ]  # fmt: skip
    for unit in UNITS:
        assert debian.exists(f"/lib/systemd/system/{unit}")
        assert debian.exists(f"/etc/systemd/system/multi-user.target.wants/{unit}")
    assert [f"deb-systemd-invoke start {u}" for u in UNITS] == [
        line for line in invoked(debian) if line.startswith("deb-systemd-invoke")
    ]  # and never the first-boot enrolment, which may wait for days: enabled only
    assert debian.exists(f"/etc/systemd/system/multi-user.target.wants/{FIRST_BOOT}")

    # The router in use: sessions and enrolment in the state, the admin's edit of the config.
    debian.sh("echo sessions > /var/lib/plaza/plaza.db && echo '{}' > /var/lib/plaza/cloud.json")
    debian.sh("echo '# edited by the venue' >> /etc/plaza/gateway.toml")

    # Upgrade: state and config kept; units restarted, never stopped (the gateway keeps its
    # kernel table across a restart, so shoppers online stay online).
    done = debian.run("dpkg", "-i", "/tmp/new.deb")
    assert "conffile" not in done.stdout + done.stderr  # no question asked about the config
    assert_installed_and_working(debian, debs.new_version)
    assert debian.run("cat", "/var/lib/plaza/plaza.db").stdout == "sessions\n"
    assert debian.exists("/var/lib/plaza/cloud.json")
    assert "# edited by the venue" in debian.run("cat", "/etc/plaza/gateway.toml").stdout
    calls = invoked(debian)
    assert [f"deb-systemd-invoke restart {u}" for u in UNITS] == [
        line for line in calls if line.startswith("deb-systemd-invoke")
    ]
    assert not any(" stop " in f" {line} " for line in calls)

    # Remove: the code goes; the config and the state stay; the units are stopped.
    debian.run("dpkg", "-r", "plaza")
    assert status(debian) == f"{debs.new_version} deinstall ok config-files"
    for path in ("/usr/bin/plaza-gateway", "/usr/lib/plaza", "/lib/systemd/system/" + UNITS[0]):
        assert not debian.exists(path), path
    assert "# edited by the venue" in debian.run("cat", "/etc/plaza/gateway.toml").stdout
    assert debian.run("cat", "/var/lib/plaza/plaza.db").stdout == "sessions\n"
    assert any(line.startswith("deb-systemd-invoke stop") for line in invoked(debian))

    # Purge: nothing of Plaza is left.
    debian.run("dpkg", "-P", "plaza")
    assert status(debian) == ""
    for path in ("/etc/plaza", "/var/lib/plaza", "/usr/lib/plaza"):
        assert not debian.exists(path), path
    for unit in (*UNITS, FIRST_BOOT):
        assert not debian.exists(f"/etc/systemd/system/multi-user.target.wants/{unit}")
    assert debian.run("getent", "passwd", "plaza", check=False).returncode == 2
    assert debian.run("getent", "group", "plaza", check=False).returncode == 2


def test_reinstall_after_remove_keeps_the_config(debian: Chroot, debs: Debs) -> None:
    dpkg_install(debian, "/tmp/old.deb")
    debian.sh("echo '# edited by the venue' >> /etc/plaza/gateway.toml")
    debian.run("dpkg", "-r", "plaza")
    dpkg_install(debian, "/tmp/new.deb")
    assert_installed_and_working(debian, debs.new_version)
    assert "# edited by the venue" in debian.run("cat", "/etc/plaza/gateway.toml").stdout


def test_failed_preinst_keeps_the_previous_version(debian: Chroot, debs: Debs, tmp_path) -> None:
    """What can fail is checked in the preinst: dpkg then leaves the installed version as it
    was (files, configured state, running units)."""
    bad = repack(debs.new, tmp_path / "bad.deb", debs.new_version, "preinst",
                 'echo "plaza: refusing (test)" >&2; exit 1')  # fmt: skip
    debian.put(bad, "/tmp/bad.deb")
    fake_systemd(debian)
    dpkg_install(debian, "/tmp/old.deb")
    invoked(debian)
    debian.sh("echo sessions > /var/lib/plaza/plaza.db")

    done = dpkg_install(debian, "/tmp/bad.deb", check=False)
    assert done.returncode != 0 and "plaza: refusing (test)" in done.stderr
    assert_installed_and_working(debian, debs.old_version)
    assert debian.run("cat", "/var/lib/plaza/plaza.db").stdout == "sessions\n"
    assert invoked(debian) == []  # nothing stopped or restarted: the old gateway runs on


def test_failed_postinst_and_the_way_back(debian: Chroot, debs: Debs, tmp_path) -> None:
    """dpkg does not roll back once the new files are unpacked: a failing postinst leaves the
    new version half-configured. The running units were not stopped (the prerm stops only on
    remove, the failed postinst never restarted them), so the router keeps working on the old
    code it has loaded; installing the previous .deb again (plaza-provision keeps it) brings
    back the previous version, configured, with the state and the config as they were."""
    bad = repack(debs.new, tmp_path / "bad.deb", debs.new_version, "postinst",
                 'echo "plaza: failing (test)" >&2; exit 1')  # fmt: skip
    debian.put(bad, "/tmp/bad.deb")
    fake_systemd(debian)
    dpkg_install(debian, "/tmp/old.deb")
    invoked(debian)
    debian.sh("echo sessions > /var/lib/plaza/plaza.db")
    debian.sh("echo '# edited by the venue' >> /etc/plaza/gateway.toml")

    done = dpkg_install(debian, "/tmp/bad.deb", check=False)
    assert done.returncode != 0 and "plaza: failing (test)" in done.stderr
    assert status(debian) == f"{debs.new_version} install ok half-configured"
    assert invoked(debian) == []  # the old gateway was neither stopped nor restarted

    dpkg_install(debian, "/tmp/old.deb")
    assert_installed_and_working(debian, debs.old_version)
    assert debian.run("cat", "/var/lib/plaza/plaza.db").stdout == "sessions\n"
    assert "# edited by the venue" in debian.run("cat", "/etc/plaza/gateway.toml").stdout
    assert [line for line in invoked(debian) if line.startswith("deb-systemd-invoke")] == [
        f"deb-systemd-invoke restart {u}" for u in UNITS
    ]


def test_a_full_disk_keeps_the_previous_version(base_root, debs: Debs, tmp_path) -> None:
    """The root's writable layer on a 80 MB tmpfs: the first install fits, the upgrade's
    unpack (new files beside the old until dpkg switches them) runs out of space. dpkg then
    puts the old files back: the previous version stays installed and working."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "plaza-test", str(small)], check=True)
    try:
        root = Chroot(base_root, small)
        root.put(debs.old, "/tmp/old.deb")
        dpkg_install(root, "/tmp/old.deb")
        root.run("rm", "/tmp/old.deb")
        root.put(debs.new, "/tmp/new.deb")
        root.sh("echo sessions > /var/lib/plaza/plaza.db")
        done = dpkg_install(root, "/tmp/new.deb", check=False)
        assert done.returncode != 0
        assert "No space left on device" in done.stderr, done.stderr
        assert_installed_and_working(root, debs.old_version)
        assert root.run("cat", "/var/lib/plaza/plaza.db").stdout == "sessions\n"
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False)
