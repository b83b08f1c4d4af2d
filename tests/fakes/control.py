"""The gateway's control API as the portal sees it, over a dict: the portal's tests drive
login, status and logout without a daemon. Shared by the portal, uplink and browser tests."""

from __future__ import annotations

from typing import Any

from gateway.control_client import ControlError


class FakeControl:
    """The gateway's control API over a dict; `fail` makes every call raise it."""

    def __init__(self) -> None:
        self.clients: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.reasons: list[str] = []
        self.fail: ControlError | None = None
        self.args: list[tuple[str, dict[str, Any]]] = []
        self.sessions = 0

    def _get(self, who: str) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        if who not in self.clients:
            raise ControlError(f"not a client: {who}")
        return self.clients[who]

    def client(self, who: str) -> dict[str, Any]:
        self.calls.append(("client", who))
        return dict(self._get(who))

    def auth(self, who: str, minutes: int | None = None) -> dict[str, Any]:
        self.calls.append(("auth", who))
        client = self._get(who)
        if (
            client.get("state") != "authorized"
        ):  # a running session is extended, as the gateway does
            self.sessions += 1
            client["session_id"] = f"s{self.sessions}"
        client.update(state="authorized", seconds_remaining=(minutes or 60) * 60)
        return dict(client)

    def deauth(self, who: str, reason: str = "admin") -> dict[str, Any]:
        self.calls.append(("deauth", who))
        self.reasons.append(reason)
        client = self._get(who)
        if client["state"] != "authorized":
            raise ControlError("client is captive; cannot deauthorize")
        client.update(state="captive", seconds_remaining=None, session_id=None)
        return dict(client)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Ops without a helper method (e.g. "shopper"); recorded with their arguments."""
        if self.fail:
            raise self.fail
        self.calls.append((op, args.get("client", "")))
        self.args.append((op, args))
        return {"ok": True}

    def ops(self, op: str) -> list[str]:
        return [who for name, who in self.calls if name == op]
