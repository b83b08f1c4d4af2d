"""dnsmasq's dhcp-script: forward one lease event to the gateway's control socket.

Run as `python -I -S lease_hook.py ACTION MAC IP [HOSTNAME]`, once per DHCP event: a crowd joining
at once runs it a hundred times in a few seconds, on the router's CPU. So it imports next to
nothing: not even `gateway.control_client`, whose `json` and `socket` (through `re`, `enum`,
`typing`) were two thirds of its ~20 ms of CPU per event; it speaks the control protocol
(one JSON line each way) with CPython's `_socket` and `_json` accelerators, and the host-name
check (gateway/stations/hostnames.py, stdlib only). The host name is
the phone's raw bytes: one that is not printable UTF-8 is dropped here
(gateway/stations/hostnames.py), so the event itself still reaches the gateway. A gateway that is
down is not an error for dnsmasq: the daemon also learns stations from netlink and from the lease
file's replay (dnsmasq re-runs the script with "old" for every lease when it restarts).
"""

from __future__ import annotations

import os
import sys

# the directory that holds the `gateway` package: three levels above gateway/stations/lease_hook.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gateway.stations import hostnames

try:  # CPython's C halves of `socket` and `json`, without their Python halves' imports
    from _json import encode_basestring_ascii as quote
    from _json import make_scanner
    from _socket import AF_UNIX, SHUT_WR, SOCK_STREAM
    from _socket import socket as new_socket
except ImportError:  # a Python without them: the plain modules, a few milliseconds slower
    from json import JSONDecoder
    from json.encoder import encode_basestring_ascii as quote  # type: ignore[attr-defined]
    from socket import AF_UNIX, SHUT_WR, SOCK_STREAM
    from socket import socket as new_socket

    def make_scanner(context: object) -> object:  # type: ignore[misc]
        return JSONDecoder().scan_once


SUPPLIED_HOSTNAME = b"DNSMASQ_SUPPLIED_HOSTNAME"
MAX_ANSWER = 1 << 16  # the daemon answers a lease event with a few dozen bytes


class ControlError(RuntimeError):
    """The daemon refused the event or could not be reached; str() is a one-line message."""


class _Decoding:
    """What `_json.make_scanner` reads from a `json.JSONDecoder`: plain JSON, no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads reads them


def encode(op: str, args: dict[str, str]) -> bytes:
    """The request line `json.dumps({"op": op, **args}, separators=(",", ":"))` would make
    (ASCII, every non-ASCII or control character escaped), for string values."""
    fields = ",".join(f"{quote(k)}:{quote(v)}" for k, v in {"op": op, **args}.items())
    return ("{" + fields + "}\n").encode("ascii")


def decode(data: bytes) -> object:
    """One JSON value, as `json.loads` would read it; ValueError if it is not that."""
    text = data.decode("utf-8").strip()
    try:
        value, end = make_scanner(_Decoding())(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


class ControlClient:
    """`gateway.control_client.ControlClient.call` for this one process: same request line,
    same answers, same one-line errors (its test is the daemon's: tests/unit/test_lease_hook.py)."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: str) -> dict:
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
                if size > MAX_ANSWER:
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


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("add", "old", "del"):
        return 0  # dnsmasq also calls with "init", "tftp", ...: nothing to report
    action, mac, ip = argv[:3]
    # The bytes as dnsmasq gave them (argv and environ decode undecodable bytes to surrogates).
    raw = os.fsencode(argv[3]) if len(argv) > 3 else os.environb.get(SUPPLIED_HOSTNAME, b"")
    hostname = hostnames.clean(raw)
    socket_path = os.environ.get("PLAZA_CONTROL_SOCKET", "/run/plaza/control.sock")
    try:
        ControlClient(socket_path, timeout=2).call(
            "lease", action=action, mac=mac, ip=ip, hostname=hostname
        )
    except ControlError as exc:
        print(f"plaza lease hook: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
