"""Runs inside a phone's namespace (scapy, test-only): ask the router what a phone asks.

ns_ipv6_probe.py ra    -> JSON of the router advertisement answering a solicitation
ns_ipv6_probe.py dhcp6 -> JSON of the stateless DHCPv6 reply (options 23 and 103)
"""

from __future__ import annotations

import json
import sys

from scapy.all import UDP, IPv6, conf, get_if_hwaddr, sr1
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_InfoRequest,
    DHCP6OptCaptivePortal,
    DHCP6OptClientId,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptOptReq,
)
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
)

conf.verb = 0
conf.checkIPaddr = False  # answers to multicast come from the router's own address


def ra() -> dict:
    answer = sr1(IPv6(dst="ff02::2") / ICMPv6ND_RS(), iface="eth0", timeout=3)
    if answer is None or ICMPv6ND_RA not in answer:
        return {}
    adv = answer[ICMPv6ND_RA]
    prefix = answer.getlayer(ICMPv6NDOptPrefixInfo)
    rdnss = answer[ICMPv6NDOptRDNSS].dns if ICMPv6NDOptRDNSS in answer else []
    return {
        "source": answer[IPv6].src,
        "managed": int(adv.M),
        "other": int(adv.O),
        "router_lifetime": int(adv.routerlifetime),
        "prefix": f"{prefix.prefix}/{prefix.prefixlen}" if prefix else None,
        "autonomous": int(prefix.A) if prefix else None,
        "rdnss": [str(d) for d in rdnss],
    }


def dhcp6() -> dict:
    mac = get_if_hwaddr("eth0")
    request = (
        IPv6(dst="ff02::1:2")
        / UDP(sport=546, dport=547)
        / DHCP6_InfoRequest(trid=0x5A5A)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=mac))
        / DHCP6OptElapsedTime()
        / DHCP6OptOptReq(reqopts=[23, 103])
    )
    answer = sr1(request, iface="eth0", timeout=3)
    if answer is None:
        return {}
    out: dict = {}
    if DHCP6OptCaptivePortal in answer:
        uri = answer[DHCP6OptCaptivePortal].URI
        out["captive_portal"] = uri.decode() if isinstance(uri, bytes) else uri
    if DHCP6OptDNSServers in answer:
        out["dns"] = [str(d) for d in answer[DHCP6OptDNSServers].dnsservers]
    return out


if __name__ == "__main__":
    print(json.dumps({"ra": ra, "dhcp6": dhcp6}[sys.argv[1]]()))
