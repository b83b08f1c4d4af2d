"""The kernel's firewall: the `Firewall` (gateway/dataplane/firewall.py) of the caller's
network namespace, nf_tables netlink for what runs often and libnftables for what is rare
(replacing the whole table, reading the garden sets into it), never `nft list` text.

Threads: the daemon's one thread makes every change; big reads (all counters, the whole client
state) may run in a worker thread (`NftFirewall.snapshot`). Each thread kind has its own
netlink socket, and changes committed while a snapshot was being read are replayed onto it
before the gateway sees it, so a read that overlapped a login or logout never undoes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from gateway.config import Config
from gateway.dataplane import compare, ruleset
from gateway.dataplane.firewall import NftError
from gateway.dataplane.grants import (
    FAMILY,
    SET4,
    SET6,
    TABLE,
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
    grant_objects,
)
from gateway.dataplane.journal import Journal
from gateway.dataplane.libnft import Libnftables
from gateway.dataplane.messages import (
    CLIENT_SETS,
    change_messages,
    object_spec,
    parse_elements,
    readings_of,
    tallied,
    tally,
)
from gateway.dataplane.netlink import (
    BE32,
    MSG_GETOBJ,
    MSG_GETTABLE,
    OBJ_TABLE,
    OBJ_TYPE,
    OBJ_TYPES,
    TABLE_NAME,
    NfNetlink,
    attr,
    strz,
)
from gateway.stations.accounting import Quota, Reading


class NftFirewall:
    """The real kernel, in the caller's network namespace: nf_tables netlink for what runs
    often, libnftables for replacing the whole table."""

    def __init__(self, nft: Libnftables | None = None) -> None:
        self.nft = nft or Libnftables()
        self.nl = NfNetlink()  # the daemon's own thread
        self.bulk = NfNetlink()  # big reads in a worker thread (`snapshot`)
        self.commits = 0  # transactions committed by this process
        self.journal = Journal()  # commits made while snapshots are open
        self._readings: dict[str, Reading] | None = None  # installed by a snapshot
        self._state: KernelState | None = None

    # -- changes ---------------------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        """Replace the table; walled-garden addresses learned from DNS are carried over with
        their remaining lifetime (dnsmasq answers from its cache without re-adding them), and
        session counters from `start` (the caller read them just before)."""
        garden: dict[str, list] = {}
        try:
            for name, _kind in ruleset.GARDEN_SETS:
                try:
                    out = self.nft.run(f"list set {FAMILY} {TABLE} {name}", json_output=True)
                except NftError:
                    continue  # no table yet (first start) or an older table without the set
                garden[name] = ruleset.garden_elements(out)
            self.nft.run(ruleset.transaction(config, grants, garden, start))
        finally:
            self.nft.release()
        self._committed(None)

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        """Apply element and object changes in one transaction (all or nothing)."""
        if changes:
            self.nl.commit(change_messages(changes, start))
            self._committed(changes)

    def own_commit(self) -> None:
        """Count a commit this process made to another table (the LAN guard's, the garden
        hook's): it moves the ruleset generation like ours, and is no one else's change."""
        self.commits += 1

    def _committed(self, changes: Changes | None) -> None:
        self.commits += 1
        self.journal.record(changes)

    # -- reads -----------------------------------------------------------------------------
    def generation(self) -> int:
        """The kernel's ruleset generation: with `commits`, tells whether anyone else has
        changed any table since (each commit moves it on by one)."""
        return self.nl.generation()

    def drift(self, grants: Iterable[Grant]) -> Changes:
        """What makes the kernel's client elements and objects equal `grants` (see
        `compare.drift`; a snapshot's state, if one was installed, is dropped: this reads the
        kernel)."""
        self._state = None
        return compare.drift(self.nl, grants)

    def state(self) -> KernelState:
        """The client sets, maps and objects (the garden sets, large, are not read)."""
        state, self._state = self._state, None
        return state if state is not None else self._read_state(self.nl)

    def _read_state(self, nl: NfNetlink) -> KernelState:
        elements: set[Triple] = set()
        for name in CLIENT_SETS:
            parse_elements(name, nl.elements(name), elements)
        objects: dict[ObjectKey, Spec] = {}
        for kind in OBJ_TYPES:
            for _kind, name, values in nl.objects(kind):
                objects[(kind, name)] = object_spec(kind, values)
        return KernelState(frozenset(elements), objects)

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        """Counters and quotas per session: all of them, or only those of `sessions` (a
        session's end reads its own objects, not ten thousand others)."""
        if sessions is None:
            found, self._readings = self._readings, None
            return found if found is not None else self._read_readings(self.nl)
        wanted = [key for g in sessions for key in grant_objects(g) if key[0] != "limit"]
        if len(wanted) > 4096:  # many ended at once: one dump costs less than the gets
            keep = {name.partition("_")[2] for _kind, name in wanted}
            return {s: r for s, r in self._read_readings(self.nl).items() if s in keep}
        objects = []
        try:
            for kind, name in wanted:
                if found := self.nl.object(kind, name):
                    objects.append(found)
        except NftError:
            return self._read_readings(self.nl)  # an object is missing (drift): read all
        return readings_of(objects)

    def _read_readings(self, nl: NfNetlink) -> dict[str, Reading]:
        """Every session's counters and quotas, parsed as they arrive (at 10,000 clients the
        20,000 objects are never all held as parsed objects at once)."""
        if not self._present(nl):
            raise NftError("Error: No such file or directory; table inet plaza is missing")
        usage: dict[str, list[int]] = {}
        quotas: dict[str, dict[str, Quota]] = {}
        for kind in ("counter", "quota"):
            body = strz(OBJ_TABLE, TABLE) + attr(OBJ_TYPE, BE32.pack(OBJ_TYPES[kind]))
            nl.request(
                MSG_GETOBJ, body, dump=True, parse=lambda b, s, e: tally(b, s, e, usage, quotas)
            )
        return tallied(usage, quotas)

    def allowed(self) -> set[Element]:
        found: set[Triple] = set()
        for name in (SET4, SET6):
            parse_elements(name, self.nl.elements(name), found)
        return {(key.split(" . ")[0], key.split(" . ")[1]) for _name, key, _obj in found}

    def present(self) -> bool:
        return self._present(self.nl)

    @staticmethod
    def _present(nl: NfNetlink) -> bool:
        try:
            nl.request(MSG_GETTABLE, strz(TABLE_NAME, TABLE))
        except NftError:
            return False
        return True

    def current(self, config: Config) -> bool:
        """The kernel's table has the structure `config` renders (same fingerprint)."""
        try:
            comment = self.nl.table_comment()
        except NftError:
            return False
        have = ruleset.fingerprint(f'\tcomment "{comment}"') if comment else None
        return have is not None and have == ruleset.fingerprint(ruleset.render(config))

    # -- reads in a worker thread ------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """A big read to make in a worker thread: see `Snapshot`."""
        return Snapshot(self)

    def _install(self, snap: Snapshot) -> None:
        assert self.journal.active
        since = self.journal.since(snap.mark)
        if any(changes is None for changes in since):
            return  # the table was replaced meanwhile: the next read goes to the kernel
        changed = [c for c in since if c is not None]
        if snap.readings is not None:
            # Objects (re)created or deleted while the read ran: their numbers may predate it.
            redone = {
                name.partition("_")[2]
                for c in changed
                for _kind, name in (*c.del_objects, *(key for key, _ in c.add_objects))
            }
            self._readings = {s: r for s, r in snap.readings.items() if s not in redone}
        if snap.state is not None and not changed:
            self._state = snap.state
        elif snap.state is not None:
            elements = {(name, key): obj for name, key, obj in snap.state.elements}
            objects = dict(snap.state.objects)
            for c in changed:  # replayed in commit order: the kernel holds exactly this now
                for name, key, _obj in c.del_elements:
                    elements.pop((name, key), None)
                for key in c.del_objects:
                    objects.pop(key, None)
                objects.update(c.add_objects)
                elements.update(((name, key), obj) for name, key, obj in c.add_elements)
            triples = frozenset((name, key, obj) for (name, key), obj in elements.items())
            self._state = KernelState(triples, objects)

    def _snapshot_closed(self) -> None:
        if self.journal.close():
            self._readings = self._state = None


class Snapshot:
    """A big read (every counter, or the whole client state) made in a worker thread, so
    the daemon's thread keeps answering logins meanwhile.

    Used as `with firewall.snapshot() as snap:` on the daemon's thread, which starts a
    journal of the changes the firewall commits; `await asyncio.to_thread(snap.read_state)`
    reads with the worker's own netlink socket; `snap.install()` (daemon thread) replays the
    changes committed meanwhile onto what was read and hands it to the next `state()` or
    `readings()` call. A read overtaken by a whole-table replacement is dropped, and that
    next call reads the kernel itself.
    """

    def __init__(self, firewall: NftFirewall) -> None:
        self.firewall = firewall
        self.mark = 0
        self.readings: dict[str, Reading] | None = None
        self.state: KernelState | None = None
        self.drift: Changes | None = None  # kernel -> the grants, from `read_state(grants)`
        self.seconds = 0.0  # what the read (and diff) took in the worker

    def __enter__(self) -> Snapshot:
        self.mark = self.firewall.journal.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.firewall._snapshot_closed()

    def read_readings(self) -> None:
        started = time.perf_counter()
        self.readings = self.firewall._read_readings(self.firewall.bulk)
        self.seconds = time.perf_counter() - started

    def read_state(self, grants: list[Grant] | None = None) -> None:
        """Read the client state; with `grants` (what the gateway holds in the kernel, as it
        was when the snapshot opened), also diff it against them here in the worker."""
        started = time.perf_counter()
        self.state = self.firewall._read_state(self.firewall.bulk)
        if grants is not None:
            self.drift = diff(desired(grants), self.state)
        self.seconds = time.perf_counter() - started

    def read_drift(self, grants: list[Grant]) -> None:
        """Compare the kernel with `grants` (what the gateway holds in the kernel, as it was
        when the snapshot opened) without keeping the kernel's state: see `drift`."""
        started = time.perf_counter()
        self.drift = compare.drift(self.firewall.bulk, grants)
        self.seconds = time.perf_counter() - started

    def drifted(self) -> bool:
        """(Daemon thread.) Whether the kernel differs from the grants beyond what this
        process committed while the read ran: what it touched is as it committed it, in the
        kernel and in the gateway alike, so only differences elsewhere are drift."""
        repair = self.repair()
        return repair is None or bool(repair)

    def repair(self) -> Changes | None:
        """(Daemon thread.) The part of the drift this process did not touch while the read
        ran: what makes the kernel equal the grants now. None: not known (no comparison, or
        the whole table was replaced meanwhile)."""
        return untouched(self.drift, self.firewall.journal.since(self.mark))

    def install(self) -> None:
        self.firewall._install(self)


def untouched(drift: Changes | None, since: list[Changes | None]) -> Changes | None:
    """The part of `drift` (what makes the kernel equal the grants, as read while `since`
    was committed) that none of `since` touched: what this process committed meanwhile is
    as it committed it, in the kernel and in the gateway alike, so only the rest needs
    repair. None: not known (no comparison, or the whole table was replaced meanwhile: a
    None in `since`). Shared with the test double so both repair alike."""
    if drift is None:
        return None
    if any(changes is None for changes in since):
        return None
    if not since:
        return drift
    done = [c for c in since if c is not None]
    touched_elements = {
        (name, key) for c in done for name, key, _obj in (*c.del_elements, *c.add_elements)
    }
    touched_objects = {key for c in done for key in c.del_objects}
    touched_objects |= {key for c in done for key, _spec in c.add_objects}
    return Changes(
        del_elements=tuple(e for e in drift.del_elements if e[:2] not in touched_elements),
        del_objects=tuple(k for k in drift.del_objects if k not in touched_objects),
        add_objects=tuple(o for o in drift.add_objects if o[0] not in touched_objects),
        add_elements=tuple(e for e in drift.add_elements if e[:2] not in touched_elements),
    )
