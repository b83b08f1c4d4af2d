"""Station host names (DHCP option 12) as the gateway keeps them: printable UTF-8 or nothing.

The name is whatever bytes the phone put in its DHCP request; dnsmasq passes a name it would
not use in DNS unchanged in DNSMASQ_SUPPLIED_HOSTNAME. Escape sequences in it reached the
operator's terminal through `plaza-ctl clients`, and a byte that is not UTF-8 (0xff) arrived as
a lone surrogate that SQLite refused, failing the whole write. A name is only a label for the
operator, so a bad one is dropped, not repaired: the lease itself still counts.

The names come from dnsmasq's lease file (gateway/stations/leases.py) and from `lease`
requests on the control socket (tests, benchmarks): both are cleaned here.
"""

from __future__ import annotations

MAX_CHARS = 63  # a DNS label; longer names are cut, as dnsmasq cuts them for DNS


def clean(raw: str | bytes) -> str:
    """`raw` if it is printable UTF-8 (cut to MAX_CHARS), else "". Printable in Python's sense:
    no control characters (ESC, newline, DEL, C1), no surrogates, no format characters such as
    bidirectional overrides, no separators but the plain space."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ""
    if not isinstance(raw, str) or not raw.isprintable():
        return ""
    return raw.strip()[:MAX_CHARS]
