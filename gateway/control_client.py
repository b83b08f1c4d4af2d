"""Client of the gateway's control socket, shared by `plaza-ctl` and the portal.

Cheap to import: it was written for OpenWrt's lease hook, a process dnsmasq started once per
DHCP event (a crowd joining at once ran it a hundred times in a few seconds on the router's
CPU). The hook is gone (the daemon reads dnsmasq's lease file on every system:
gateway/stations/lease_watch.py), the client stays as it was: it imports no `json`, `socket`
or `typing` (through `re`, `enum`, `functools`), speaks the protocol with the C halves of
those modules, `_json` and `_socket`, which write and read the same bytes (a test holds them
to it), and falls back to the plain modules on a Python built without them.

Protocol: one JSON object per line, one request and one response per connection.
Responses are {"ok": true, ...} or {"ok": false, "error": "one line"}.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

try:  # CPython's C halves of `socket` and `json`, without their Python halves' imports
    from _json import encode_basestring_ascii as quote
    from _json import make_encoder, make_scanner
    from _socket import AF_UNIX, SHUT_WR, SOCK_STREAM
    from _socket import socket as new_socket
except ImportError:  # a Python without them: the plain modules, a few milliseconds slower
    from json import JSONDecoder
    from json.encoder import encode_basestring_ascii as quote  # type: ignore[attr-defined]
    from socket import AF_UNIX, SHUT_WR, SOCK_STREAM
    from socket import socket as new_socket

    make_encoder = None

    def make_scanner(context: object) -> object:  # type: ignore[misc]
        return JSONDecoder().scan_once


# A response this big is refused. `clients` comes in pages of PAGE stations (~0.5 kB each),
# so nothing the daemon sends comes near it; an older daemon without pages sends the whole
# listing at once (~5 MB at 10,000 stations, ~25 MB at its limit of 50,000).
MAX_MESSAGE = 64 << 20
PAGE = 1000


class ControlError(RuntimeError):
    """The daemon refused the request or could not be reached; str() is a one-line message."""


class _Decoding:
    """What `_json.make_scanner` reads from a `json.JSONDecoder`: plain JSON, no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads reads them


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def encode(op: str, args: dict[str, Any]) -> bytes:
    """The request line `json.dumps({"op": op, **args}, separators=(",", ":"))` makes: ASCII,
    every non-ASCII or control character escaped."""
    request = {"op": op, **args}
    if make_encoder is None:
        import json

        return json.dumps(request, separators=(",", ":")).encode() + b"\n"
    # json.dumps's own C encoder, with json.dumps's defaults (check_circular: markers {},
    # ensure_ascii, allow_nan) and the compact separators.
    write = make_encoder({}, _unserializable, quote, None, ":", ",", False, False, True)
    return ("".join(write(request, 0)) + "\n").encode("ascii")


def decode(data: bytes) -> object:
    """One JSON value, as `json.loads` would read it; ValueError if it is not that."""
    text = data.decode("utf-8").strip(" \t\n\r")
    try:
        value, end = make_scanner(_Decoding())(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


class ControlClient:
    def __init__(
        self, socket_path: str, timeout: float = 5.0, max_answer: int = MAX_MESSAGE
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_answer = max_answer  # a longer answer is refused

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        request = encode(op, args)
        chunks = []
        sock = new_socket(AF_UNIX, SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            sock.sendall(request)
            sock.shutdown(SHUT_WR)
            size = 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_answer:
                    raise ControlError("response from the gateway is too large")
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"the gateway is not running (no control socket at {self.socket_path})"
            ) from None
        except TimeoutError:
            raise ControlError("the gateway did not answer in time") from None
        except OSError as exc:
            raise ControlError(f"cannot talk to the gateway: {exc.strerror or exc}") from None
        finally:
            sock.close()
        try:
            response = decode(b"".join(chunks))
        except ValueError:  # UnicodeDecodeError included
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
