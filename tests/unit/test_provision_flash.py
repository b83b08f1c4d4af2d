"""plaza-provision flash against a fake router (tests/fakes/ssh.py): every step in order, and
each bad input ending with its exit code, a clear message and the router as it was."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from provisioning import errors
from provisioning.errors import ProvisionError
from provisioning.flash import FlashPlan, flash
from provisioning.report import JsonReporter
from tests.fakes.ssh import FakeRouter

CLAIM = "K7Q4-9XMP-2D3F"


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    path = tmp_path / "plaza_0.2.0_amd64.deb"
    path.write_bytes(b"!<arch>\n" + bytes(100_000))
    return path


@pytest.fixture
def venue(tmp_path: Path) -> Path:
    path = tmp_path / "venue.toml"
    path.write_text('[lan]\ninterface = "br-lan"\n')
    return path


def run(router: FakeRouter, plan: FlashPlan) -> tuple[dict[str, str], list[dict]]:
    out = io.StringIO()
    try:
        result = flash(router, plan, JsonReporter(out))
    finally:
        events = [json.loads(line) for line in out.getvalue().splitlines()]
    return result, events


def fail(router: FakeRouter, plan: FlashPlan) -> tuple[ProvisionError, list[dict]]:
    out = io.StringIO()
    with pytest.raises(ProvisionError) as caught:
        flash(router, plan, JsonReporter(out))
    return caught.value, [json.loads(line) for line in out.getvalue().splitlines()]


def test_flash_runs_every_step_in_order_on_a_blank_router(deb: Path, venue: Path) -> None:
    router = FakeRouter()
    plan = FlashPlan(claim=CLAIM, cloud="https://cloud.example", venue_config=venue, package=deb)
    result, events = run(router, plan)
    steps = [e["step"] for e in events]
    assert steps == [
        "connect",
        "disk space",
        "upload",
        "install",
        "config (test and rollback)",
        "enrol",
        "services",
    ]
    assert all(e["status"] == "ok" for e in events)
    assert router.installed == ("0.2.0", "ii")
    assert router.config == venue.read_bytes()
    deb_path = "/var/cache/plaza-provision/plaza_0.2.0_amd64.deb"
    assert router.uploads[deb_path] == deb.read_bytes()
    # Neither the package nor the config (it holds secrets) is left in the spool.
    assert router.files == {} and ["rm", "-f", deb_path] in router.calls
    assert result["device_id"] == "dev_0123456789abcdef"
    assert router.active == {"plaza-gateway", "plaza-portal", "plaza-dnsmasq"}
    cmds = router.commands()
    # The claim code travels on stdin, never on a command line (ps, shell history).
    assert not any(CLAIM in c for c in cmds)
    assert router.inputs == [(CLAIM + "\n").encode()]
    enrol = next(c for c in cmds if c.startswith("plaza-gateway"))
    assert "--claim -" in enrol and "--cloud https://cloud.example" in enrol
    # The config goes through the agent's test-and-rollback, with the timeout given.
    agent = next(c for c in cmds if c.startswith("plaza-provision-agent"))
    assert "apply-config /var/cache/plaza-provision/gateway.toml.new --timeout 60.0" in agent
    # No apt-get when dpkg succeeded; services enabled before the restart.
    assert not any("apt-get" in c for c in cmds)
    assert cmds.index(
        "systemctl enable --now plaza-gateway plaza-portal plaza-dnsmasq"
    ) < cmds.index("systemctl restart plaza-gateway plaza-portal plaza-dnsmasq")


def test_root_prefixes_every_router_path(deb: Path, venue: Path) -> None:
    router = FakeRouter()
    run(router, FlashPlan(claim=CLAIM, venue_config=venue, package=deb, root="/tmp/r"))
    cmds = router.commands()
    assert "df -Pk /tmp/r/var" in cmds
    assert "/tmp/r/var/cache/plaza-provision/plaza_0.2.0_amd64.deb" in router.uploads
    assert any(c.startswith("plaza-provision-agent --root /tmp/r apply-config") for c in cmds)
    assert any("--config /tmp/r/etc/plaza/gateway.toml enrol" in c for c in cmds)


def test_same_version_already_installed_is_not_reinstalled(deb: Path) -> None:
    router = FakeRouter(installed=("0.2.0", "ii"))
    result, _ = run(router, FlashPlan(claim=CLAIM, package=deb))
    assert result["install"] == "plaza 0.2.0 already installed"
    assert not any(c[0] == "dpkg" for c in router.calls)


def test_upgrade_reports_both_versions(deb: Path) -> None:
    router = FakeRouter(installed=("0.1.0", "ii"))
    result, _ = run(router, FlashPlan(claim=CLAIM, package=deb))
    assert result["install"] == "plaza 0.1.0 → 0.2.0"
    assert [
        "dpkg",
        "--force-confold",
        "-i",
        "/var/cache/plaza-provision/plaza_0.2.0_amd64.deb",
    ] in router.calls


def test_upload_reports_byte_progress(deb: Path) -> None:
    seen: list[int] = []

    class Recording(JsonReporter):
        def step(self, host, name, total=None):  # type: ignore[override]
            context = super().step(host, name, total)
            if name != "upload":
                return context
            assert total == deb.stat().st_size

            class Wrap:
                def __enter__(self_inner):
                    context.__enter__()
                    return seen.append

                def __exit__(self_inner, *exc):
                    return context.__exit__(*exc)

            return Wrap()

    flash(FakeRouter(), FlashPlan(claim=CLAIM, package=deb), Recording(io.StringIO()))
    assert seen[-1] == deb.stat().st_size and seen == sorted(seen) and len(seen) > 1


def test_disk_full_stops_before_anything_is_copied(deb: Path) -> None:
    router = FakeRouter(free_kb=100, installed=("0.1.0", "ii"))
    error, events = fail(router, FlashPlan(claim=CLAIM, package=deb))
    assert error.code == errors.DISK_FULL
    assert "disk full: 0 MiB free" in error.message and "nothing was changed" in error.hint
    assert router.uploads == {} and router.installed == ("0.1.0", "ii")
    assert events[-1] == {**events[-1], "step": "disk space", "status": "fail", "exit": 8}


def test_failed_preinst_leaves_the_previous_version(deb: Path) -> None:
    router = FakeRouter(installed=("0.1.0", "ii"), dpkg="preinst-fails")
    error, _ = fail(router, FlashPlan(claim=CLAIM, package=deb))
    assert error.code == errors.INSTALL_FAILED
    assert "plaza 0.1.0 is still installed and running" in error.message
    assert router.files == {}  # the failed package is not left taking space
    assert "pre-installation script" in error.message
    assert not any(c[0] == "plaza-gateway" for c in router.calls)  # stopped: no enrolment


def test_failed_install_on_a_blank_router_says_nothing_was_there(deb: Path) -> None:
    error, _ = fail(FakeRouter(dpkg="preinst-fails"), FlashPlan(claim=CLAIM, package=deb))
    assert error.code == errors.INSTALL_FAILED and "had no Plaza before" in error.message


def test_missing_dependencies_are_fetched_by_apt_only_then(deb: Path) -> None:
    router = FakeRouter(dpkg="deps")
    result, _ = run(router, FlashPlan(claim=CLAIM, package=deb))
    assert router.installed == ("0.2.0", "ii")
    assert [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-f",
        "install",
        "-y",
    ] in router.calls
    assert result["install"] == "plaza (none) → 0.2.0"


def test_unfixable_dependencies_are_an_install_failure(deb: Path) -> None:
    error, _ = fail(FakeRouter(dpkg="deps-unfixable"), FlashPlan(claim=CLAIM, package=deb))
    assert error.code == errors.INSTALL_FAILED and "nftables is not installed" in error.message
    assert "apt-get -f install: E: Unable to correct problems" in error.message


def test_half_configured_package_needs_a_person(deb: Path) -> None:
    error, _ = fail(
        FakeRouter(installed=("0.1.0", "ii"), dpkg="half"), FlashPlan(claim=CLAIM, package=deb)
    )
    assert error.code == errors.HALF_DONE
    assert "iF 0.2.0" in error.message and "dpkg --configure -a" in error.hint


def test_not_a_package_is_refused(tmp_path: Path) -> None:
    router = FakeRouter()
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"x")
    router.files.clear()
    router._dpkg_deb = lambda args: __import__("provisioning.ssh").ssh.Result(  # type: ignore
        2, "", "dpkg-deb: error: 'x.deb' is not a Debian format archive"
    )
    error, _ = fail(router, FlashPlan(claim=CLAIM, package=bogus))
    assert error.code == errors.INSTALL_FAILED and "not a Debian format archive" in error.message


@pytest.mark.parametrize("agent", ["check-fails", "rolled-back"])
def test_a_refused_config_keeps_the_old_one_and_stops(agent: str, venue: Path) -> None:
    router = FakeRouter(agent=agent)
    error, events = fail(router, FlashPlan(claim=CLAIM, venue_config=venue))
    assert error.code == errors.CONFIG_REFUSED
    assert router.config == b"[lan]\n"
    assert ("check-config" if agent == "check-fails" else "previous config") in error.message
    assert events[-1]["step"] == "config (test and rollback)"
    assert not any(c[0] == "plaza-gateway" for c in router.calls)


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        ("used", errors.CLAIM_REFUSED, "already used (409)"),
        ("expired", errors.CLAIM_REFUSED, "expired (410)"),
        ("unknown", errors.CLAIM_REFUSED, "does not know this claim code (404)"),
        ("offline", errors.CLOUD_UNREACHABLE, "check the router's WAN"),
    ],
)
def test_enrolment_refusals(answer: str, code: int, words: str) -> None:
    router = FakeRouter(enrol=answer)
    error, _ = fail(router, FlashPlan(claim=CLAIM, cloud="https://cloud.example"))
    assert error.code == code and words in error.hint
    assert not router.active  # services not started on a router that is not enrolled


def test_enrolment_with_an_unusable_router_config_is_a_config_error_not_the_cloud() -> None:
    error, _ = fail(FakeRouter(enrol="no-config"), FlashPlan(claim=CLAIM))
    assert error.code == errors.CONFIG_REFUSED and "cannot read" in error.message
    assert "--venue-config" in error.hint


def test_already_enrolled_router_keeps_its_identity_and_the_code() -> None:
    result, _ = run(FakeRouter(enrol="already"), FlashPlan(claim=CLAIM))
    assert "already enrolled as dev_0123456789abcdef" in result["enrol"]
    assert "claim code was not used" in result["enrol"]


def test_an_upgrade_of_an_enrolled_router_restarts_nothing_more(deb: Path) -> None:
    """The postinst restarted the units; a second restart would cut the LAN's DNS again (the
    VM end-to-end test lost probes to it): enabled and started only."""
    router = FakeRouter(installed=("0.1.0", "ii"), enrol="already")
    result, _ = run(router, FlashPlan(claim=CLAIM, package=deb))
    assert result["install"] == "plaza 0.1.0 → 0.2.0"
    cmds = router.commands()
    assert "systemctl enable --now plaza-gateway plaza-portal plaza-dnsmasq" in cmds
    assert not any(c.startswith("systemctl restart") for c in cmds)
    assert result["services"].startswith("enabled and running")
    assert router.active == {"plaza-gateway", "plaza-portal", "plaza-dnsmasq"}


def test_a_new_enrolment_restarts_the_units(deb: Path) -> None:
    router = FakeRouter(installed=("0.2.0", "ii"))
    result, _ = run(router, FlashPlan(claim=CLAIM, package=deb))
    assert "systemctl restart plaza-gateway plaza-portal plaza-dnsmasq" in router.commands()
    assert result["services"].startswith("enabled and restarted")


@pytest.mark.parametrize(
    ("ssh", "words"),
    [
        ("unreachable", "cannot reach the router"),
        ("refused", "cannot reach the router"),
        ("wrong-key", "refused the SSH key"),
        ("changed-key", "host key CHANGED"),
    ],
)
def test_ssh_failures_stop_at_connect(ssh: str, words: str, deb: Path) -> None:
    router = FakeRouter(ssh=ssh)
    error, events = fail(router, FlashPlan(claim=CLAIM, package=deb))
    assert error.code == errors.UNREACHABLE and words in error.message
    assert [e["step"] for e in events] == ["connect"] and len(router.calls) == 1


def test_wait_retries_a_booting_router_but_not_a_refused_key() -> None:
    from provisioning.ssh import wait_for_ssh
    from tests.conftest import FakeClock

    clock = FakeClock()
    router = FakeRouter(ssh="refused")

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock() >= 1_800_000_005:  # sshd comes up 5 s in
            router.ssh = ""

    assert wait_for_ssh(router, 30, clock, sleep).stdout == "root\n"
    assert len(router.calls) == 4 and clock() == 1_800_000_006
    # Past the deadline: the last error stands.
    router.ssh, start = "unreachable", clock()
    with pytest.raises(ProvisionError, match="cannot reach"):
        wait_for_ssh(router, 3, clock, lambda s: clock.advance(s))
    assert clock() - start == 3
    # A refused key is not a booting router: no retry.
    router.ssh, router.calls = "wrong-key", []
    with pytest.raises(ProvisionError, match="refused the SSH key"):
        wait_for_ssh(router, 30, clock, sleep)
    assert len(router.calls) == 1


def test_a_login_that_is_not_root_stops_at_connect_and_names_sudo() -> None:
    router = FakeRouter(user="admin")
    error, events = fail(router, FlashPlan(claim=CLAIM))
    assert error.code == errors.UNREACHABLE and "do not run as root (user admin)" in error.message
    assert "--sudo" in error.hint and [e["step"] for e in events] == ["connect"]
