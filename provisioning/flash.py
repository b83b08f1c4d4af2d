"""`plaza-provision flash`: bring one router into service over SSH, step by step, each step
leaving the router working if it fails (README "Field technician", docs/decisions.md).

Order, and why: connect; free space (before any byte is copied); copy the package; install it
(dpkg keeps the old version when the new one's unpack fails; `apt-get -f install` only when
dpkg reports missing dependencies); the venue config through the agent's test-and-rollback
(`plaza-gateway check-config` first, the old config kept); enrol ON the router (it makes its own
key; the claim code goes over SSH's stdin, never on a command line); enable and restart the
services last, so the daemon starts with its config and its identity.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.agent import UNITS
from provisioning.errors import (
    CLAIM_REFUSED,
    CLOUD_UNREACHABLE,
    CONFIG_REFUSED,
    DISK_FULL,
    HALF_DONE,
    INSTALL_FAILED,
    ProvisionError,
)
from provisioning.report import Reporter
from provisioning.ssh import Runner, as_root
from provisioning.tls_files import PortalTLS, install_commands

PACKAGE = "plaza"
SPARE = 20 * 1024 * 1024  # bytes kept free beyond the package's own needs
UNPACK_FACTOR = 4  # the .deb, its unpacked files, dpkg's backup of the old ones


@dataclass
class FlashPlan:
    claim: str
    cloud: str = ""
    venue_config: Path | None = None
    portal_tls: PortalTLS | None = None  # checked on the laptop (tls_files.load)
    package: Path | None = None
    root: str = ""  # prefix of the router's paths (tests, chroots)
    rollback_timeout: float = 60.0
    wait: float = 0.0  # seconds to keep trying to reach a router that is still booting
    result: dict[str, str] = field(default_factory=dict)

    def path(self, absolute: str) -> str:
        return (self.root.rstrip("/") + absolute) if self.root else absolute

    @property
    def spool(self) -> str:
        return self.path("/var/cache/plaza-provision")

    @property
    def config(self) -> str:
        return self.path("/etc/plaza/gateway.toml")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def installed(runner: Runner, name: str = PACKAGE) -> tuple[str, str]:
    """(version, dpkg status abbreviation e.g. 'ii ') of the installed package, or ('', '')."""
    out = runner.run(["dpkg-query", "-W", "-f=${Version}\t${db:Status-Abbrev}", name])
    if not out.ok or "\t" not in out.stdout:
        return "", ""
    version, status = out.stdout.split("\t", 1)
    return version.strip(), status.strip()


def check_space(runner: Runner, plan: FlashPlan, size: int) -> None:
    out = runner.run(["df", "-Pk", plan.path("/var")])
    try:
        available = int(out.stdout.strip().splitlines()[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        raise ProvisionError(
            HALF_DONE, f"cannot read free space: {last_line(out.stderr)}"
        ) from None
    need = size * UNPACK_FACTOR + SPARE
    if available < need:
        raise ProvisionError(
            DISK_FULL,
            f"disk full: {available // 2**20} MiB free under /var, the package needs "
            f"{need // 2**20} MiB",
            "free space on the router (apt-get clean, old logs) and run flash again; "
            "nothing was changed",
        )


def install(runner: Runner, plan: FlashPlan, remote: str) -> str:
    fields = runner.run(["dpkg-deb", "-f", remote, "Package", "Version"])
    meta = dict(line.split(": ", 1) for line in fields.stdout.splitlines() if ": " in line)
    name, new = meta.get("Package", PACKAGE), meta.get("Version", "")
    if not fields.ok or not new:
        raise ProvisionError(
            INSTALL_FAILED, f"not a Debian package: {last_line(fields.stderr)}", "check --package"
        )
    before, status = installed(runner, name)
    if before == new and status == "ii":
        return f"{name} {new} already installed"
    done = runner.run(["dpkg", "--force-confold", "-i", remote], timeout=600)
    apt = None
    if not done.ok and "dependency problems" in done.stderr + done.stdout:
        apt = runner.run(
            ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-f", "install", "-y"],
            timeout=600,
        )
    after, status = installed(runner, name)
    if after == new and status == "ii":
        return f"{name} {before or '(none)'} → {new}"
    why = (last_line(done.stderr) or last_line(done.stdout) or f"dpkg exit {done.rc}").strip()
    if apt is not None and not apt.ok:
        why += f"; apt-get -f install: {last_line(apt.stderr) or f'exit {apt.rc}'}"
    if status == "ii" and after == before:
        raise ProvisionError(
            INSTALL_FAILED,
            f"{name} {new} failed to install ({why}); {name} {before} is still installed "
            "and running",
            "send the package and this message to the packager",
        )
    if not before and not after:
        raise ProvisionError(
            INSTALL_FAILED,
            f"{name} {new} failed to install ({why}); the "
            "router had no Plaza before and has none now",
        )
    raise ProvisionError(
        HALF_DONE,
        f"{name} {new} failed to install ({why}) and dpkg left it as {status or 'absent'} {after}",
        "on the router: dpkg --configure -a, or reinstall the previous package",
    )


def apply_config(runner: Runner, plan: FlashPlan, remote: str) -> str:
    argv = ["plaza-provision-agent"]
    if plan.root:
        argv += ["--root", plan.root]
    argv += ["apply-config", remote, "--timeout", str(plan.rollback_timeout)]
    if plan.cloud:
        argv += ["--cloud", plan.cloud]
    out = runner.run(argv, timeout=plan.rollback_timeout + 120)
    try:
        answer = json.loads(last_line(out.stdout) or "{}")
    except ValueError:
        answer = {}
    if out.ok:
        return str(answer.get("message", "applied"))
    code = answer.get("exit", CONFIG_REFUSED)
    raise ProvisionError(
        code if isinstance(code, int) else CONFIG_REFUSED,
        str(answer.get("error") or last_line(out.stderr) or f"agent exit {out.rc}"),
        str(answer.get("hint", "")),
    )


def install_tls(runner: Runner, plan: FlashPlan, tls: PortalTLS) -> str:
    """The portal's chain and key where the venue config wants them, before the config step
    (its check-config reads them)."""
    chain, key = f"{plan.spool}/portal-chain.new", f"{plan.spool}/portal-key.new"
    for data, remote in ((tls.chain, chain), (tls.key, key)):
        runner.upload(io.BytesIO(data), len(data), remote, lambda n: None)
    out = runner.run(["sh", "-c", install_commands(chain, key, tls, plan.config)])
    if not out.ok:
        raise ProvisionError(
            HALF_DONE,
            f"the portal's certificate could not be installed: {last_line(out.stderr)}",
            f"check {tls.cert_file} and {tls.key_file} on the router, then run flash again",
        )
    return f"{tls.hostname}: {tls.cert_file}, {tls.key_file}"


def enrol(runner: Runner, plan: FlashPlan) -> str:
    argv = ["plaza-gateway", "--config", plan.config, "enrol", "--claim", "-"]
    if plan.cloud:
        argv += ["--cloud", plan.cloud]
    out = runner.run(argv, input=(plan.claim + "\n").encode(), timeout=90)
    if out.ok:
        plan.result["device_id"] = last_line(out.stdout)
        return f"enrolled as {last_line(out.stdout)}"
    why = last_line(out.stderr).removeprefix("plaza-gateway: ")
    if out.rc == 2:  # plaza-gateway's exit status for a config it cannot use
        raise ProvisionError(
            CONFIG_REFUSED,
            f"the router's config is not usable for enrolment: {why}",
            "run flash with --venue-config FILE (or reinstall the package's default config)",
        )
    if "already enrolled" in why:
        return f"{why.split(' (')[0]}; the claim code was not used"
    refusals = {
        "unknown claim code": "the cloud does not know this claim code (404): check it",
        "already used": "this claim code was already used (409): ask the merchant for a new "
        "one in the dashboard",
        "expired": "this claim code expired (410): ask the merchant for a new one",
    }
    for marker, hint in refusals.items():
        if marker in why:
            raise ProvisionError(CLAIM_REFUSED, why, hint)
    if "enrolment refused" in why:
        raise ProvisionError(CLAIM_REFUSED, why, "see the cloud's reason above")
    raise ProvisionError(
        CLOUD_UNREACHABLE,
        f"the router could not enrol: {why or f'exit {out.rc}'}",
        "check the router's WAN (DNS, default route) and --cloud; the package and config "
        "are in place, run flash again",
    )


def start_services(runner: Runner, restart: bool = True) -> str:
    """Enable and start the units; restart them only when `restart` (a new enrolment: the
    daemon's uplink starts with it). An upgrade's postinst and a new config (the agent) have
    restarted them already: another restart would only cut the LAN's DNS and DHCP again
    (plaza-dnsmasq is down while it regenerates its config; the VM test counted the probes)."""
    commands = [["systemctl", "enable", "--now", *UNITS]]
    if restart:
        commands.append(["systemctl", "restart", *UNITS])
    for argv in commands:
        out = runner.run(argv, timeout=120)
        if not out.ok:
            raise ProvisionError(
                HALF_DONE,
                f"{shlex.join(argv)}: {last_line(out.stderr)}",
                "journalctl -u plaza-gateway -u plaza-portal on the router",
            )
    return ("enabled and restarted: " if restart else "enabled and running: ") + ", ".join(UNITS)


def flash(runner: Runner, plan: FlashPlan, reporter: Reporter) -> dict[str, str]:
    """Every step, in order; a ProvisionError stops at the step that failed."""
    host = runner.host
    with reporter.step(host, "connect"):
        plan.result["user"] = as_root(runner, plan.wait)
    runner.run(["mkdir", "-p", plan.spool])
    if plan.package is not None:
        size = os.path.getsize(plan.package)
        with reporter.step(host, "disk space"):
            check_space(runner, plan, size)
        remote = f"{plan.spool}/{plan.package.name}"
        with reporter.step(host, "upload", total=size) as advance, plan.package.open("rb") as f:
            runner.upload(f, size, remote, advance)
        try:
            with reporter.step(host, "install"):
                plan.result["install"] = install(runner, plan, remote)
        finally:
            runner.run(["rm", "-f", remote])  # a router's flash is small; dpkg has its copy
    if plan.portal_tls is not None:
        with reporter.step(host, "portal certificate"):
            plan.result["portal_tls"] = install_tls(runner, plan, plan.portal_tls)
    if plan.venue_config is not None:
        remote = f"{plan.spool}/gateway.toml.new"
        data = plan.venue_config.read_bytes()
        try:
            with reporter.step(host, "config (test and rollback)"):
                runner.upload(io.BytesIO(data), len(data), remote, lambda n: None)
                plan.result["config"] = apply_config(runner, plan, remote)
        finally:
            runner.run(["rm", "-f", remote])  # it holds secrets; the agent installed its copy
    with reporter.step(host, "enrol"):
        plan.result["enrol"] = enrol(runner, plan)
    with reporter.step(host, "services"):
        enrolled_now = "device_id" in plan.result  # set by enrol() only for a new enrolment
        plan.result["services"] = start_services(runner, restart=enrolled_now)
    return plan.result
