"""Stations: who is on the LAN and what each may do. The pure session state machine, detection
(dnsmasq leases, netlink neighbours, first packets), policy, accounting, and the on-disk store
and outboxes that keep sessions and usage across restarts."""
