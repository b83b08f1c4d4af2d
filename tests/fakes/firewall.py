"""An in-memory `Firewall` (gateway/dataplane/firewall.py), so policy, accounting and daemon
tests need neither root nor a kernel.

It implements the whole protocol, the daemon's generation check and worker-thread snapshots
included, so the daemon runs the same code paths on it as on the kernel's
(gateway/dataplane/kernel.py); tests/unit/test_firewall_protocol.py keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.config import Config
from gateway.dataplane import ruleset
from gateway.dataplane.firewall import NftError
from gateway.dataplane.grants import (
    QUOTA_PREFIX,
    SET4,
    SET6,
    Changes,
    Element,
    Grant,
    KernelState,
    ObjectKey,
    Spec,
    Start,
    Triple,
    desired,
    diff,
)
from gateway.dataplane.journal import Journal
from gateway.dataplane.kernel import untouched
from gateway.stations.accounting import Quota, Reading, Usage


class FakeFirewall:
    """In-memory stand-in with the same contract, so policy tests need neither root nor kernel.

    It models what the gateway relies on: client elements and objects with the kernel's
    transaction rules (a change that deletes what is missing, or re-points a key, fails whole),
    counters that carry initial values, and quotas that drop traffic once used up. `traffic()`
    plays packets through a client's policy as `client_up` / `client_down` would.
    """

    def __init__(self) -> None:
        self.table: str | None = None
        self.elements: set[Triple] = set()
        self.objects: dict[ObjectKey, Spec] = {}
        self.counters: dict[str, list[int]] = {}  # name -> [packets, bytes]
        self.quota_used: dict[str, int] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.fail_next: str | None = None  # an NftError message for the next change
        self.commits = 0  # transactions committed by this process (the protocol's)
        self._generation = 0  # moves with every commit, ours or anyone else's
        self.journal = Journal()  # commits made while snapshots are open
        self._readings: dict[str, Reading] | None = None  # installed by a snapshot

    # -- the Firewall contract -------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        self.table = ruleset.render(config)
        self.elements, self.objects = set(), {}
        self.counters, self.quota_used = {}, {}
        self._commit(diff(desired(grants), KernelState()), start or {})
        self.calls.append(("apply", tuple(sorted(e for g in grants for e in g.elements()))))
        self._committed(None)

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        if self.table is None:
            raise NftError("Error: No such file or directory; did you mean table 'plaza'?")
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise NftError(message)
        self._check(changes)
        self._commit(changes, start or {})
        self.calls.append(("change", (changes.del_elements, changes.add_elements)))
        if changes:  # as the kernel's: an empty change commits nothing
            self._committed(changes)

    def own_commit(self) -> None:
        """A commit this process made to another table (the LAN guard's, the garden hook's):
        it moves the generation like any commit, and is this process's own."""
        self.commits += 1
        self._generation += 1

    def state(self) -> KernelState:
        return KernelState(frozenset(self.elements), dict(self.objects))

    def drift(self, grants: Iterable[Grant]) -> Changes:
        if self.table is None:
            raise NftError("Error: No such file or directory")
        return diff(desired(grants), self.state())

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        """All sessions' readings (those a snapshot installed, once), or those of `sessions`."""
        if sessions is None and self._readings is not None:
            found, self._readings = self._readings, None
            return found
        return self._read_readings(None if sessions is None else {g.session for g in sessions})

    def _read_readings(self, wanted: set[str] | None) -> dict[str, Reading]:
        usage: dict[str, dict[str, int]] = {}
        quotas: dict[str, dict[str, Quota]] = {}
        for (kind, name), spec in self.objects.items():
            prefix, _, session = name.partition("_")
            if wanted is not None and session not in wanted:
                continue
            if kind == "counter":
                packets, count = self.counters[name]
                usage.setdefault(session, {}).update(
                    {f"bytes_{prefix}": count, f"packets_{prefix}": packets}
                )
            elif kind == "quota":
                what = {v: k for k, v in QUOTA_PREFIX.items()}[prefix]
                quotas.setdefault(session, {})[what] = Quota(spec[0], self.quota_used[name])
        return {
            s: Reading(Usage(**usage.get(s, {})), quotas.get(s, {}))
            for s in usage.keys() | quotas.keys()
        }

    def allowed(self) -> set[Element]:
        return {
            (key.split(" . ")[0], key.split(" . ")[1])
            for name, key, _ in self.elements
            if name in (SET4, SET6)
        }

    def present(self) -> bool:
        return self.table is not None

    def current(self, config: Config) -> bool:
        return self.table == ruleset.render(config)

    def generation(self) -> int:
        return self._generation

    def snapshot(self) -> FakeSnapshot:
        return FakeSnapshot(self)

    # -- test helpers ----------------------------------------------------------------------
    def flush(self) -> None:
        """The table vanished (someone ran `nft flush ruleset`)."""
        self.table = None
        self.elements, self.objects, self.counters, self.quota_used = set(), {}, {}, {}
        self._generation += 1  # someone else's commit: `commits` stays

    def external(self, changes: Changes) -> None:
        """Someone else (an admin's `nft` command) changed the client sets and objects: the
        generation moves, this process's `commits` do not."""
        self._check(changes)
        self._commit(changes, {})
        self._generation += 1

    def traffic(self, ip: str, mac: str, up: int = 0, down: int = 0, size: int = 1000) -> int:
        """Send `up` bytes from and `down` bytes to a client in packets of `size` bytes;
        returns the bytes that got through (quotas drop the rest)."""
        passed = 0
        f = "6" if ":" in ip else "4"
        authorized = any(n.startswith("auth") and k == f"{ip} . {mac}" for n, k, _ in self.elements)
        for direction, amount, key in (("up", up, f"{ip} . {mac}"), ("down", down, ip)):
            if direction == "up" and not authorized:
                continue  # lan_forward rejects it
            while amount > 0:
                length = min(size, amount)
                amount -= length
                if self._dropped_by_quota(direction, f, key, length):
                    continue
                counter = self._target(f"cnt_{direction}{f}", key)
                if counter:
                    self.counters[counter][0] += 1
                    self.counters[counter][1] += length
                    passed += length
        return passed

    # -- internals -------------------------------------------------------------------------
    def _committed(self, changes: Changes | None) -> None:
        self.commits += 1
        self._generation += 1
        self.journal.record(changes)

    def _snapshot_closed(self) -> None:
        if self.journal.close():
            self._readings = None

    def _target(self, map_name: str, key: str) -> str | None:
        return next((v for n, k, v in self.elements if n == map_name and k == key), None)

    def _dropped_by_quota(self, direction: str, f: str, key: str, length: int) -> bool:
        for stem in (f"quota_{direction}", f"quota_total_{direction}"):
            name = self._target(f"{stem}{f}", key)
            if name:
                self.quota_used[name] += length
                if self.quota_used[name] >= self.objects[("quota", name)][0]:
                    return True  # `quota over`: the packet that crosses the line goes too
        return False

    def _check(self, changes: Changes) -> None:
        elements = set(self.elements)
        for e in changes.del_elements:
            match = next((x for x in elements if x[:2] == e[:2]), None)
            if match is None:
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.discard(match)
        objects = set(self.objects)
        for key in changes.del_objects:
            if key not in objects:
                raise NftError("Error: Could not process rule: No such file or directory")
            if any(e[2] == key[1] for e in elements):
                raise NftError("Error: Could not process rule: Device or resource busy")
            objects.discard(key)
        objects |= {key for key, _ in changes.add_objects}
        for e in changes.add_elements:
            old = next((x for x in elements if x[:2] == e[:2]), None)
            if old is not None and old != e:
                raise NftError("Error: Could not process rule: File exists")
            if e[2] is not None and not any(k[1] == e[2] for k in objects):
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.add(e)

    def _commit(self, changes: Changes, start: Mapping[str, Start]) -> None:
        for e in changes.del_elements:
            self.elements = {x for x in self.elements if x[:2] != e[:2]}
        for key in changes.del_objects:
            self.objects.pop(key, None)
            self.counters.pop(key[1], None)
            self.quota_used.pop(key[1], None)
        for key, spec in changes.add_objects:
            kind, name = key
            prefix, _, session = name.partition("_")
            begin = start.get(session, Start())
            exists = key in self.objects
            self.objects[key] = spec
            if exists:
                continue  # a quota resized in place keeps what it used
            if kind == "counter":
                u = begin.usage
                self.counters[name] = (
                    [u.packets_up, u.bytes_up] if prefix == "up" else [u.packets_down, u.bytes_down]
                )
            elif kind == "quota":
                what = {v: k for k, v in QUOTA_PREFIX.items()}[prefix]
                self.quota_used[name] = begin.quota_used.get(what, 0)
        self.elements |= set(changes.add_elements)


