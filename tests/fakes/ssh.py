"""A router behind a fake SSH connection (provisioning/ssh.py's `Runner`), so every step and
every error path of plaza-provision is tested without a network, an sshd or dpkg.

`FakeRouter` models what the steps rely on, with state that changes as a real router's would:
dpkg's database (a preinst that fails leaves the old version installed; missing dependencies
leave the new one unpacked until `apt-get -f install`), free space under /var, files written,
the config the agent keeps or rolls back, the enrolment the cloud grants once per claim code,
and which units run. Knobs choose the bad inputs; `calls` records each command run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from provisioning.ssh import Result, classify

UNITS = ("plaza-gateway", "plaza-portal", "plaza-dnsmasq")

# The messages the router's own tools print, as cloud/enrol.py and gateway/ops/cli.py word them.
ENROL_ANSWERS = {
    "used": "plaza-gateway: enrolment refused: claim code already used",
    "expired": "plaza-gateway: enrolment refused: claim code expired",
    "unknown": "plaza-gateway: enrolment refused: unknown claim code",
    "offline": "plaza-gateway: POST /api/v1/enrol: connection refused by cloud.example",
}
SSH_ERRORS = {
    "unreachable": "ssh: connect to host r1 port 22: No route to host",
    "refused": "ssh: connect to host r1 port 22: Connection refused",
    "wrong-key": "root@r1: Permission denied (publickey).",
    "changed-key": "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
    "Host key verification failed.",
}


@dataclass
class FakeRouter:
    host: str = "r1"
    user: str = "root"  # who the commands run as
    installed: tuple[str, str] | None = None  # (version, dpkg status) of plaza
    package_version: str = "0.2.0"  # what the uploaded .deb says it is
    free_kb: int = 2_000_000
    dpkg: str = "ok"  # ok | preinst-fails | deps | deps-unfixable | half
    config: bytes | None = b"[lan]\n"  # /etc/plaza/gateway.toml as it is now
    agent: str = "ok"  # ok | check-fails | rolled-back
    enrol: str = "ok"  # ok | used | expired | unknown | offline | already | no-config
    ssh: str = ""  # a key of SSH_ERRORS: every command fails at the SSH level
    active: set[str] = field(default_factory=lambda: set())
    checks: list[dict[str, str]] = field(default_factory=list)  # what `agent check` prints
    files: dict[str, bytes] = field(default_factory=dict)  # as they are now
    uploads: dict[str, bytes] = field(default_factory=dict)  # everything ever uploaded
    calls: list[list[str]] = field(default_factory=list)
    inputs: list[bytes] = field(default_factory=list)
    on_call: Callable[[list[str]], None] | None = None  # e.g. a test's interruption

    # -- Runner ------------------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120
    ) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if input:
            self.inputs.append(input)
        if self.on_call is not None:
            self.on_call(argv)
        if self.ssh:
            raise classify(self.host, SSH_ERRORS[self.ssh])
        handler = getattr(self, "_" + argv[0].replace("-", "_"), None)
        return handler(argv[1:]) if handler else Result(0)

    def upload(
        self, source: BinaryIO, size: int, remote: str, progress: Callable[[int], None]
    ) -> None:
        self.calls.append(["<upload>", remote])
        if self.ssh:
            raise classify(self.host, SSH_ERRORS[self.ssh])
        data = source.read()
        for sent in range(0, len(data), 4096):
            progress(min(sent + 4096, len(data)))
        self.files[remote] = self.uploads[remote] = data

    # -- commands ----------------------------------------------------------------------------
    def commands(self) -> list[str]:
        return [" ".join(call) for call in self.calls]

    def _rm(self, args: list[str]) -> Result:
        for path in args[1:]:
            self.files.pop(path, None)
        return Result(0)

    def _id(self, args: list[str]) -> Result:
        return Result(0, f"{self.user}\n")

    def _df(self, args: list[str]) -> Result:
        return Result(
            0,
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
            f"/dev/vda1 4000000 1000 {self.free_kb} 1% /\n",
        )

    def _dpkg_deb(self, args: list[str]) -> Result:
        if args[1] not in self.files:
            return Result(2, "", f"dpkg-deb: error: failed to read archive '{args[1]}'")
        return Result(0, f"Package: plaza\nVersion: {self.package_version}\n")

    def _dpkg_query(self, args: list[str]) -> Result:
        if self.installed is None:
            return Result(1, "", "dpkg-query: no packages found matching plaza")
        version, status = self.installed
        return Result(0, f"{version}\t{status} ")

    def _dpkg(self, args: list[str]) -> Result:
        new = self.package_version
        if self.dpkg == "preinst-fails":
            return Result(
                1,
                "",
                "dpkg: error processing archive plaza.deb (--install):\n"
                " new plaza package pre-installation script subprocess returned "
                "error exit status 1",
            )
        if self.dpkg in ("deps", "deps-unfixable"):
            self.installed = (new, "iU")
            return Result(
                1,
                "",
                "dpkg: dependency problems prevent configuration of plaza:\n"
                " plaza depends on nftables; however:\n  Package nftables is not "
                "installed.",
            )
        if self.dpkg == "half":
            self.installed = (new, "iF")
            return Result(
                1,
                "",
                "dpkg: error processing package plaza (--install):\n"
                " installed plaza package post-installation script subprocess "
                "returned error exit status 1",
            )
        self.installed = (new, "ii")
        return Result(0, f"Setting up plaza ({new}) ...\n")

    def _env(self, args: list[str]) -> Result:  # env DEBIAN_FRONTEND=... apt-get -f install
        if args[1] == "apt-get" and self.dpkg == "deps":
            self.installed = (self.package_version, "ii")
            return Result(0, "Setting up nftables ...\n")
        if args[1] == "apt-get":
            self.installed = None  # apt removes what it cannot satisfy
            return Result(100, "", "E: Unable to correct problems")
        return Result(0)

    def _plaza_provision_agent(self, args: list[str]) -> Result:
        if "check" in args:
            return Result(0, "".join(json.dumps(line) + "\n" for line in self.checks))
        new = self.files.get(args[args.index("apply-config") + 1])
        if self.agent == "check-fails":
            return Result(
                5,
                json.dumps(
                    {
                        "error": "the new config fails check-config: [lan] "
                        "interface: no such interface: 'br-lan'",
                        "hint": "fix it",
                        "exit": 5,
                    }
                )
                + "\n",
            )
        if self.agent == "rolled-back":
            return Result(
                5,
                json.dumps(
                    {
                        "error": "with the new config the router did not "
                        "reach the cloud in 60 s: the previous config was restored",
                        "hint": "check WAN",
                        "exit": 5,
                    }
                )
                + "\n",
            )
        self.config = new
        return Result(
            0, json.dumps({"applied": True, "waited": 3.0, "message": "new config in force"}) + "\n"
        )

    def _plaza_gateway(self, args: list[str]) -> Result:
        if self.enrol == "ok":
            self.enrol = "already"
            return Result(0, "dev_0123456789abcdef\n", "plaza-gateway: enrolled for venue v1\n")
        if self.enrol == "already":
            return Result(
                1,
                "",
                "plaza-gateway: already enrolled as dev_0123456789abcdef "
                "(/var/lib/plaza/cloud.json); use --force to enrol again\n",
            )
        if self.enrol == "no-config":  # plaza-gateway exits 2 on a config it cannot use
            return Result(
                2,
                "",
                "plaza-gateway: /etc/plaza/gateway.toml: cannot read: No such file or directory\n",
            )
        return Result(1, "", ENROL_ANSWERS[self.enrol] + "\n")

    def _systemctl(self, args: list[str]) -> Result:
        if args[0] in ("enable", "restart"):
            self.active.update(a for a in args if a.startswith("plaza-"))
            return Result(0)
        if args[0] == "is-active":
            states = ["active" if u in self.active else "inactive" for u in args[1:]]
            return Result(0 if all(s == "active" for s in states) else 3, "\n".join(states))
        return Result(0)
