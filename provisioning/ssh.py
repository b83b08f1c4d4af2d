"""Commands on the router through the OpenSSH client (`ssh` subprocesses).

Why the OpenSSH client and not a Python SSH library: the technician's keys, agent and
`~/.ssh/config` work as they do in a terminal, and nothing extra is installed on the laptop.
Key authentication only (`BatchMode=yes`: never a password prompt that hangs a batch), and a
provisioning known_hosts file of its own: a new router's key is accepted and remembered
(`StrictHostKeyChecking=accept-new`), a CHANGED key is refused with a clear error.

`Runner` is the interface the steps use; tests pass a fake (tests/fakes/ssh.py).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from provisioning.errors import DISK_FULL, INSTALL_FAILED, UNREACHABLE, ProvisionError

SSH_FAILED = 255  # ssh's own exit status when the connection (not the command) failed
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Result:
    """What a remote command did."""

    rc: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Runner(Protocol):
    """Runs commands on one router."""

    host: str

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120
    ) -> Result:
        """Run `argv` on the router (quoted for its shell); an SSH failure raises
        ProvisionError(UNREACHABLE), a failing command returns its Result."""
        ...

    def upload(
        self, source: BinaryIO, size: int, remote: str, progress: Callable[[int], None]
    ) -> None:
        """Write `size` bytes from `source` to the router's `remote` path, calling
        `progress(bytes_sent)` as they go."""
        ...


def as_root(runner: Runner, wait: float = 0.0) -> str:
    """Connect (waiting up to `wait` s for a booting router) and make sure commands run as
    root: the steps install packages and write /etc. Returns the login's name."""
    result = wait_for_ssh(runner, wait)
    user = result.stdout.strip()
    if result.ok and user == "root":
        return user
    why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"user {user}"
    raise ProvisionError(
        UNREACHABLE,
        f"{runner.host}: commands do not run as root ({why})",
        "log in as root (--user root), or use --sudo with a login allowed passwordless sudo",
    )


def wait_for_ssh(
    runner: Runner,
    wait: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 2.0,
) -> Result:
    """`id -un` on the router, retried for up to `wait` seconds while the router cannot be
    reached (a router still booting); a refused key or a changed host key fails at once."""
    deadline = clock() + wait
    while True:
        try:
            return runner.run(["id", "-un"], timeout=30)
        except ProvisionError as exc:
            if not exc.message.startswith(f"{runner.host}: cannot reach") or clock() >= deadline:
                raise
        sleep(min(interval, max(0.0, deadline - clock())))


def classify(host: str, stderr: str) -> ProvisionError:
    """ssh's exit status 255 with its stderr, as the error the technician can act on."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "ssh failed"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        return ProvisionError(
            UNREACHABLE,
            f"{host}: the router's SSH host key CHANGED since it was first provisioned",
            "if the router was reinstalled, remove its line from the provisioning known_hosts "
            "file (ssh-keygen -R HOST -f FILE); otherwise stop: something else answers as it",
        )
    if "Permission denied" in text:
        return ProvisionError(
            UNREACHABLE,
            f"{host}: the router refused the SSH key ({last})",
            "use --identity with the key whose public half is in the router's "
            "authorized_keys, and --user if the login is not root",
        )
    unreachable = (
        "Could not resolve hostname",
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
        "Connection closed",
        "Connection reset",
    )
    if any(marker in text for marker in unreachable):
        return ProvisionError(
            UNREACHABLE,
            f"{host}: cannot reach the router over SSH ({last})",
            "check the cable and the router's address, that it has booted, and --port",
        )
    return ProvisionError(UNREACHABLE, f"{host}: ssh failed ({last})", "run ssh -v by hand")


@dataclass
class OpenSSH:
    """The real runner: one `ssh` process per command (ControlMaster multiplexes them)."""

    host: str
    user: str = "root"
    port: int = 22
    identity: str | None = None
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh/plaza_known_hosts")
    options: Sequence[str] = ()  # extra -o options, e.g. for the VM test
    connect_timeout: int = 10
    control_dir: Path | None = None  # ControlMaster socket dir; None: one connection each
    sudo: bool = False  # run every command through `sudo -n` (a login that is not root)

    def base(self) -> list[str]:
        return [*self.options_argv(), "-l", self.user, self.host, "--"]

    def options_argv(self) -> list[str]:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "ssh",
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.control_dir is not None:
            argv += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control_dir}/%C",
                "-o",
                "ControlPersist=10",
            ]
        # ssh keeps the FIRST value it reads for an option: the caller's -o go first, so
        # `--ssh-option StrictHostKeyChecking=no` (a throwaway VM) overrides the default.
        extra = [item for option in self.options for item in ("-o", option)]
        return [argv[0], *extra, *argv[1:]]

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120
    ) -> Result:
        command = " ".join(shlex.quote(a) for a in (["sudo", "-n", *argv] if self.sudo else argv))
        try:
            proc = subprocess.run(
                [*self.base(), command],
                input=input if input is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ProvisionError(
                UNREACHABLE, f"{self.host}: {argv[0]} did not finish in {timeout:.0f} s"
            ) from None
        result = Result(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if result.rc == SSH_FAILED:
            raise classify(self.host, result.stderr)
        return result

    def close(self) -> None:
        """Ends the ControlMaster connection, if one was opened (`ssh -O exit`)."""
        if self.control_dir is not None:
            subprocess.run(
                [*self.options_argv(), "-l", self.user, "-O", "exit", self.host],
                capture_output=True,
                check=False,
                timeout=10,
            )

    def upload(
        self, source: BinaryIO, size: int, remote: str, progress: Callable[[int], None]
    ) -> None:
        """Streams through `ssh ... cat` rather than scp: the bytes pass through this process,
        so the progress bar shows real bytes sent, and the file appears under its name only
        when complete (written to NAME.part, then renamed)."""
        part = shlex.quote(remote + ".part")
        # umask 077: a venue config holds secrets; nobody else on the router reads it.
        command = f"umask 077 && cat > {part} && mv -f {part} {shlex.quote(remote)}"
        if self.sudo:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        proc = subprocess.Popen(
            [*self.base(), command],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stderr is not None
        sent = 0
        try:
            while chunk := source.read(CHUNK):
                proc.stdin.write(chunk)
                sent += len(chunk)
                progress(sent)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        stderr = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
        if rc == SSH_FAILED:
            raise classify(self.host, stderr)
        if rc != 0 or sent != size:
            full = "No space left" in stderr
            raise ProvisionError(
                DISK_FULL if full else INSTALL_FAILED,
                f"{self.host}: copying the package failed: {stderr.strip() or f'exit {rc}'}",
                "free space on the router" if full else "",
            )
