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

MAX_MESSAGE = 1 << 20  # 1 MiB: a `clients` listing at 10,000 clients fits with room to spare


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
        return self.call("clients")["clients"]

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
