"""What the control socket may ask of the gateway, and a station as the answers show it.

The daemon's control socket (and `plaza-ctl`, the portal, dnsmasq's lease script through it)
speaks JSON requests with an `op`; each becomes one session-table event applied by the
`Gateway` (database first, then kernel). Kept apart from gateway/gateway.py, which holds the
life cycle and the kernel bookkeeping, so each reads on its own: this module only checks
requests, turns them into table events and words the answers. Every refusal is a one-line
error; nothing raises out of `handle`.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from gateway.stations import hostnames
from gateway.stations.accounting import Meter
from gateway.stations.policy import PolicyError, overrides_from
from gateway.stations.presence import login_event
from gateway.stations.station import (
    Client,
    Reason,
    SessionError,
    State,
    normalize_ip,
    normalize_mac,
)

if TYPE_CHECKING:
    from gateway.gateway import Gateway

log = logging.getLogger("plaza.gateway")

MAX_PAGE = 5000  # stations per page of the `clients` listing


def client_view(client: Client, meter: Meter | None, now: float) -> dict[str, Any]:
    """A client as the control API shows it: session, policy, usage and what is left."""
    out = client.view(now)
    usage = meter.total if meter else None
    out.update(
        {
            "bytes_up": usage.bytes_up if usage else 0,
            "packets_up": usage.packets_up if usage else 0,
            "bytes_down": usage.bytes_down if usage else 0,
            "packets_down": usage.packets_down if usage else 0,
            "idle_seconds": int(meter.idle_for(now)) if meter else None,
            "bytes_remaining": bytes_remaining(client, meter),
        }
    )
    return out


def bytes_remaining(client: Client, meter: Meter | None) -> int | None:
    """Bytes left of the tightest quota; None without a running session that has one."""
    policy = client.policy
    if client.state is not State.AUTHORIZED or policy is None or not policy.has_quota:
        return None
    if meter is not None and meter.quotas:
        return meter.bytes_remaining()
    used = meter.total if meter else None  # before the first reading of the quotas
    up, down = (used.bytes_up, used.bytes_down) if used else (0, 0)
    left = [
        size - spent
        for size, spent in (
            (policy.quota_up_bytes, up),
            (policy.quota_down_bytes, down),
            (policy.quota_total_bytes, up + down),
        )
        if size
    ]
    return max(0, min(left))


class ControlRequests:
    """The `op_*` answers to control requests, on one gateway's sessions."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one control request; every refusal is a one-line error, nothing raises."""
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request must be a JSON object with an 'op'"}
        op = request["op"]
        handler = getattr(self, f"op_{op.replace('-', '_')}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown op: {op!r}"}
        try:
            return {"ok": True, **handler(request)}
        except (SessionError, PolicyError) as exc:
            return {"ok": False, "error": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad request for {op}: {exc}"}

    @staticmethod
    def _str(request: dict, key: str) -> str:
        value = request.get(key)
        if not isinstance(value, str) or not value or len(value) > 64:
            raise SessionError(f"'{key}' must be a non-empty string")
        return value

    def op_ping(self, request: dict) -> dict:
        return {
            "clients": len(self.gateway.table.clients),
            "authorized": self.gateway.table.authorized_count,
        }

    def op_clients(self, request: dict) -> dict:
        """Known stations with an address. With `limit` (and `offset`), one page of them and
        `next`, the offset of the next page (None: that was the last): at 10,000 stations
        the whole listing is ~5 MB of JSON, built at once in the daemon's memory."""
        now = self.gateway.clock()
        offset, limit = request.get("offset", 0), request.get("limit")
        if not isinstance(offset, int) or offset < 0:
            raise SessionError("'offset' must be a whole number, 0 or more")
        if limit is None:
            return {
                "clients": [
                    self.gateway.view(c, now) for c in self.gateway.table.clients.values() if c.ip
                ]
            }
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise SessionError(f"'limit' must be between 1 and {MAX_PAGE}")
        listed = (c for c in self.gateway.table.clients.values() if c.ip)
        page = [
            self.gateway.view(c, now) for c in itertools.islice(listed, offset, offset + limit + 1)
        ]
        more = len(page) > limit
        return {"clients": page[:limit], "next": offset + limit if more else None}

    def op_client(self, request: dict) -> dict:
        return {
            "client": self.gateway.view(
                self.gateway.table.find(self._str(request, "client")), self.gateway.clock()
            )
        }

    def op_auth(self, request: dict) -> dict:
        """Authorize a client; optional policy overrides (see policy.OVERRIDES): minutes,
        idle_minutes or idle_seconds, quota_{up,down,total}_mb, rate_{up,down}_kbit."""
        who = self._str(request, "client")
        overrides = overrides_from(request, self.gateway.config.session.max_minutes)
        now = self.gateway.clock()
        with self.gateway.atomic():
            self.gateway.apply(self.gateway.table.authorize(who, now, overrides=overrides))
        client = self.gateway.table.find(who)
        log.info("authorized %s (%s) with %s", client.mac, client.ip, client.policy)
        return {"client": self.gateway.view(client, now)}

    def op_deauth(self, request: dict) -> dict:
        who = self._str(request, "client")
        reason = Reason(request.get("reason", Reason.ADMIN.value))
        if reason not in (Reason.ADMIN, Reason.LOGOUT):
            raise SessionError("'reason' must be 'admin' or 'logout'")
        now = self.gateway.clock()
        with self.gateway.atomic():
            self.gateway.apply(self.gateway.table.deauthorize(who, now, reason))
        return {"client": self.gateway.view(self.gateway.table.find(who), now)}

    def op_access(self, request: dict) -> dict:
        """Block, unblock, trust or untrust a MAC at run time (gateway/stations/access.py); takes
        effect at once: a blocked station's session ends, a trusted one is let in."""
        action, mac = self._str(request, "action"), self._str(request, "mac")
        configured = self.gateway.config.policy.access()
        self.gateway.runtime_access.change(action, mac, configured)
        self.gateway.table.access = self.gateway.runtime_access.effective(configured)
        with self.gateway.atomic():
            self.gateway.apply(self.gateway.table.tick(self.gateway.clock()))
        log.info("access: %s %s", action, mac)
        return {"access": self.gateway.runtime_access.view(configured)}

    def op_access_lists(self, request: dict) -> dict:
        return {"access": self.gateway.runtime_access.view(self.gateway.config.policy.access())}

    def op_shopper(self, request: dict) -> dict:
        """The portal's word on who a station's shopper is, after their opt-in (or that they
        withdrew it): a `login` presence event for the cloud (gateway/stations/presence.py)."""
        client = self.gateway.table.find(self._str(request, "client"))
        try:
            event = login_event(
                client.mac, self.gateway.clock(), request.get("wallet_user"), request.get("opt_in"),
                request.get("connect_url"), request.get("consent"),
            )  # fmt: skip
        except ValueError as exc:
            raise SessionError(str(exc)) from None
        self.gateway.presence.add([event])
        return {}

    def op_lease(self, request: dict) -> dict:
        """A DHCP lease event sent over the socket (the daemon reads dnsmasq's own from its
        lease file, gateway/stations/lease_watch.py; tests and benchmarks send them here)."""
        action, mac, ip = (self._str(request, key) for key in ("action", "mac", "ip"))
        hostname = request.get("hostname") or ""
        if not isinstance(hostname, str):
            raise SessionError("'hostname' must be a string")
        self.lease(action, mac, ip, hostname)
        return {}

    def lease(
        self, action: str, mac: str, ip: str, hostname: str = "", replayed: bool = False
    ) -> None:
        """A DHCP lease event: add, old (renewed, or `replayed` from the file at start) or
        del. A host name that is not printable UTF-8 is dropped (gateway/stations/hostnames.py),
        the event kept."""
        hostname = hostnames.clean(hostname)
        now = self.gateway.clock()
        if replayed and action == "old" and self._restored_first(mac, ip):
            return
        if action in ("add", "old"):
            with self.gateway.atomic():
                self.gateway.apply(self.gateway.table.seen(mac, ip, now, hostname))
        elif action == "del":
            self._released(mac, ip, now)
        else:
            raise SessionError(f"unknown lease action: {action!r}")

    def _restored_first(self, mac: str, ip: str) -> bool:
        """A lease read at start that would end a restored session (sessions.replay_conflict)
        is held back: the session's holder is probed at its address as for a release, and
        only its silence ends the session (reason `left`); the station is then learned anew
        from its packets or its next DHCP exchange. Without a prober the lease waits for
        that exchange: the database, written durably, outweighs a file that may be stale."""
        conflict = self.gateway.table.replay_conflict(mac, ip)
        if conflict is None:
            return False
        address, holder = conflict
        log.warning(
            "lease file gives %s to %s, but the restored session of %s holds %s: "
            "probing it before the lease counts", ip, mac, holder, address,
        )  # fmt: skip
        if self.gateway.confirm_departure is not None:
            self.gateway.confirm_departure(address, holder)
        return True

    def _released(self, mac: str, ip: str, now: float) -> None:
        """dnsmasq dropped a lease: a DHCPRELEASE (or the lease ran out). A release names the
        lease by MAC and client-id, both public on an open network, so any station can send
        one for another: treated like a neighbour failure, it is confirmed first. The
        neighbour watcher points the address back at its holder's MAC and has the kernel
        probe it unicast; only no answer ends the station's presence (reason `left`). A
        release for an address the station does not hold is stale and ignored."""
        client = self.gateway.table.clients.get(normalize_mac(mac))
        if client is None or client.ip is None or client.ip != normalize_ip(ip):
            return
        if self.gateway.confirm_departure is None:
            with self.gateway.atomic():
                self.gateway.apply(self.gateway.table.leave(client.mac, now, client.ip))
            return
        log.info("lease of %s at %s released: probing it before it counts", client.mac, ip)
        self.gateway.confirm_departure(client.ip, client.mac)


# The ops a request may name (metrics label requests by them; any other op is "unknown").
OPS = frozenset(name[3:] for name in dir(ControlRequests) if name.startswith("op_"))
