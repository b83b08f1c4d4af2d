# shellcheck shell=dash
# /usr/share/plaza/openwrt.sh: what Plaza sets in OpenWrt's own UCI configs (dhcp, firewall),
# shared by /etc/uci-defaults/90-plaza (first boot, or opkg install) and /etc/init.d/plaza
# (every start, so a changed garden or portal port reaches dnsmasq and fw4), and the one
# setting of Plaza's own it keeps in step with OpenWrt's: dnsmasq's lease file.
#
# Why through UCI and not files of our own: OpenWrt regenerates dnsmasq's and fw4's config
# from UCI on every restart, and LuCI shows what UCI holds. Every section Plaza owns has a
# fixed name (dhcp.plaza_*, firewall.plaza_*), so running this twice changes nothing, and
# removing Plaza is `uci delete` of those names. Nothing here guesses the network to capture:
# plaza.lan.interface names it (the guest bridge), and without it nothing is set.
#
# IPKG_INSTROOT (an image being built, or a test's staging root): read and write the configs
# under it, and never touch a running service.

plaza_uci() {
	uci -q ${IPKG_INSTROOT:+-c "$IPKG_INSTROOT/etc/config" -t "$IPKG_INSTROOT/tmp/.uci"} "$@"
}

plaza_log() {
	if [ -n "$IPKG_INSTROOT" ]; then
		echo "plaza: $*" >&2
	else
		logger -t plaza -p daemon.notice "$*"
	fi
}

# The logical network (network.NAME) whose device is $1, e.g. br-guest -> guest.
plaza_network_of_device() {
	local section
	for section in $(plaza_uci show network | sed -n "s/^network\.\([A-Za-z0-9_]*\)\.device='$1'\$/\1/p"); do
		if [ "$(plaza_uci get "network.$section")" = interface ]; then
			echo "$section"
			return 0
		fi
	done
	return 1
}

# The firewall zone (its name) that holds network $1.
plaza_zone_of_network() {
	local i=0 name
	while name=$(plaza_uci get "firewall.@zone[$i].name"); do
		case " $(plaza_uci get "firewall.@zone[$i].network") " in
		*" $1 "*)
			echo "$name"
			return 0
			;;
		esac
		i=$((i + 1))
	done
	return 1
}

# True when capturing device $1 would lock the technician out: it is the management LAN
# (network.lan, where LuCI and SSH are reached) and no admin MAC is exempt
# (plaza.policy.trusted_macs).
plaza_lockout_risk() {
	[ "$(plaza_uci get network.lan.device)" = "$1" ] || return 1
	[ -z "$(plaza_uci get plaza.policy.trusted_macs)" ]
}

# A URL's host name: https://wallet.example:8443/path -> wallet.example
plaza_url_host() {
	echo "$1" | sed -e 's#^[A-Za-z][A-Za-z0-9+.-]*://##' -e 's#^[^@/]*@##' -e 's#[/:?\#].*$##'
}

# Walled garden in dnsmasq: one `ipset` section per kind of set (OpenWrt's dnsmasq writes
# `nftset=/domain/4#inet#plaza#garden4,...` from it); the wallet's hosts are always in.
plaza_sync_garden() {
	local domain domains="" seen="" url urls
	plaza_uci delete dhcp.plaza_garden
	plaza_uci set dhcp.plaza_garden=ipset
	plaza_uci set dhcp.plaza_garden.table=plaza
	plaza_uci set dhcp.plaza_garden.table_family=inet
	plaza_uci add_list dhcp.plaza_garden.name=garden4
	plaza_uci add_list dhcp.plaza_garden.name=garden6
	if [ "$(plaza_uci get plaza.wallet.dialect)" = alipay ]; then
		urls="$(plaza_uci get plaza.wallet.authorize_url) $(plaza_uci get plaza.wallet.gateway_url)"
	else
		urls=$(plaza_uci get plaza.wallet.issuer)
	fi
	for url in $urls; do
		domains="$domains $(plaza_url_host "$url")"
	done
	for domain in $domains $(plaza_uci get plaza.garden.domains); do
		domain=${domain#\*.}
		case " $seen " in
		*" $domain "*) continue ;;
		esac
		seen="$seen $domain"
		plaza_uci add_list "dhcp.plaza_garden.domain=$domain"
	done
	plaza_uci delete dhcp.plaza_garden_http
	# shellcheck disable=SC2046  # one word per list value, as uci prints them
	set -- $(plaza_uci get plaza.garden.http_domains)
	[ $# -gt 0 ] || return 0
	plaza_uci set dhcp.plaza_garden_http=ipset
	plaza_uci set dhcp.plaza_garden_http.table=plaza
	plaza_uci set dhcp.plaza_garden_http.table_family=inet
	plaza_uci add_list dhcp.plaza_garden_http.name=garden_http4
	plaza_uci add_list dhcp.plaza_garden_http.name=garden_http6
	for domain in "$@"; do
		plaza_uci add_list "dhcp.plaza_garden_http.domain=${domain#\*.}"
	done
}

# The portal's name resolves to the router's address on the captive network; RFC 8910 option
# 114 (the captive-portal API) only when the portal has a certificate (an https URI).
plaza_sync_portal_dns() {
	local network="$1" hostname address cert old
	hostname=$(plaza_uci get plaza.portal.hostname)
	address=$(plaza_uci get plaza.lan.address)
	plaza_uci delete dhcp.plaza_portal
	if [ -n "$hostname" ] && [ -n "$address" ]; then
		plaza_uci set dhcp.plaza_portal=domain
		plaza_uci set "dhcp.plaza_portal.name=$hostname"
		plaza_uci set "dhcp.plaza_portal.ip=${address%/*}"
	fi
	[ -n "$network" ] && [ -n "$(plaza_uci get "dhcp.$network")" ] || return 0
	for old in $(plaza_uci get "dhcp.$network.dhcp_option_force"); do
		case "$old" in
		114,*) plaza_uci del_list "dhcp.$network.dhcp_option_force=$old" ;;
		esac
	done
	cert=$(plaza_uci get plaza.portal.cert_file)
	[ -n "$cert" ] && [ -n "$hostname" ] || return 0
	plaza_uci add_list "dhcp.$network.dhcp_option_force=114,\"https://$hostname/api/captive\""
}

