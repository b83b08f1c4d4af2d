"""`HOST:PORT` settings (the metrics endpoint's address), parsed where the config is checked
and where the daemon starts.

A module of its own at the bottom of gateway/ so the config can check the value without
importing the metrics code (which imports the walled garden's queue, which imports the
config: an import circle).
"""

from __future__ import annotations


def parse_listen(value: str) -> tuple[str, int] | None:
    """`HOST:PORT`, `[v6]:PORT`, or `off`/empty for no endpoint."""
    value = value.strip()
    if value.lower() in ("", "off", "none", "no"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"metrics address must be HOST:PORT or off; got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 metrics address as [ADDR]:PORT; got {value!r}")
    return host, int(port)
