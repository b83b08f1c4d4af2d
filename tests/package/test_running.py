"""The installed package runs: in a Debian 12 root with its own network namespace (a br-lan
bridge at the default config's 198.19.0.1/24), the gateway from /usr/bin starts on Debian's
python3 with the bundled libraries (libnftables through ctypes, netfilterqueue against
libnetfilter-queue1), tells systemd it is ready (READY=1 on $NOTIFY_SOCKET, as Type=notify
expects), the portal serves as user plaza with CAP_NET_BIND_SERVICE alone (what its unit
grants), and a stop leaves the kernel table with its clients in place for the next start.
Idle RSS of both is printed for the README.
"""

from __future__ import annotations

import re

import pytest

from tests.package.chroot import Chroot

pytestmark = [pytest.mark.package, pytest.mark.netns]

LAN = (
    "ip link set lo up && ip link add br-lan type bridge && "
    "ip addr add 198.19.0.1/24 dev br-lan && ip link set br-lan up"
)
MAC = "02:00:00:00:00:01"
SCRIPT = r"""#!/bin/sh
set -u
wait_for() {  # wait_for FILE TEXT
	for i in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "TIMEOUT waiting for $2 in $1"; cat "$1"; return 1
}
mkdir -p /run/plaza  # RuntimeDirectory=plaza
python3 -c '
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/notify")
s.settimeout(60)
print("NOTIFY", s.recv(100).decode(), flush=True)' > /tmp/notify.out 2>&1 &
while [ ! -S /run/notify ]; do sleep 0.05; done
NOTIFY_SOCKET=/run/notify plaza-gateway --config /etc/plaza/gateway.toml run > /tmp/gw.log 2>&1 &
gw=$!
wait_for /tmp/gw.log "plaza-gateway: ready" || exit 1
wait_for /tmp/notify.out NOTIFY || exit 1
cat /tmp/notify.out
echo "GATEWAY $(grep VmRSS /proc/$gw/status)"
# A phone takes a lease (a line in dnsmasq's lease file, which the gateway watches) and is
# authorized.
echo "0 MAC_HERE 198.19.0.100 phone *" > /var/lib/plaza/dnsmasq.leases
for i in $(seq 100); do plaza-ctl clients | grep -q "198.19.0.100.*phone" && break; sleep 0.1; done
plaza-ctl clients | grep -q "198.19.0.100.*phone" && echo "LEASE-LEARNED"
plaza-ctl auth 198.19.0.100 --minutes 30
nft list table inet plaza | grep -c 198.19.0.100 | sed 's/^/ELEMENTS-BEFORE /'
setpriv --reuid=plaza --regid=plaza --init-groups --bounding-set=-all,+net_bind_service \
	--inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
	plaza-portal run --config /etc/plaza/gateway.toml > /tmp/portal.log 2>&1 &
portal=$!
wait_for /tmp/portal.log "serving" || exit 1
python3 -c '
import urllib.request
answer = urllib.request.urlopen("http://198.19.0.1/", timeout=10)
print("PORTAL", answer.status, len(answer.read()))'
sleep 1
echo "PORTAL $(grep VmRSS /proc/$portal/status)"
stat -c "PORTAL-KEY %U %a" /var/lib/plaza/portal.key
kill -TERM $gw; wait $gw; echo "GATEWAY-EXIT $?"
nft list table inet plaza | grep -c 198.19.0.100 | sed 's/^/ELEMENTS-AFTER-STOP /'
plaza-gateway --config /etc/plaza/gateway.toml run > /tmp/gw2.log 2>&1 &
gw=$!
wait_for /tmp/gw2.log "plaza-gateway: ready" || exit 1
plaza-ctl clients --json | grep -c '"state": "authorized"' | sed 's/^/AUTHORIZED-AFTER-RESTART /'
plaza-ctl clients
kill -TERM $gw $portal; wait
""".replace("MAC_HERE", MAC)


def test_gateway_and_portal_run_from_the_package(debian: Chroot) -> None:
    debian.run("dpkg", "-i", "/tmp/old.deb")
    debian.write("/tmp/smoke.sh", SCRIPT, 0o755)
    done = debian.run("/tmp/smoke.sh", prelude=LAN, check=False, timeout=180)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "NOTIFY READY=1" in out
    assert "ELEMENTS-BEFORE 0" not in out and "ELEMENTS-BEFORE" in out
    assert re.search(r"^PORTAL 200 \d+", out, re.M), out
    assert "PORTAL-KEY plaza 600" in out
    assert "GATEWAY-EXIT 0" in out
    # The table stays in the kernel when the gateway stops: the client is still let through.
    assert re.search(r"^ELEMENTS-AFTER-STOP [1-9]", out, re.M), out
    assert "LEASE-LEARNED" in out
    assert re.search(r"^AUTHORIZED-AFTER-RESTART [1-9]", out, re.M), out
    for name in ("GATEWAY", "PORTAL"):
        rss = re.search(rf"^{name} VmRSS:\s+(\d+) kB", out, re.M)
        assert rss, out
        print(f"idle RSS {name.lower()}: {int(rss.group(1)) / 1024:.1f} MiB")


def _unit_commands(text: str) -> dict[str, str]:
    """ExecStartPre/ExecStart of a unit file, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return dict(re.findall(r"^(ExecStartPre|ExecStart)=(.+)$", joined, re.M))


def test_dnsmasq_unit_commands_work_with_debians_dnsmasq(debian: Chroot) -> None:
    """plaza-dnsmasq.service as written: the config generated from the default gateway.toml
    and the admin's drop-ins are accepted by Debian 12's dnsmasq (`--test` checks them)."""
    debian.run("dpkg", "-i", "/tmp/old.deb")
    unit = debian.run("cat", "/lib/systemd/system/plaza-dnsmasq.service").stdout
    commands = _unit_commands(unit)
    debian.write("/etc/plaza/dnsmasq.d/till.conf", "dhcp-host=3c:22:fb:12:34:56,till,198.19.0.10\n")
    script = (
        "mkdir -p /run/plaza-dnsmasq && "  # RuntimeDirectory=plaza-dnsmasq
        f"{commands['ExecStartPre']} && {commands['ExecStart']} --test"
    )
    done = debian.sh(script, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "syntax check OK" in done.stderr
    conf = debian.run("cat", "/run/plaza-dnsmasq/plaza-dnsmasq.conf").stdout
    assert "interface=br-lan" in conf
    assert "dhcp-leasefile=/var/lib/plaza/dnsmasq.leases" in conf  # the gateway watches it
    assert "dhcp-script" not in conf  # no process per DHCP event
    # A typo in a drop-in is caught the same way.
    debian.write("/etc/plaza/dnsmasq.d/typo.conf", "dhcp-hots=nonsense\n")
    assert debian.sh(script, check=False).returncode != 0


def test_default_config_without_a_lan_stops_cleanly(debian: Chroot) -> None:
    """No br-lan (a router not yet set up): the gateway says why and exits 2, the status
    plaza-gateway.service's RestartPreventExitStatus= does not restart; no table is loaded."""
    debian.run("dpkg", "-i", "/tmp/old.deb")
    done = debian.sh(
        "plaza-gateway --config /etc/plaza/gateway.toml run; echo EXIT $?; nft list tables",
        check=False,
    )
    assert "EXIT 2" in done.stdout
    assert "no such interface: 'br-lan'" in done.stderr
    assert "plaza" not in done.stdout.replace("EXIT", "")
    unit = debian.run("cat", "/lib/systemd/system/plaza-gateway.service").stdout
    assert "RestartPreventExitStatus=2" in unit