# fw4: the captive zone may forward to wan (Plaza's own table, inet plaza, decides per
# client) and reach the portal's ports, DNS and DHCP on the router: a guest zone's input
# policy is REJECT, and without the router's dnsmasq a phone gets no address, and no garden
# name reaches Plaza's sets (dnsmasq fills them as it answers).
plaza_sync_firewall() {
	local zone="$1" port https intercept
	plaza_uci delete firewall.plaza_forward
	plaza_uci delete firewall.plaza_portal
	plaza_uci delete firewall.plaza_dns
	plaza_uci delete firewall.plaza_dhcp
	[ -n "$zone" ] || return 0
	plaza_uci set firewall.plaza_dns=rule
	plaza_uci set firewall.plaza_dns.name=Plaza-DNS
	plaza_uci set "firewall.plaza_dns.src=$zone"
	plaza_uci set firewall.plaza_dns.proto='tcp udp'
	plaza_uci set firewall.plaza_dns.dest_port=53
	plaza_uci set firewall.plaza_dns.target=ACCEPT
	plaza_uci set firewall.plaza_dhcp=rule
	plaza_uci set firewall.plaza_dhcp.name=Plaza-DHCP
	plaza_uci set "firewall.plaza_dhcp.src=$zone"
	plaza_uci set firewall.plaza_dhcp.proto=udp
	plaza_uci set firewall.plaza_dhcp.dest_port=67
	plaza_uci set firewall.plaza_dhcp.family=ipv4
	plaza_uci set firewall.plaza_dhcp.target=ACCEPT
	port=$(plaza_uci get plaza.portal.port)
	https=$(plaza_uci get plaza.portal.https_port)
	intercept=$(plaza_uci get plaza.portal.intercept_port)
	plaza_uci set firewall.plaza_forward=forwarding
	plaza_uci set "firewall.plaza_forward.src=$zone"
	plaza_uci set firewall.plaza_forward.dest=wan
	plaza_uci set firewall.plaza_portal=rule
	plaza_uci set firewall.plaza_portal.name=Plaza-portal
	plaza_uci set "firewall.plaza_portal.src=$zone"
	plaza_uci set firewall.plaza_portal.proto=tcp
	plaza_uci set "firewall.plaza_portal.dest_port=${port:-80} ${https:-443} ${intercept:-8080}"
	plaza_uci set firewall.plaza_portal.target=ACCEPT
}

# The dnsmasq section that serves network $1: the one its dhcp section names with `instance`
# (as OpenWrt's dnsmasq init matches them), else the first.
plaza_dnsmasq_section() {
	local instance=""
	[ -n "$1" ] && instance=$(plaza_uci get "dhcp.$1.instance")
	if [ -n "$instance" ] && [ "$(plaza_uci get "dhcp.$instance")" = dnsmasq ]; then
		echo "$instance"
	else
		echo "@dnsmasq[0]"
	fi
}

