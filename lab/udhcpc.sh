#!/bin/sh
# udhcpc event script for a lab phone: configure eth0 and the phone's own resolv.conf.
# PLAZA_RESOLV is /etc/netns/<phone-netns>/resolv.conf, which `ip netns exec` mounts as
# /etc/resolv.conf for every command run in that phone; it is written in place (not renamed)
# so the host's /etc/resolv.conf is never touched.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    if [ -n "$PLAZA_RESOLV" ]; then
      : > "$PLAZA_RESOLV"
      for d in $dns; do echo "nameserver $d" >> "$PLAZA_RESOLV"; done
    fi
    # RFC 8910 captive-portal API URI (DHCP option 114, requested with -O 114), as udhcpc
    # exports it: $opt114 when busybox has no name for the option.
    [ -n "$PLAZA_LEASE" ] && echo "${opt114:-}" > "$PLAZA_LEASE.opt114"
    [ -n "$PLAZA_LEASE" ] && echo "$ip" > "$PLAZA_LEASE"
    ;;
esac
exit 0
