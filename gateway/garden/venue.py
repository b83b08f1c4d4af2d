"""The venue's walled garden as the merchant set it in the cloud.

The names in the cloud config's `garden.domains` join the TOML's `[garden] domains` and the
wallet's own hosts. Both gates of the garden (gateway/garden/inspector.py) must learn them:

- the SNI inspector, in this process: the next connection is judged by the new names;
- dnsmasq, whose `nftset=` lines put a garden name's addresses into the kernel sets. dnsmasq
  reads them only when it starts (SIGHUP re-reads hosts and lease files, not its config), so
  the daemon writes `<state_dir>/dnsmasq.d/cloud-garden.conf`, which the generated
  dnsmasq.conf includes, and runs `[garden] dnsmasq_restart` (an argv the router's owner set,
  e.g. OpenWrt's `/etc/init.d/dnsmasq restart`) when, and only when, that file's content
  changed. A restart costs the DNS cache and well under a second of DNS; leases are on disk.

A name taken out of the cloud's list stops passing the SNI check at once; its addresses
leave the sets as their elements time out (ruleset.GARDEN_TIMEOUT), and with the SNI check
failing, nothing reaches them meanwhile.

The cloud chooses names, never configuration lines: every name is checked again here (the
pattern that refuses newlines, slashes and the rest, and the public suffix list, which
refuses `*.co.uk` or `*.github.io` as the cloud's editor does), and a list that fails the
check is refused whole and logged, leaving the router's own garden in force, as venue_policy
does with a bad policy. Whole, not the one entry: a cloud that sends such a name is broken or
not the cloud, and its other names deserve no more trust.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from gateway.config import Config
from gateway.files import write_atomic
from gateway.garden.inspector import Garden
from gateway.stations import dnsmasq
from gateway.uplink.cloud_config import FILE, CloudConfigFile
from plaza.validators import MAX_GARDEN_DOMAINS, garden_name, public_suffix_wildcards

log = logging.getLogger("plaza.garden")

RESTART_TIMEOUT = 30.0


class GardenListError(ValueError):
    pass


def cloud_domains(section: object) -> list[str]:
    """The cloud's garden names, normalised; GardenListError names the first bad one."""
    if section is None:
        return []
    if not isinstance(section, dict):
        raise GardenListError("garden: not an object")
    names = section.get("domains", [])
    if not isinstance(names, list) or len(names) > MAX_GARDEN_DOMAINS:
        raise GardenListError(f"garden.domains: not a list of at most {MAX_GARDEN_DOMAINS} names")
    out: list[str] = []
    for raw in names:
        name = garden_name(raw)
        if name is None:
            raise GardenListError(f"garden.domains: not a host name: {raw!r}")
        if name not in out:
            out.append(name)
    opened = public_suffix_wildcards(out)
    if opened:
        name = opened[0]
        raise GardenListError(f"garden.domains: {name} opens the public suffix {name[2:]}")
    return out


class VenueGarden:
    """Watches the cloud config (one stat per call); keeps dnsmasq's fragment in step."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.file = CloudConfigFile(Path(config.gateway.state_dir) / FILE)
        self.fragment = dnsmasq.fragments_dir(config) / dnsmasq.CLOUD_GARDEN
        self.own = Garden.from_config(config)  # the TOML's names and the wallet's hosts
        self.cloud: list[str] = []
        self.restart_due = False  # the fragment changed and dnsmasq has not been restarted
        self.restarts = {"ok": 0, "failed": 0}

    def check(self) -> Garden | None:
        """The whole garden when the cloud's part changed since the last call, else None."""
        if not self.file.changed():
            return None
        try:
            if self.file.error:
                raise GardenListError(self.file.error)
            cloud = cloud_domains(self.file.section("garden"))
        except GardenListError as exc:
            log.error("cloud walled garden not used (%s); the router's own names apply", exc)
            cloud = []
        if cloud != self.cloud or (self.file.document is not None and not self.fragment.exists()):
            log.info(
                "walled garden from the cloud (config version %s): %s",
                self.file.version,
                ", ".join(cloud) or "no names",
            )
        self.cloud = cloud
        garden = self.own.with_names(cloud)
        self._write(dnsmasq.render_cloud_garden(self.config, garden))
        return garden

    def _write(self, text: str) -> None:
        """Replace the fragment if its content differs; an absent fragment counts as one
        without names (dnsmasq started without it has none of the cloud's)."""
        try:
            old = self.fragment.read_text()
        except FileNotFoundError:
            old = dnsmasq.render_cloud_garden(self.config, Garden.from_config(self.config))
        except OSError:
            old = ""
        if old == text and self.fragment.exists():
            return
        try:
            self.fragment.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomic(self.fragment, text.encode(), 0o644)  # dnsmasq may read as another user
        except OSError as exc:
            log.error("cannot write %s: %s; dnsmasq keeps the names it has", self.fragment, exc)
            return
        if old != text:
            self.restart_due = True

    def restart_dnsmasq(self) -> bool:
        """Run the configured restart command (blocking: call it from a worker thread)."""
        argv = list(self.config.garden.dnsmasq_restart)
        self.restart_due = False
        if not argv:
            log.warning(
                "the cloud's garden names are in %s; dnsmasq reads them when it next starts "
                "([garden] dnsmasq_restart is not set)",
                self.fragment,
            )
            return False
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=RESTART_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.restarts["failed"] += 1
            log.error("dnsmasq restart (%s) failed: %s", argv[0], exc)
            return False
        if done.returncode != 0:
            self.restarts["failed"] += 1
            why = done.stderr.decode(errors="replace").strip()[:200]
            log.error("dnsmasq restart (%s) exited %d: %s", argv[0], done.returncode, why)
            return False
        self.restarts["ok"] += 1
        log.info("dnsmasq restarted for the new walled garden")
        return True