# dnsmasq's lease file, which the daemon watches to learn each lease (plaza.lan.lease_file):
# OpenWrt's dnsmasq writes /tmp/dhcp.leases unless its section's `leasefile` says otherwise,
# rewriting it in place after every change. No dhcp-script and no hotplug handler: dnsmasq
# runs no process per DHCP event (its init adds a script only for /etc/hotplug.d/dhcp
# handlers). Set at every start, so an upgrade from the hook, or a changed leasefile, follows.
# $1: the captive network (for `instance`).
plaza_sync_leases() {
	local section leasefile confdir
	section=$(plaza_dnsmasq_section "$1")
	leasefile=$(plaza_uci get "dhcp.$section.leasefile")
	leasefile=${leasefile:-/tmp/dhcp.leases}
	if [ "$(plaza_uci get plaza.lan.lease_file)" != "$leasefile" ]; then
		plaza_uci set "plaza.lan.lease_file=$leasefile"
		plaza_uci commit plaza
	fi
	if [ "$(plaza_uci get dhcp.odhcpd.maindhcp)" = 1 ]; then
		plaza_log "dhcp.odhcpd.maindhcp is 1: odhcpd, not dnsmasq, hands out addresses; Plaza learns phones from their packets only, without host names"
	fi
	confdir=$(plaza_uci get "dhcp.$section.confdir")
	confdir=${confdir%%,*}
	if grep -qs '^[[:space:]]*leasefile-ro' "${IPKG_INSTROOT}/etc/dnsmasq.conf" \
		"${IPKG_INSTROOT}${confdir:-/tmp/dnsmasq.d}"/*; then
		plaza_log "dnsmasq is set to leasefile-ro: it writes no lease file, so Plaza learns phones from their packets only, without host names"
	fi
}

# Commit $1 when its content changed, else drop the pending (identical) changes; true when
# something was committed.
plaza_commit_if_changed() {
	local before="$2" after
	after=$(plaza_uci export "$1")
	if [ "$before" = "$after" ]; then
		plaza_uci revert "$1"
		return 1
	fi
	plaza_uci commit "$1"
}

# Everything above, for the device plaza.lan.interface names. $1 = "live": reload dnsmasq
# and the firewall when their config changed (not at first boot: they start after).
plaza_sync() {
	local mode="$1" device network zone dhcp_before fw_before
	if [ -z "$(plaza_uci get plaza.gateway.control_group)" ]; then
		plaza_uci set plaza.gateway.control_group=plaza  # the portal's group reaches the socket
		plaza_uci commit plaza
	fi
	device=$(plaza_uci get plaza.lan.interface)
	if [ -z "$device" ]; then
		plaza_log "plaza.lan.interface is not set: nothing is captured until it names the guest network's device"
		return 0
	fi
	network=$(plaza_network_of_device "$device")
	plaza_sync_leases "$network"
	[ -n "$network" ] && zone=$(plaza_zone_of_network "$network")
	[ -n "$zone" ] || plaza_log "no firewall zone holds $device: add its network to a zone"
	dhcp_before=$(plaza_uci export dhcp)
	fw_before=$(plaza_uci export firewall)
	plaza_sync_garden
	plaza_sync_portal_dns "$network"
	plaza_sync_firewall "$zone"
	if plaza_commit_if_changed dhcp "$dhcp_before" && [ "$mode" = live ] && [ -z "$IPKG_INSTROOT" ]; then
		/etc/init.d/dnsmasq reload >/dev/null 2>&1
	fi
	if plaza_commit_if_changed firewall "$fw_before" && [ "$mode" = live ] && [ -z "$IPKG_INSTROOT" ]; then
		/etc/init.d/firewall reload >/dev/null 2>&1
	fi
	return 0
}

# The cloud's walled-garden names: the daemon keeps them in
# <state_dir>/dnsmasq.d/cloud-garden.conf (nftset= lines). OpenWrt's dnsmasq reads its confdir
# (dhcp.@dnsmasq[0].confdir, /tmp/dnsmasq.d by default) and, jailed by procd, sees nothing
# else: a copy goes there (a link would point outside its jail). No fragment, no copy.
plaza_cloud_garden() {
	local state="$1" fragment confdir
	fragment="$state/dnsmasq.d/cloud-garden.conf"
	confdir=$(plaza_uci get "dhcp.@dnsmasq[0].confdir")
	confdir=${confdir%%,*}
	confdir=${confdir:-/tmp/dnsmasq.d}
	if [ -f "$fragment" ]; then
		mkdir -p "$confdir"
		cp "$fragment" "$confdir/plaza-cloud-garden.conf.new" &&
			mv "$confdir/plaza-cloud-garden.conf.new" "$confdir/plaza-cloud-garden.conf"
	else
		rm -f "$confdir/plaza-cloud-garden.conf"
	fi
}
