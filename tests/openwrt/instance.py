"""One OpenWrt userland instance (../shared/tools/openwrt-host/run-in-openwrt.sh): procd as
PID 1 of its own namespaces, commands run inside it, its log."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.openwrt.host import TOOL

RUN = TOOL / "run-in-openwrt.sh"
T = TypeVar("T")


class OpenWrt:
    def __init__(self, name: str, rootfs: Path, overlays: tuple[Path, ...] = ()) -> None:
        self.name = name
        self.rootfs = rootfs
        self.overlays = overlays

    def start(self, netns: str | None = None) -> None:
        """Boot; in the named network namespace `netns` (owrt-*) if given, else a fresh one."""
        cmd = [str(RUN), "start", "-n", self.name, "-r", str(self.rootfs)]
        if netns:
            cmd += ["--netns", netns]
        for overlay in self.overlays:
            cmd += ["-o", str(overlay)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        subprocess.run([str(RUN), "stop", "-n", self.name], capture_output=True, timeout=60)

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> str:
        """Run `script` with the instance's /bin/sh (busybox ash); its stdout and stderr."""
        done = subprocess.run(
            [str(RUN), "exec", "-n", self.name, "--", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        out = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"{script!r} exited {done.returncode}:\n{out}\n{self.log()}")
        return out

    def pid(self) -> int:
        out = subprocess.run(
            [str(RUN), "status", "-n", self.name], capture_output=True, text=True, check=True
        ).stdout
        return int(out.split()[-1])

    def host_net(self, *args: str) -> None:
        """A host command (ip, ...) in the instance's network namespace."""
        subprocess.run(["nsenter", "-t", str(self.pid()), "-n", *args], check=True, timeout=30)

    def log(self) -> str:
        return self.sh("cat /tmp/log/messages", check=False)

    def services(self) -> dict:
        return json.loads(self.sh("ubus call service list") or "{}")

    def instances(self, service: str) -> dict[str, dict]:
        return self.services().get(service, {}).get("instances", {})

    def wait(self, what: str, predicate: Callable[[], T], seconds: float = 30.0) -> T:
        deadline = time.monotonic() + seconds
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log()}")
            time.sleep(0.3)


# What the tests ask of an instance with Plaza installed (tests/openwrt/test_*.py).
def client(box: OpenWrt, mac: str) -> dict | None:
    out = box.sh("plaza-ctl clients --json", check=False)  # the .ipk's default socket
    try:
        clients = json.loads(out)
    except ValueError:
        return None  # the daemon is (re)starting
    return next((c for c in clients if c.get("mac") == mac), None)


def installed(box: OpenWrt) -> None:
    """What `opkg install` does after laying the files: the package's postinst."""
    box.sh("/usr/lib/opkg/info/plaza.postinst 2>/dev/null")


def running(box: OpenWrt) -> dict[str, int] | None:
    inst = box.instances("plaza")
    pids = {name: i["pid"] for name, i in inst.items() if i.get("running")}
    return pids if set(pids) == {"gateway", "portal"} else None
