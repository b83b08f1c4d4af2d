"""The gateway core: the session table plus the layer that applies its operations.

Operations are applied database first, kernel second; the reconciler compares the two and
repairs the kernel, so a daemon killed at any point converges on restart without logging anyone
out (the kernel table survives the process).

Each authorized client is a `Grant` in the kernel: set and map elements plus named objects
(gateway/dataplane/ruleset.py). An operation touches only the grants of the sessions it names, as
one transaction of element and object changes, so a login costs the same at ten clients as at ten
thousand. `poll()` reads the sessions' counters and quotas (gateway/stations/accounting.py): it ends
sessions whose quota is used up or that went idle, and writes interim usage records.

A session that ends loses its elements at once (its traffic stops, its counters freeze) but
keeps its objects until `finalize()`, run by the next tick or poll, has read them and written
the final record: reading counters costs libnftables a cache fill of a millisecond or two,
which a logout should not wait for. The database knows which sessions are closing, so a
daemon killed in between writes their final records when it starts again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from gateway.config import Config
from gateway.dataplane.firewall import Firewall, NftError
from gateway.dataplane.grants import Changes, Grant, KernelState, Start, desired, diff
from gateway.stations import control
from gateway.stations.access import RuntimeAccess
from gateway.stations.accounting import Meter, UsageRecord
from gateway.stations.presence import PresenceOutbox
from gateway.stations.sessions import SessionTable
from gateway.stations.station import (
    Allow,
    Client,
    EndSession,
    Forget,
    Op,
    Presence,
    Reason,
    Revoke,
    Save,
    SessionError,
    State,
)
from gateway.stations.store import Store
from gateway.stations.venue_policy import VenuePolicy

log = logging.getLogger("plaza.gateway")

# Ended sessions finalized per tick: at most five objects each, so their counters are read
# with single gets (kernel.NftFirewall.readings reads everything beyond 4,096 objects).
FINALIZE_PER_TICK = 500


class Gateway:
    def __init__(
        self,
        config: Config,
        firewall: Firewall,
        store: Store,
        *,
        presence: PresenceOutbox,
        runtime_access: RuntimeAccess,
        venue_policy: VenuePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The collaborators that hold files and databases come in built (gateway/assemble.py
        builds the real ones), so a test can hand in its own and nothing here opens a file."""
        self.config = config
        self.firewall = firewall
        self.store = store
        self.clock = clock
        self.runtime_access = runtime_access
        self.presence = presence
        self.venue_policy = venue_policy
        # Set by the daemon when the station detector runs (gateway/stations/detect.py SeenSets).
        self.forget_seen: Callable[[list[tuple[str, str]]], None] | None = None
        # Set by the neighbour watcher (gateway/stations/neighbours.py Neighbours.confirm): a lease
        # release is a claim anyone can forge, so it only starts a unicast re-probe of the
        # address holder's MAC; the station leaves when that goes unanswered. None (no
        # watcher): a release ends the station's presence at once.
        self.confirm_departure: Callable[[str, str], None] | None = None
        self.table = SessionTable(
            default_minutes=config.session.default_minutes,
            max_minutes=config.session.max_minutes,
            trust_mac_days=config.reconnect.token_days if config.reconnect.trust_mac else None,
            defaults=config.policy.defaults(config.session.default_minutes),
            access=self.runtime_access.effective(config.policy.access()),
        )
        self.repairs = 0  # kernel elements, objects or whole tables the reconciler put right
        self.meters: dict[str, Meter] = {}  # accounting per running session
        self.closing: dict[str, Meter] = {}  # ended sessions whose final record is due
        self.granted: dict[str, Grant] = {}  # what the kernel holds, by session
        self._by_element: dict[tuple[str, str], str] = {}  # (ip, mac) -> session
        self.ended_by_reason: Counter[str] = Counter()
        self.records_written = 0  # usage records put in the outbox since start
        self.polls = 0
        self.requests = control.ControlRequests(self)  # what the control socket may ask

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Restore persisted clients, then the kernel: a table with the same structure is left
        as it is (counters running, mid-stream) and only reconciled; otherwise it is replaced
        with the sessions' counters carried over. Final records left to write by a daemon that
        was killed are written; then what expired while down ends."""
        now = self.clock()
        self.table.restore(self.store.load())
        self.meters, self.closing = self.store.load_meters(self.table.authorized(), now)
        if self.firewall.present():
            try:
                readings = self.firewall.readings()
            except NftError as exc:
                log.warning("counters unreadable at start (%s)", exc)
                readings = {}
            for session, meter in (self.meters | self.closing).items():
                meter.observe(readings.get(session), now)
        self.finalize()
        grants = self._desired_grants()
        if self.firewall.current(self.config):
            self.reconcile()
        else:
            self.firewall.apply(self.config, grants, self._starts(grants))
            self._set_granted(grants)
        self.tick()
        self.finalize()  # sessions that ran out while the daemon was down
        log.info(
            "started: %d stations, %d authorized restored",
            len(self.table.clients),
            len(self.table.authorized()),
        )

    def reconcile(self) -> int:
        """Make the kernel's client elements and objects equal the desired ones; return how
        many were repaired (a whole table counts as one)."""
        grants = self._desired_grants()
        if not self.firewall.present():
            log.warning("plaza table missing from the kernel; reloading it")
            self.firewall.apply(self.config, grants, self._starts(grants))
            self._set_granted(grants)
            self.repairs += 1
            return 1
        changes = self.firewall.drift(grants)  # the kernel's: see dataplane/compare.py
        if changes:
            self.firewall.change(changes, self._starts(grants))
            log.warning(
                "reconciler: %d elements and %d objects put right",
                changes.size(),
                len(changes.add_objects) + len(changes.del_objects),
            )
        self._set_granted(grants)
        fixed = changes.size() + len(changes.add_objects) + len(changes.del_objects)
        self.repairs += fixed
        return fixed

    def repair(self, changes: Changes) -> int:
        """Commit `changes` found by comparing the kernel with the grants elsewhere (the
        daemon's worker thread): only the sessions they name are looked at here. NftError
        if the kernel refuses them; `reconcile()` is then the way back."""
        if not changes:
            return 0
        sessions = {name.partition("_")[2] for (_kind, name), _spec in changes.add_objects}
        starts = self._starts(self.granted[s] for s in sessions if s in self.granted)
        self.firewall.change(changes, starts)
        fixed = changes.size() + len(changes.add_objects) + len(changes.del_objects)
        log.warning(
            "reconciler: %d elements and %d objects put right",
            changes.size(),
            len(changes.add_objects) + len(changes.del_objects),
        )
        self.repairs += fixed
        return fixed

    def granted_as_desired(self) -> bool:
        """Whether what the gateway believes the kernel holds (`granted`) is what its
        sessions want: the thorough reconcile's check of the gateway's own bookkeeping."""
        return {g.session: g for g in self._desired_grants()} == self.granted

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One session-table event and the `apply` of its operations, all or nothing.

        The table changes in memory first (it is pure: events in, operations out) and the
        database may then refuse the writes (a full disk, a value SQLite cannot store). Left
        as it was, memory would say a session ended that the database and the kernel still
        hold, and the ended session's final usage would never be written. So the table keeps
        a journal of what the event changed and puts it back when the writes fail; the kernel
        is only touched after the database, so it has nothing to undo, and the batch's usage
        records are carried by the next record (`_unrecord`)."""
        self.table.begin()
        try:
            yield
        except BaseException:
            self.table.rollback()
            raise
        finally:
            self.table.commit()

    def apply(self, ops: list[Op], records: Iterable[UsageRecord] = ()) -> None:
        """Database first (clients, ended sessions, usage records in one transaction), then
        the kernel (the touched sessions' grants, in one transaction). Within `atomic()`, a
        failed write rolls the table back to what the database holds. A batch that grants,
        revokes or ends a session is committed durably: who is online must survive a power
        cut, or a shopper who just paid with a login is captive again after the reboot."""
        saves = [op.client for op in ops if isinstance(op, Save)]
        ended = [op for op in ops if isinstance(op, EndSession)]
        records = list(records)
        closing = []
        for e in ended:
            meter = self.meters.get(e.session_id) or Meter(e.session_id, e.mac, e.ip, e.started_at)
            closing.append(replace(meter, closing=e.reason.value, ended_at=e.ended_at))
        try:
            durable = bool(ended) or any(isinstance(op, (Allow, Revoke)) for op in ops)
            self.store.write(saves, ended, records, closing, durable=durable)
        except Exception:
            self._unrecord(records)  # not written: the next record carries this usage again
            self.table.rollback()
            raise
        self.table.checkpoint()  # the database holds this: a later failure goes back to here
        self.records_written += len(records)
        for meter in closing:
            self.meters.pop(meter.session_id, None)
            self.closing[meter.session_id] = meter
        for e in ended:
            self.ended_by_reason[e.reason.value] += 1
            log.info("session %s of %s ended: %s", e.session_id, e.mac, e.reason)
        self._sync(self._touched(ops))
        gone = [e for op in ops if isinstance(op, Forget) for e in op.elements]
        if gone and self.forget_seen is not None:
            try:
                self.forget_seen(gone)
            except Exception as exc:  # they time out of the set anyway (DETECT_TIMEOUT)
                log.debug("could not forget seen pairs: %s", exc)
        arrivals = [
            {"kind": op.kind, "mac": op.mac, "at": op.at} for op in ops if isinstance(op, Presence)
        ]
        if arrivals:
            try:
                self.presence.add(arrivals)
            except Exception as exc:  # presence is best effort; sessions and usage are not
                log.warning("presence events not recorded: %s", exc)

    def finalize(self, limit: int | None = None) -> None:
        """Write the final records of sessions that ended, from their frozen counters, then
        drop their kernel objects: all of them, or the `limit` that ended first."""
        if not self.closing:
            return
        if limit is not None and len(self.closing) > limit:
            batch = dict(itertools.islice(self.closing.items(), limit))
        else:
            batch = self.closing
        grants = [self.granted[s] for s in batch if s in self.granted]
        readings = {}
        if grants:
            try:
                readings = self.firewall.readings(grants)
            except NftError as exc:
                log.warning("final counters unreadable (%s); using the last reading", exc)
        now = self.clock()
        records = []
        for session, meter in batch.items():
            meter.observe(readings.get(session), now)
            records.append(meter.record(meter.ended_at or now, final=True, reason=meter.closing))
        try:
            self.store.write([], [], records)
        except Exception:
            self._unrecord(records)
            raise
        self.records_written += len(records)
        done = [self.granted.pop(s) for s in batch if s in self.granted]
        if batch is self.closing:
            self.closing.clear()
        else:
            for session in batch:
                del self.closing[session]
        changes = diff(KernelState(), desired(done))
        if changes:
            try:
                self.firewall.change(changes)
            except NftError as exc:
                log.warning("dropping ended sessions' objects failed (%s); reconciling", exc)
                self.reconcile()

    def _unrecord(self, records: list[UsageRecord]) -> None:
        for rec in records:
            meter = self.meters.get(rec.session_id) or self.closing.get(rec.session_id)
            if meter is not None:
                meter.unrecord(rec)

    def tick(self) -> None:
        """Expire sessions (no kernel read), and write the final records of sessions that
        ended since the last tick, a few hundred at most (their own objects read one by one,
        a few milliseconds): left to the poll, a busy venue's ended sessions came as one
        burst of thousands of records, objects and a full counter dump every poll, whose
        freed memory the allocator could not give back while newer sessions' objects sat
        among it (resident memory crept up under churn). The venue's default policy follows
        the cloud's config (gateway/stations/venue_policy.py)."""
        defaults = self.venue_policy.check()
        if defaults is not None:
            self.table.defaults = defaults
            self.table.default_minutes = defaults.session_minutes
        with self.atomic():
            self.apply(self.table.tick(self.clock()))
        self.finalize(FINALIZE_PER_TICK)

    def poll(self) -> None:
        """Read every session's counters: end exhausted and idle sessions, write interim
        records that are due."""
        now = self.clock()
        try:
            readings = self.firewall.readings()
        except NftError as exc:  # the table is gone: the reconciler brings it back
            log.warning("counters unreadable (%s); skipping this poll", exc)
            return
        self._observe(readings, now)
        self.polls += 1
        self.finalize()
        ops: list[Op] = []
        records: list[UsageRecord] = []
        interval = self.config.accounting.interim_seconds
        with self.atomic():
            for client in self.table.authorized():
                meter = self.meters.get(client.session_id or "")
                if meter is None:
                    continue
                idle = client.policy.idle_seconds if client.policy else 0
                if meter.exhausted():
                    ops += self.table.end(client.mac, now, Reason.QUOTA)
                elif meter.idle(idle, now):
                    ops += self.table.end(client.mac, now, Reason.IDLE_TIMEOUT)
                elif meter.interim_due(interval, now):
                    records.append(meter.record(now))
            if ops or records:
                self.apply(ops, records)
        self.finalize()

    # -- kernel bookkeeping ----------------------------------------------------------------
    def _grant(self, client: Client) -> Grant | None:
        if client.state is not State.AUTHORIZED or not client.session_id:
            return None
        if not client.addresses():
            return None
        return Grant.of(
            client.session_id, client.mac, client.addresses(), client.policy or self.table.defaults
        )

    def _desired_grants(self) -> list[Grant]:
        """Every authorized client's grant, and the objects (no elements) of closing ones."""
        grants = [g for c in self.table.authorized() if (g := self._grant(c))]
        return grants + [self.granted[s] for s in self.closing if s in self.granted]

    def _set_granted(self, grants: list[Grant]) -> None:
        self.granted = {g.session: g for g in grants}
        self._by_element = {e: g.session for g in grants for e in g.elements()}
        for grant in grants:
            if grant.session not in self.closing:
                self._meter(grant)

    def _meter(self, grant: Grant) -> Meter:
        meter = self.meters.get(grant.session)
        if meter is None:
            client = self.table.clients[grant.mac]
            now = self.clock()
            meter = Meter(grant.session, grant.mac, client.ip, client.started_at or now)
            self.meters[grant.session] = meter
        meter.ip = grant.addresses[0] if grant.addresses else meter.ip
        return meter

    def _starts(self, grants: Iterable[Grant]) -> dict[str, Start]:
        """Where (re)created objects begin: the sessions' known totals and quota use."""
        starts = {}
        for grant in grants:
            meter = self.meters.get(grant.session) or self.closing.get(grant.session)
            if meter is not None:
                used = {kind: q.used for kind, q in meter.quotas.items()}
                starts[grant.session] = Start(meter.initial(), used)
        return starts

    def _observe(self, readings: dict, now: float) -> None:
        for session, meter in self.meters.items():
            meter.observe(readings.get(session), now)

    def _touched(self, ops: list[Op]) -> dict[str, str]:
        """Sessions (-> MAC) whose kernel grant an operation may have changed."""
        touched: dict[str, str] = {}
        for op in ops:
            if isinstance(op, Save) and op.client.session_id:
                touched[op.client.session_id] = op.client.mac
            elif isinstance(op, EndSession):
                touched[op.session_id] = op.mac
            elif isinstance(op, Revoke) and op.element in self._by_element:
                touched[self._by_element[op.element]] = op.element[1]
            elif isinstance(op, Allow):
                client = self.table.clients.get(op.element[1])
                if client and client.session_id:
                    touched[client.session_id] = client.mac
        return touched

    def _sync(self, touched: dict[str, str]) -> None:
        """Bring the touched sessions' kernel grants from what they were to what they are."""
        if not touched:
            return
        old = [self.granted[s] for s in touched if s in self.granted]
        new: list[Grant] = []
        for session, mac in touched.items():
            client = self.table.clients.get(mac)
            grant = self._grant(client) if client and client.session_id == session else None
            if grant:
                new.append(grant)
            elif session in self.closing and session in self.granted:
                # ended: its traffic stops now, its objects wait for the final record
                new.append(replace(self.granted[session], addresses=()))
        changes = diff(desired(new), desired(old))
        for grant in old:
            self.granted.pop(grant.session, None)
            for e in grant.elements():
                self._by_element.pop(e, None)
        for grant in new:
            self.granted[grant.session] = grant
            self._by_element.update((e, grant.session) for e in grant.elements())
            if grant.session not in self.closing:
                self._meter(grant)
        if not changes:
            return
        try:
            self.firewall.change(changes, self._starts(new))
        except NftError as exc:
            # The kernel is not what we thought (edited by hand, table reloaded): compare the
            # whole of it instead.
            log.warning("kernel change failed (%s); reconciling", exc)
            self.reconcile()

    # -- views and requests (control socket): gateway/stations/control.py --------------------
    def view(self, client: Client, now: float) -> dict[str, Any]:
        """A client as the control API shows it: session, policy, usage and what is left."""
        return control.client_view(client, self.meters.get(client.session_id or ""), now)

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one control request; every refusal is a one-line error, nothing raises."""
        return self.requests.handle(request)

    def neighbour(self, mac: str | None, ip: str, failed: bool = False) -> None:
        """A station's address seen on the LAN (a netlink neighbour entry that became
        reachable, or the first queued packet of an unknown (address, MAC) pair), or, with
        `failed`, one the router could no longer reach."""
        now = self.clock()
        try:
            with self.atomic():
                if failed:
                    self.apply(self.table.lost(ip, now, mac))
                elif mac:
                    self.apply(self.table.seen(mac, ip, now, authoritative=False))
        except SessionError as exc:
            log.debug("ignored neighbour %s %s: %s", ip, mac, exc)
