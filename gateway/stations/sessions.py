"""Client sessions as a pure state machine: events and `now` in, operations out.

Nothing here touches the kernel, the database or the clock (faucet's style): the daemon feeds
events, then applies the returned operations (database first, kernel second), so every rule of
who may pass is testable with an injected clock and no root.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gateway.stations.policy import UNLIMITED, Access, Policy, PolicyError, effective, intern
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
    normalize_ip,
    normalize_mac,
)
from plaza.validators import MAC_RE

# IPv6 addresses held per station: a phone has a stable and one or more temporary (privacy)
# addresses, and makes new temporary ones over a long stay. Beyond this the oldest goes, so a
# station inventing addresses cannot grow the kernel's sets.
MAX_IPV6 = 8
# Stations remembered at once. A MAC flood (thousands of fake stations) evicts the longest
# unseen captive stations instead of growing without bound; authorized ones are never evicted.
MAX_STATIONS = 50_000


class Event(StrEnum):
    AUTHORIZE = "authorize"
    DEAUTHORIZE = "deauthorize"
    EXPIRE = "expire"
    LEAVE = "leave"
    MOVE = "move"  # the client's address changed
    KICK = "kick"  # the venue's access rules no longer let it be online


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.CAPTIVE, Event.AUTHORIZE): State.AUTHORIZED,
    (State.AUTHORIZED, Event.AUTHORIZE): State.AUTHORIZED,  # extends the running session
    (State.AUTHORIZED, Event.DEAUTHORIZE): State.CAPTIVE,
    (State.AUTHORIZED, Event.EXPIRE): State.CAPTIVE,  # session time, idle time or quota
    (State.AUTHORIZED, Event.KICK): State.CAPTIVE,
    (State.AUTHORIZED, Event.LEAVE): State.CAPTIVE,
    (State.CAPTIVE, Event.LEAVE): State.CAPTIVE,
    # A station that turns up at another address loses its session: a MAC is no identity, and
    # carrying the session would hand it to a MAC clone that took another address.
    (State.AUTHORIZED, Event.MOVE): State.CAPTIVE,
    (State.CAPTIVE, Event.MOVE): State.CAPTIVE,
}


def transition(state: State, event: Event) -> State:
    """The guard: a (state, event) pair missing from TRANSITIONS is refused."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise SessionError(f"client is {state}; cannot {event}") from None


