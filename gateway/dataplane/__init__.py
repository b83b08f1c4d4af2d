"""The kernel data plane: the libnftables binding and netlink codec, the Plaza table and its
ruleset, the bridge guard, and the NFQUEUE readers. Everything here talks to the kernel."""
