"""Config test-and-rollback on the router, as OpenWISP's agent does it: a new config is
checked, installed, the services restarted, and if the router cannot reach the cloud within
the timeout, the previous config is put back and the services restarted again.

Pure logic with its collaborators passed in (check, restart, probe, clock, sleep), so the
timing is tested with a fake clock; provisioning/agent.py wires the real ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import CONFIG_REFUSED, HALF_DONE, ProvisionError

PREVIOUS = ".previous"  # the kept config: <config>.previous
PENDING = ".pending"  # exists while a new config is on trial: <config>.pending


@dataclass(frozen=True)
class Outcome:
    applied: bool  # the new config is in force
    rolled_back: bool
    waited: float  # seconds until the probe answered (or the timeout)
    message: str


@dataclass
class ConfigRollout:
    config: Path  # e.g. /etc/plaza/gateway.toml
    check: Callable[[Path], None]  # raises ProvisionError(CONFIG_REFUSED) on a bad config
    restart: Callable[[], None]  # restarts the services reading the config
    probe: Callable[[], bool]  # True: the router reaches the cloud
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    interval: float = 2.0  # seconds between probes

    @property
    def previous(self) -> Path:
        return self.config.with_name(self.config.name + PREVIOUS)

    @property
    def pending(self) -> Path:
        return self.config.with_name(self.config.name + PENDING)

    def recover(self) -> str:
        """At boot, before the services start: a config still on trial (the power went, or
        the agent was killed, before the cloud answered) was never confirmed, so the previous
        one is put back. Returns what was done, "" if nothing was pending."""
        if not self.pending.exists():
            return ""
        if self.previous.exists():
            os.replace(self.previous, self.config)
            done = f"{self.config}: an unconfirmed new config was found at boot; previous restored"
        else:
            done = f"{self.config}: an unconfirmed new config was found at boot; nothing to restore"
        self.pending.unlink()
        return done

    def apply(self, new: Path, timeout: float) -> Outcome:
        """Check `new`, install it, restart, wait up to `timeout` s for the probe; roll back
        on silence. A config that fails its check never replaces the old one."""
        self.check(new)  # before anything is touched
        had_old = self.config.exists()
        if had_old:
            shutil.copy2(self.config, self.previous)
        staged = self.config.with_name(self.config.name + ".new")
        shutil.copyfile(new, staged)
        self._same_owner_and_mode(staged, had_old)
        if had_old:
            self.pending.write_text(f"{new}\n")  # on trial until the cloud answers
        os.replace(staged, self.config)  # atomic: the daemon never reads half a file
        try:
            self.restart()
            waited = self.wait(timeout)
        except BaseException:
            self._restore(had_old)
            raise
        if waited is not None:
            self.pending.unlink(missing_ok=True)
            return Outcome(
                True,
                False,
                waited,
                f"new config in force; cloud reached {waited:.0f} s after the restart",
            )
        if not had_old:
            raise ProvisionError(
                HALF_DONE,
                f"with the new config the router did not reach the cloud in {timeout:.0f} s, "
                "and there was no previous config to go back to",
                "check the WAN settings in the new config and apply it again",
            )
        self._restore(had_old)
        raise ProvisionError(
            CONFIG_REFUSED,
            f"with the new config the router did not reach the cloud in {timeout:.0f} s: "
            "the previous config was restored and the services restarted",
            "check the WAN/DNS settings of the new config",
        )

    def _same_owner_and_mode(self, staged: Path, had_old: bool) -> None:
        """The config holds secrets (the wallet's client secret): it keeps the old file's
        owner and mode (the package's root:plaza 0640), never a umask's 0644."""
        if not had_old:
            os.chmod(staged, 0o640)
            return
        old = os.stat(self.config)
        os.chmod(staged, old.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):  # not root (tests): the mode matters most
            os.chown(staged, old.st_uid, old.st_gid)

    def _restore(self, had_old: bool) -> None:
        if had_old:
            os.replace(self.previous, self.config)
            self.pending.unlink(missing_ok=True)
            self.restart()

    def wait(self, timeout: float) -> float | None:
        """Seconds until the probe said yes, or None after `timeout`."""
        start = self.clock()
        while True:
            if self.probe():
                return self.clock() - start
            left = timeout - (self.clock() - start)
            if left <= 0:
                return None
            self.sleep(min(self.interval, left))
