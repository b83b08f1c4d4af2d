"""Client of the gateway's control socket, shared by `plaza-ctl`, the portal and the lease hook.

Stdlib only on purpose: dnsmasq starts the lease hook once per DHCP event, so importing it must
cost milliseconds, not the tens of milliseconds SQLAlchemy or pyroute2 would.

Protocol: one JSON object per line, one request and one response per connection.
Responses are {"ok": true, ...} or {"ok": false, "error": "one line"}.
"""

from __future__ import annotations

import json
import socket
from typing import Any

# A response this big is refused. `clients` comes in pages of PAGE stations (~0.5 kB each),
# so nothing the daemon sends comes near it; an older daemon without pages sends the whole
# listing at once (~5 MB at 10,000 stations, ~25 MB at its limit of 50,000).
MAX_MESSAGE = 64 << 20
PAGE = 1000


class ControlError(RuntimeError):
    """The daemon refused the request or could not be reached; str() is a one-line message."""


class ControlClient:
    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        request = json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                size = 0
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_MESSAGE:
                        raise ControlError("response from the gateway is too large")
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"the gateway is not running (no control socket at {self.socket_path})"
            ) from None
        except TimeoutError:
            raise ControlError("the gateway did not answer in time") from None
        except OSError as exc:
            raise ControlError(f"cannot talk to the gateway: {exc.strerror or exc}") from None
        try:
            response = json.loads(b"".join(chunks))
        except ValueError:
            raise ControlError("the gateway sent a malformed response") from None
        if not isinstance(response, dict):
            raise ControlError("the gateway sent a malformed response")
        if not response.get("ok"):
            raise ControlError(str(response.get("error", "unknown error")))
        return response

    def clients(self) -> list[dict[str, Any]]:
        """Every known station, fetched a page at a time (a station that changes between
        pages may be listed twice: the later listing wins)."""
        found: dict[str, dict[str, Any]] = {}
        offset: int | None = 0
        while offset is not None:
            answer = self.call("clients", offset=offset, limit=PAGE)
            for client in answer["clients"]:
                found[client["mac"]] = client
            offset = answer.get("next")  # an older daemon answers with all and no "next"
        return list(found.values())

    def client(self, who: str) -> dict[str, Any]:
        """State of one client, by MAC or IP: {"mac", "ip", "state", "seconds_remaining", ...}."""
        return self.call("client", client=who)["client"]

    def auth(self, who: str, minutes: int | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"client": who}
        if minutes is not None:
            args["minutes"] = minutes
        return self.call("auth", **args)["client"]

    def deauth(self, who: str, reason: str = "admin") -> dict[str, Any]:
        """End a session; `reason` is "admin" (operator) or "logout" (the shopper)."""
        return self.call("deauth", client=who, reason=reason)["client"]
