"""systemd's readiness protocol (sd_notify), the few lines of it the daemons need.

Why: under `Type=notify` systemd considers the gateway started only when it says so, so the
portal and dnsmasq (ordered after it) start against a loaded table and a listening control
socket, and `systemctl start` returns once the gateway really works. The protocol is one
datagram to the unix socket named by $NOTIFY_SOCKET: no libsystemd, no dependency. Without
the variable (a shell, the lab, OpenWrt's procd) it does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", "STATUS=...") to systemd; True if it was sent.

    Never raises: a supervisor that cannot be told is not a reason for the daemon to stop.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
