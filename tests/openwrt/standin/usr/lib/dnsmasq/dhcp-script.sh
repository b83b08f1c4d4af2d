#!/bin/sh
# shellcheck shell=dash disable=SC1091
# A stand-in for OpenWrt's /usr/lib/dnsmasq/dhcp-script.sh, doing what it does for leases
# (the tests' own code, after the upstream script's behaviour): dnsmasq's add/old/del become
# ACTION add/update/remove with MACADDR, IPADDR and HOSTNAME, handed to procd's hotplug
# dispatcher (`ubus call hotplug.dhcp call`), which sources /etc/hotplug.d/dhcp/* with them.
. /usr/share/libubox/jshn.sh

case "$1" in
add) action=add ;;
old) action=update ;;
del) action=remove ;;
*) exit 0 ;;
esac
json_init
json_add_array env
json_add_string "" "MACADDR=$2"
json_add_string "" "IPADDR=$3"
json_add_string "" "ACTION=$action"
json_add_string "" "HOSTNAME=$4"
json_close_array
ubus call hotplug.dhcp call "$(json_dump)"