class FakeSnapshot:
    """`FakeFirewall.snapshot()`: the kernel's `Snapshot` contract on copies taken when it
    opens, so the worker thread reads nothing the daemon's thread is changing. Readings it
    installs leave out sessions whose objects were (re)made or deleted while it was open,
    and a repair leaves out what this process committed meanwhile, as the kernel's do."""

    def __init__(self, firewall: FakeFirewall) -> None:
        self.firewall = firewall
        self.mark = 0
        self.readings: dict[str, Reading] | None = None
        self.drift: Changes | None = None
        self.seconds = 0.0
        self._present = False
        self._state = KernelState()
        self._all: dict[str, Reading] = {}

    def __enter__(self) -> FakeSnapshot:
        self.mark = self.firewall.journal.open()
        self._present = self.firewall.present()
        self._state = self.firewall.state()
        self._all = self.firewall._read_readings(None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.firewall._snapshot_closed()

    def read_readings(self) -> None:
        if not self._present:
            raise NftError("Error: No such file or directory; table inet plaza is missing")
        self.readings = dict(self._all)

    def read_drift(self, grants: list[Grant]) -> None:
        if not self._present:
            raise NftError("Error: No such file or directory")
        self.drift = diff(desired(grants), self._state)

    def repair(self) -> Changes | None:
        return untouched(self.drift, self.firewall.journal.since(self.mark))

    def install(self) -> None:
        since = self.firewall.journal.since(self.mark)
        if self.readings is None or any(c is None for c in since):
            return  # the table was replaced meanwhile: the next read counts itself
        redone = {
            name.partition("_")[2]
            for c in since
            if c is not None
            for _kind, name in (*c.del_objects, *(key for key, _ in c.add_objects))
        }
        self.firewall._readings = {s: r for s, r in self.readings.items() if s not in redone}
