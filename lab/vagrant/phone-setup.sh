#!/bin/sh
# A phone VM from the plaza/router box (Vagrantfile, run once by `vagrant up`): Plaza stays masked,
# the router's own network files go, and eth0 (its only lab NIC, on plaza-lan) gets its address
# from the router's DHCP through the namespace lab's client: busybox udhcpc with lab/udhcpc.sh,
# asking for option 114. The management NIC keeps the box's file (05-vagrant-mgmt.network).
set -eu
name="$1"
hostnamectl set-hostname "$name" 2>/dev/null || echo "$name" > /etc/hostname
cd /etc/systemd/network
rm -f 10-wan.network 20-br-lan.netdev 21-lan-port.network 22-br-lan.network
networkctl reload
ip link del br-lan 2>/dev/null || true
ip -4 addr flush dev eth0
ip link set eth0 up
# Its own resolv.conf, written by the DHCP script (resolved has nothing to do on a phone).
systemctl disable --now systemd-resolved 2>/dev/null || true
rm -f /etc/resolv.conf
: > /etc/resolv.conf
mkdir -p /var/lib/plaza-phone
cat > /etc/systemd/system/plaza-phone-dhcp.service <<UNIT
[Unit]
Description=The phone's DHCP client on the lab LAN (busybox udhcpc, lab/udhcpc.sh)
After=network-pre.target

[Service]
Environment=PLAZA_RESOLV=/etc/resolv.conf PLAZA_LEASE=/var/lib/plaza-phone/lease
ExecStart=/bin/busybox udhcpc -f -R -A 1 -i eth0 -x hostname:$name -O 114 -s /usr/local/lib/udhcpc.sh -t 20 -T 1
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
chmod 755 /usr/local/lib/udhcpc.sh
systemctl daemon-reload
systemctl enable --now plaza-phone-dhcp.service
echo "phone $name: udhcpc on eth0, waiting for the router"