@dataclass
class SessionTable:
    """All known stations by MAC, with an index by address."""

    default_minutes: int = 60
    max_minutes: int = 1440
    # MAC trust (off unless configured): a station whose session simply ran out within this
    # many days is let back in when it reappears. Not an identity (MACs are random and
    # spoofable); the wallet token is the way to recognise a shopper.
    trust_mac_days: int | None = None
    defaults: Policy = field(default_factory=Policy)  # the venue's [policy], [session] time
    access: Access = field(default_factory=Access)
    clients: dict[str, Client] = field(default_factory=dict)
    by_ip: dict[str, str] = field(default_factory=dict)
    evicted: int = 0  # captive stations forgotten because too many were known (MAC flood)
    # Authorized clients, kept as sessions open and end (`ping` asks often; counting 10,000
    # clients each time is not free). Only `authorize` and `_end` change a client's state.
    authorized_count: int = 0
    # Clients as they were before the running event changed them (None: added by it), while
    # the gateway applies the event (`begin` ... `commit`/`rollback`); None outside one.
    _journal: dict[str, Client | None] | None = field(default=None, repr=False)
    _counts: tuple[int, int] = field(default=(0, 0), repr=False)

    # -- transactions ----------------------------------------------------------------------
    def begin(self) -> None:
        """Start a journal: every client an event changes is copied before its first change,
        so `rollback()` can put the table back if the database refuses the event's writes.
        A copy costs what the event touches (one or two clients), never the whole table."""
        self._journal = {}
        self._counts = (self.authorized_count, self.evicted)

    def checkpoint(self) -> None:
        """What the journal covers has been written: changes from here on are a new batch."""
        if self._journal is not None:
            self.begin()

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        """Undo the changes since `begin` (or the last `checkpoint`): clients, their address
        index, the counts. Without a journal, nothing."""
        journal, self._journal = self._journal, None
        if journal is None:
            return
        for mac in journal:
            current = self.clients.get(mac)
            for address in current.addresses() if current else ():
                if self.by_ip.get(address) == mac:
                    del self.by_ip[address]
        for mac, before in journal.items():
            if before is None:
                self.clients.pop(mac, None)
            else:
                self.clients[mac] = before
        for mac, before in journal.items():
            for address in before.addresses() if before else ():
                self.by_ip[address] = mac
        self.authorized_count, self.evicted = self._counts

    def _keep(self, mac: str) -> None:
        """Journal `mac`'s client as it is now, before the event's first change to it."""
        if self._journal is not None and mac not in self._journal:
            client = self.clients.get(mac)
            self._journal[mac] = replace(client) if client is not None else None

    # -- queries ---------------------------------------------------------------------------
    def find(self, who: str) -> Client:
        """Resolve a MAC or IP given by an operator or the portal to a known client."""
        if ":" in who and MAC_RE.match(who.strip().lower().replace("-", ":")):
            mac = normalize_mac(who)
            client = self.clients.get(mac)
        else:
            ip = normalize_ip(who)
            mac_for_ip = self.by_ip.get(ip)
            client = self.clients.get(mac_for_ip) if mac_for_ip else None
        if client is None:
            raise SessionError(f"not a client: {who}")
        return client

    def authorized(self) -> list[Client]:
        return [c for c in self.clients.values() if c.state is State.AUTHORIZED]

    def elements(self) -> list[tuple[str, str]]:
        return [e for c in self.authorized() for e in c.elements()]

    # -- events ----------------------------------------------------------------------------
    def restore(self, clients: list[Client]) -> None:
        """Load persisted clients (daemon start); no operations, the reconciler follows."""
        for client in clients:
            self.clients[client.mac] = client
            for address in client.addresses():
                self.by_ip[address] = client.mac
        self.authorized_count = len(self.authorized())

    def seen(
        self,
        mac: str,
        ip: str | None,
        now: float,
        hostname: str = "",
        authoritative: bool = True,
    ) -> list[Op]:
        """A station was observed at `ip`: by a DHCP lease (`authoritative`) or a neighbour
        entry. A neighbour entry is only an ARP/ND claim anyone can forge: it may introduce a
        station, but never takes an address from another station or moves one that has one."""
        mac = normalize_mac(mac)
        ip = normalize_ip(ip) if ip else None
        if ip and ":" in ip:
            return self._seen6(mac, ip, now, hostname)
        ops: list[Op] = []
        client = self.clients.get(mac)
        if not authoritative and ip:
            holder = self.by_ip.get(ip)
            if (holder and holder != mac) or (client and client.ip and client.ip != ip):
                return []
        self._keep(mac)
        had = bool(client and client.addresses())
        dirty = client is None or bool(hostname and hostname[:63] != client.hostname)
        dirty = dirty or bool(ip and ip != client.ip)
        if client is None:
            client = self._new(mac, now)
        if ip and ip != client.ip:
            # The address now belongs to this station: whoever held it loses its binding.
            holder = self.by_ip.get(ip)
            if holder and holder != mac:
                self._keep(holder)
                ops += self._end(self.clients[holder], Event.LEAVE, Reason.ADDRESS_TAKEN, now)
                other = self.clients[holder]
                other.ip = None
                ops.append(Save(replace(other)))
            if client.state is State.AUTHORIZED:
                ops += self._end(client, Event.MOVE, Reason.ADDRESS_CHANGED, now)
            if client.ip and self.by_ip.get(client.ip) == mac:
                del self.by_ip[client.ip]
            client.ip = ip
            self.by_ip[ip] = mac
        if hostname:
            client.hostname = hostname[:63]
        client.last_seen = now
        if not had and client.addresses():
            ops.append(Presence("join", mac, now))
        if (
            client.state is State.CAPTIVE
            and client.addresses()
            and (mac in self.access.trusted or self._readmit(client, now))
        ):
            try:
                return ops + self.authorize(mac, now)
            except SessionError:
                pass  # blocked, or the venue is full: the station stays captive
        if dirty or ops:
            ops.append(Save(replace(client)))
        return ops

    def replay_conflict(self, mac: str, ip: str) -> tuple[str, str] | None:
        """Whether a lease read from the file at start, `mac` at IPv4 `ip`, would end a
        session the database restored: the station's own, at another address, or another
        station's, at this one. Then (address, MAC) of that session, to be probed before the
        lease counts; else None. dnsmasq does not fsync its lease file, so after a power cut
        the file can be older than the database, which commits every grant durably: a lab
        phone's session came back and was then ended by its first boot's lease."""
        mac, ip = normalize_mac(mac), normalize_ip(ip)
        client = self.clients.get(mac)
        if client and client.state is State.AUTHORIZED and client.ip and client.ip != ip:
            return client.ip, mac
        holder = self.by_ip.get(ip)
        if holder and holder != mac and self.clients[holder].state is State.AUTHORIZED:
            return ip, holder
        return None

    def _new(self, mac: str, now: float) -> Client:
        if len(self.clients) >= MAX_STATIONS:
            self._evict()
        client = Client(mac=mac, first_seen=now)
        self.clients[mac] = client
        return client

    def _evict(self) -> None:
        """Forget the longest unseen tenth of the captive stations (a MAC flood)."""
        captive = sorted(
            (c for c in self.clients.values() if c.state is State.CAPTIVE),
            key=lambda c: c.last_seen,
        )
        for client in captive[: max(1, MAX_STATIONS // 10)]:
            self._keep(client.mac)
            for address in client.addresses():
                if self.by_ip.get(address) == client.mac:
                    del self.by_ip[address]
            del self.clients[client.mac]
        self.evicted += len(captive[: max(1, MAX_STATIONS // 10)])

    def _seen6(self, mac: str, ip: str, now: float, hostname: str) -> list[Op]:
        """An IPv6 address of a station, from a neighbour entry or a queued packet (SLAAC has
        no lease to be authoritative). It joins the station's addresses unless another
        station holds it; an authorized station's new address is let through with it. Link-
        local addresses never leave the LAN and are not tracked."""
        if ip.startswith("fe80:") or ip == "::":
            return []
        holder = self.by_ip.get(ip)
        if holder and holder != mac:
            return []
        self._keep(mac)
        client = self.clients.get(mac) or self._new(mac, now)
        had = bool(client.addresses())
        client.last_seen = now
        if hostname:
            client.hostname = hostname[:63]
        if ip in client.ip6:
            return []
        ops: list[Op] = []
        addresses = list(client.ip6)
        while len(addresses) >= MAX_IPV6:
            dropped = addresses.pop(0)
            self.by_ip.pop(dropped, None)
            if client.state is State.AUTHORIZED:
                ops.append(Revoke((dropped, mac)))
        client.ip6 = (*addresses, ip)
        self.by_ip[ip] = mac
        if not had:
            ops.append(Presence("join", mac, now))
        if client.state is State.AUTHORIZED:
            ops.append(Allow((ip, mac)))
        elif mac in self.access.trusted or self._readmit(client, now):
            try:
                return ops + self.authorize(mac, now)
            except SessionError:
                pass
        ops.append(Save(replace(client)))
        return ops

    def lost(self, ip: str, now: float, mac: str | None = None) -> list[Op]:
        """The router could not reach `ip` any more (neighbour failure; the kernel's failed
        entry may not say which MAC). An IPv6 address is dropped from its station; the IPv4
        address is the station itself, which has left."""
        ip = normalize_ip(ip)
        holder = self.by_ip.get(ip)
        if holder is None or (mac is not None and normalize_mac(mac) != holder):
            return []
        self._keep(holder)
        client = self.clients[holder]
        if ip in client.ip6:
            client.ip6 = tuple(a for a in client.ip6 if a != ip)
            self.by_ip.pop(ip, None)
            ops: list[Op] = [Save(replace(client)), Forget(((ip, client.mac),))]
            if client.state is State.AUTHORIZED:
                ops.insert(0, Revoke((ip, client.mac)))
            return ops
        if ip == client.ip:
            return self.leave(client.mac, now, ip)
        return []

    def _readmit(self, client: Client, now: float) -> bool:
        return (
            self.trust_mac_days is not None
            and client.state is State.CAPTIVE
            and bool(client.addresses())
            and client.last_login_at is not None
            and now - client.last_login_at <= self.trust_mac_days * 86400
            and client.last_end_reason
            not in (Reason.LOGOUT, Reason.ADMIN, Reason.ADDRESS_TAKEN, Reason.ADDRESS_CHANGED)
        )

    def online(self) -> int:
        """Authorized clients that count towards the venue's limit (trusted ones do not)."""
        return sum(
            1 for c in self.clients.values() if c.state is State.AUTHORIZED and not c.trusted
        )

    def authorize(
        self,
        who: str,
        now: float,
        minutes: int | None = None,
        overrides: Mapping[str, int] | None = None,
    ) -> list[Op]:
        """Open a session, or extend the running one.

        The policy is the venue's defaults with `overrides` (Policy fields, checked by
        policy.overrides_from); extending a session keeps its policy and applies overrides on
        top. A trusted MAC gets no limits whatever is asked.
        """
        client = self.find(who)
        if not client.addresses():
            raise SessionError(f"client {client.mac} has no known address yet")
        self._keep(client.mac)
        was = client.state
        count = self.online() if self.access.max_clients and was is State.CAPTIVE else 0
        refused = self.access.refuse(client.mac, count, was is State.AUTHORIZED)
        if refused:
            raise SessionError(refused)
        changes = dict(overrides or {})
        if minutes is not None:
            changes["session_minutes"] = minutes
        minutes = changes.get("session_minutes", self.default_minutes)
        if not 1 <= minutes <= self.max_minutes:
            raise SessionError(f"minutes must be between 1 and {self.max_minutes}")
        trusted = client.mac in self.access.trusted
        if trusted:
            policy = UNLIMITED
        else:
            base = client.policy if was is State.AUTHORIZED and client.policy else self.defaults
            try:
                policy = intern(effective(base, {**changes, "session_minutes": minutes}))
            except PolicyError as exc:
                raise SessionError(str(exc)) from None
        client.state = transition(client.state, Event.AUTHORIZE)
        if was is State.CAPTIVE:
            self.authorized_count += 1
            client.session_id = secrets.token_hex(8)
            client.started_at = now
            client.last_login_at = now
        client.policy = policy
        client.trusted = trusted
        client.expires_at = None if trusted else now + minutes * 60
        ops: list[Op] = [Save(replace(client))]
        if was is State.CAPTIVE:
            ops += [Allow(element) for element in client.elements()]
        return ops

    def deauthorize(self, who: str, now: float, reason: Reason = Reason.ADMIN) -> list[Op]:
        client = self.find(who)
        if client.state is State.AUTHORIZED and client.mac in self.access.trusted:
            raise SessionError(
                f"{client.mac} is a trusted MAC and always online; "
                "remove it from [policy] trusted_macs first"
            )
        ops = self._end(client, Event.DEAUTHORIZE, reason, now)
        ops.append(Save(replace(client)))
        return ops

    def leave(self, mac: str, now: float, ip: str | None = None) -> list[Op]:
        """The station left (lease released or expired): its session ends, its address goes.

        With `ip`, only if the station still holds that address: a release that arrives after
        the station was already seen at a new address is stale and ignored.
        """
        client = self.clients.get(normalize_mac(mac))
        if client is None or (ip is not None and normalize_ip(ip) != client.ip):
            return []
        self._keep(client.mac)
        ops = self._end(client, Event.LEAVE, Reason.LEFT, now)
        if client.addresses():
            ops.append(Presence("leave", client.mac, now))
            ops.append(Forget(tuple(client.elements())))
        for address in client.addresses():
            if self.by_ip.get(address) == client.mac:
                del self.by_ip[address]
        client.ip = None
        client.ip6 = ()
        ops.append(Save(replace(client)))
        return ops

    def tick(self, now: float) -> list[Op]:
        """Expire sessions whose time is up, and hold the venue's access lists: blocked MACs
        are kicked, trusted ones let in, and sessions opened for a MAC that is no longer
        trusted end (the lists change with the config, at start)."""
        ops: list[Op] = []
        for client in list(self.clients.values()):
            if client.state is State.AUTHORIZED:
                if client.mac in self.access.blocked:
                    ops += self.end(client.mac, now, Reason.BLOCKED)
                elif client.trusted and client.mac not in self.access.trusted:
                    ops += self.end(client.mac, now, Reason.ADMIN)
                elif client.expires_at is not None and client.expires_at <= now:
                    ops += self.end(client.mac, now, Reason.SESSION_TIMEOUT)
            elif client.addresses() and client.mac in self.access.trusted:
                ops += self.authorize(client.mac, now)
        return ops

    def end(self, mac: str, now: float, reason: Reason) -> list[Op]:
        """End a session for a reason found outside the table: its time, idle time or quota
        ran out (the gateway reads the kernel's counters), or the venue blocked the MAC."""
        client = self.clients[mac]
        event = Event.KICK if reason in (Reason.BLOCKED, Reason.ADMIN) else Event.EXPIRE
        ops = self._end(client, event, reason, now)
        if ops:
            ops.append(Save(replace(client)))
        return ops

    def _end(self, client: Client, event: Event, reason: Reason, now: float) -> list[Op]:
        if client.state is not State.AUTHORIZED:
            if event is Event.DEAUTHORIZE:
                raise SessionError(f"client {client.mac} is not authorized")
            return []
        self._keep(client.mac)
        client.state = transition(client.state, event)
        self.authorized_count -= 1
        ops: list[Op] = [Revoke(element) for element in client.elements()]
        ops.append(
            EndSession(
                session_id=client.session_id or "",
                mac=client.mac,
                ip=client.ip,
                started_at=client.started_at or now,
                ended_at=now,
                reason=reason,
            )
        )
        client.session_id = client.started_at = client.expires_at = None
        client.policy = None
        client.trusted = False
        client.last_end_reason = reason.value
        return ops
