"""OpenWrt's lease events: forward one DHCP event to the gateway's control socket.

Only OpenWrt's dnsmasq runs it, through its own dhcp-script and hotplug
(firmware_overlay/etc/hotplug.d/dhcp/90-plaza), whose lease file Plaza does not configure;
elsewhere the daemon reads the lease file of the dnsmasq Plaza configures
(gateway/stations/lease_watch.py) and no process is started per event. Run as
`python -I -S lease_hook.py ACTION MAC IP [HOSTNAME]`, once per DHCP event: a crowd joining at
once runs it a hundred times in a few seconds, on the router's CPU. So it imports next to
nothing: the shared control client (gateway/control_client.py, which speaks the protocol with
CPython's `_socket` and `_json` accelerators, not `json` and `socket`) and the host-name check
(gateway/stations/hostnames.py, stdlib only). The host name is the phone's raw bytes: one that
is not printable UTF-8 is dropped here (gateway/stations/hostnames.py), so the event itself
still reaches the gateway. A gateway that is down is not an error for dnsmasq: the daemon also
learns stations from netlink and from the lease file's replay (dnsmasq re-runs the script with
"old" for every lease when it restarts).
"""

from __future__ import annotations

import os
import sys

# the directory that holds the `gateway` package: three levels above gateway/stations/lease_hook.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gateway.control_client import ControlClient, ControlError
from gateway.stations import hostnames

SUPPLIED_HOSTNAME = b"DNSMASQ_SUPPLIED_HOSTNAME"
MAX_ANSWER = 1 << 16  # the daemon answers a lease event with a few dozen bytes


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("add", "old", "del"):
        return 0  # dnsmasq also calls with "init", "tftp", ...: nothing to report
    action, mac, ip = argv[:3]
    # The bytes as dnsmasq gave them (argv and environ decode undecodable bytes to surrogates).
    raw = os.fsencode(argv[3]) if len(argv) > 3 else os.environb.get(SUPPLIED_HOSTNAME, b"")
    hostname = hostnames.clean(raw)
    socket_path = os.environ.get("PLAZA_CONTROL_SOCKET", "/run/plaza/control.sock")
    try:
        ControlClient(socket_path, timeout=2, max_answer=MAX_ANSWER).call(
            "lease", action=action, mac=mac, ip=ip, hostname=hostname
        )
    except ControlError as exc:
        print(f"plaza lease hook: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
