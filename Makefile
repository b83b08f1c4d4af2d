# Plaza: two commands set everything up on a fresh Debian 12 machine (as root):
#   make demo   - brings the lab up, walks a phone through the portal, tears it down
#   make test   - unit tests, network-namespace tests, ruff
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3 python3-venv python3-dev nftables libnftables1 dnsmasq-base iproute2 \
	iptables busybox iperf3 conntrack curl procps iputils-ping openssl chromium libnss3-tools \
	gcc libnetfilter-queue-dev libnfnetlink-dev postgresql tcpdump dnsmasq-utils fonts-noto-cjk \
	mmdebstrap openssh-client openssh-server systemd-container \
	qemu-system-x86 qemu-utils extlinux syslinux-common fdisk shellcheck
# openssh-server: tests/provision run their own /usr/sbin/sshd on 127.0.0.1 as the "router"
# (the system ssh service is not needed by them).
# qemu-system-x86, qemu-utils, extlinux, syslinux-common, fdisk: `make router-image` and tests/vm.
# shellcheck: tests/unit/test_openwrt_scripts.py checks firmware_overlay/'s shell scripts.
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done
# axe-core for the accessibility checks in tests/browser (injected into each page by Playwright).
AXE := .cache/axe/node_modules/axe-core/axe.min.js

.PHONY: all setup demo test lint bench fuzz clean lab-down package router-image vm-setup \
	vagrant-box vm-test

all: test

setup: $(STAMP_PIP)

$(STAMP_APT): Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/plaza-lab demo

# node/npm: Debian's packages only when no node is installed (a NodeSource node brings its own
# npm and conflicts with Debian's npm package).
$(AXE):
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	npm install --prefix .cache/axe --no-audit --no-fund --silent axe-core@4
	@test -f $@ && touch $@

test: setup $(AXE)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests

# The router install as a Debian package: dist/plaza_<version>_amd64.deb (nfpm; see
# provisioning/package/build.py). Install on a Debian 12 router: dpkg -i, systemctl enable --now.
# Also dist/plaza_<version>_all.ipk for OpenWrt 24.10 (opkg install; docs/openwrt.md).
package: setup
	$(PY) provisioning/package/build.py

# The router's disk: dist/plaza-router.qcow2 (Debian 12, Plaza's .deb installed, key-only SSH
# with SSH_KEY, default dist/plaza-lab-key.pub made for the lab). Cached: seconds when nothing
# changed. See provisioning/image/build.py and README "Router image".
# FLEET_SECRET=fleet-... VENUE_TAG=... FLEET_CLOUD=https://... [FLEET_CA=ca.pem]: an image whose
# routers enrol themselves on first boot, pending the merchant's approval (make passes its
# command line's variables to build.py in the environment, so the secret is never echoed).
router-image: package
	$(PY) provisioning/image/build.py $(if $(SSH_KEY),--ssh-key $(SSH_KEY))

# The testers' VM lab (docs/vm-lab.md): Vagrant + libvirt, installed by these targets only (about
# 300 packages and 90 s that `make test` and CI's first step do not need).
VM_APT_PACKAGES := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
	qemu-utils dnsmasq-base
vm-setup: setup
	@missing=$$(for p in $(VM_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# dist/plaza-router.box from the router image (cached), added to Vagrant as plaza/router; and
# dist/plaza-internet.box (the lab's internet VM: the image's Debian, the code and its Python
# dependencies from the host's pip; cached), added as plaza/internet.
vagrant-box: router-image vm-setup
	$(PY) -m lab.vagrant_box
	$(PY) -m lab.vagrant_inetbox

# The VM lab end to end: up (internet, router + 1 phone, flash + verify), demo and outage, down
# leaving nothing.
vm-test: vagrant-box
	flock /tmp/plaza-netns.lock bash lab/vagrant/vm-test.sh

bench: setup
	$(PY) bench/run_all.py

# Coverage-guided fuzzing of the SNI parser for FUZZ_SECONDS (default 60); figures on stdout.
fuzz: setup
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q -e '.[fuzz]'
	$(PY) bench/fuzz_sni.py --seconds $(or $(FUZZ_SECONDS),60)

lab-down: setup
	$(VENV)/bin/plaza-lab down

clean:
	rm -rf $(VENV) build dist *.egg-info
