"""The gateway core: the session table plus the layer that applies its operations.

Operations are applied database first, kernel second; the reconciler compares the two and
repairs the kernel, so a daemon killed at any point converges on restart without logging anyone
out (the kernel set survives the process).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.nft import Firewall
from gateway.sessions import (
    Allow,
    EndSession,
    Op,
    Reason,
    Revoke,
    Save,
    SessionError,
    SessionTable,
)
from gateway.store import Store

log = logging.getLogger("plaza.gateway")


class Gateway:
    def __init__(
        self,
        config: Config,
        firewall: Firewall,
        store: Store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.firewall = firewall
        self.store = store
        self.clock = clock
        self.table = SessionTable(
            default_minutes=config.session.default_minutes,
            max_minutes=config.session.max_minutes,
            trust_mac_days=config.reconnect.token_days if config.reconnect.trust_mac else None,
        )
        self.repairs = 0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Restore persisted clients, end what expired while down, load the whole table."""
        self.table.restore(self.store.load())
        self.apply(self.table.tick(self.clock()))
        self.firewall.apply(self.config, self.table.elements())
        log.info(
            "started: %d stations, %d authorized restored",
            len(self.table.clients),
            len(self.table.authorized()),
        )

    def reconcile(self) -> int:
        """Make the kernel set equal the desired set; return how many elements were repaired."""
        if not self.firewall.present():
            log.warning("plaza table missing from the kernel; reloading it")
            self.firewall.apply(self.config, self.table.elements())
            self.repairs += 1
            return 1
        want = set(self.table.elements())
        have = self.firewall.allowed()
        missing, extra = sorted(want - have), sorted(have - want)
        if missing:
            self.firewall.allow(missing)
        if extra:
            self.firewall.revoke(extra)
        if missing or extra:
            log.warning("reconciler: added %d, removed %d elements", len(missing), len(extra))
        self.repairs += len(missing) + len(extra)
        return len(missing) + len(extra)

    def apply(self, ops: list[Op]) -> None:
        saves = [op.client for op in ops if isinstance(op, Save)]
        ended = [op for op in ops if isinstance(op, EndSession)]
        self.store.write(saves, ended)
        revoke = [op.element for op in ops if isinstance(op, Revoke)]
        allow = [op.element for op in ops if isinstance(op, Allow)]
        if revoke:
            self.firewall.revoke(revoke)
        if allow:
            self.firewall.allow(allow)
        for e in ended:
            log.info("session %s of %s ended: %s", e.session_id, e.mac, e.reason)

    def tick(self) -> None:
        self.apply(self.table.tick(self.clock()))

    # -- requests (control socket) ---------------------------------------------------------
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
        except SessionError as exc:
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
        return {"clients": len(self.table.clients), "authorized": len(self.table.authorized())}

    def op_clients(self, request: dict) -> dict:
        now = self.clock()
        return {"clients": [c.view(now) for c in self.table.clients.values() if c.ip]}

    def op_client(self, request: dict) -> dict:
        return {"client": self.table.find(self._str(request, "client")).view(self.clock())}

    def op_auth(self, request: dict) -> dict:
        who = self._str(request, "client")
        minutes = request.get("minutes")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)):
            raise SessionError("'minutes' must be an integer")
        now = self.clock()
        self.apply(self.table.authorize(who, now, minutes))
        client = self.table.find(who)
        log.info("authorized %s (%s) for %s min", client.mac, client.ip, minutes or "default")
        return {"client": client.view(now)}

    def op_deauth(self, request: dict) -> dict:
        who = self._str(request, "client")
        reason = Reason(request.get("reason", Reason.ADMIN.value))
        if reason not in (Reason.ADMIN, Reason.LOGOUT):
            raise SessionError("'reason' must be 'admin' or 'logout'")
        now = self.clock()
        self.apply(self.table.deauthorize(who, now, reason))
        return {"client": self.table.find(who).view(now)}

    def op_lease(self, request: dict) -> dict:
        """A DHCP lease event from dnsmasq's script: add, old (renew/restart) or del."""
        action = self._str(request, "action")
        mac = self._str(request, "mac")
        ip = self._str(request, "ip")
        hostname = request.get("hostname") or ""
        if not isinstance(hostname, str):
            raise SessionError("'hostname' must be a string")
        now = self.clock()
        if action in ("add", "old"):
            self.apply(self.table.seen(mac, ip, now, hostname))
        elif action == "del":
            self.apply(self.table.leave(mac, now, ip))
        else:
            raise SessionError(f"unknown lease action: {action!r}")
        return {}

    def neighbour(self, mac: str, ip: str) -> None:
        """A netlink neighbour entry on the LAN became reachable."""
        try:
            self.apply(self.table.seen(mac, ip, self.clock()))
        except SessionError as exc:
            log.debug("ignored neighbour %s %s: %s", ip, mac, exc)
