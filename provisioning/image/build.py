"""`make router-image`: a bootable Debian 12 router disk, dist/plaza-router.qcow2.

Built from the Debian archive only, in three cached layers so a second build with nothing
changed costs seconds:

1. the base: mmdebstrap of bookworm with the kernel, systemd, OpenSSH and what the Plaza
   package depends on, a tarball under CACHE keyed by its package list (the approach of
   tests/package/chroot.py: only the first build downloads);
2. the router: the base unpacked, Plaza's .deb installed with dpkg, networkd (WAN by DHCP on
   eth0, the LAN bridge br-lan on eth1 with the address from /etc/plaza/gateway.toml), the
   technician's SSH key (key-only login, no password anywhere), the serial console;
3. the disk: one MBR partition, ext4 labelled plaza-root, extlinux in the MBR so the disk boots
   alone; the kernel and initrd are also copied to dist/ for `qemu -kernel` (the tests).

Layers 2-3 are redone only when their inputs change: the base key, the .deb, the SSH key, the
fleet enrolment below and this file (dist/plaza-router.inputs holds their digest).

Image-baked enrolment (issue 13; cloud/fleet.py, provisioning/fleet_enrol.py): with
FLEET_SECRET (the dashboard's "New fleet secret"), VENUE_TAG (shown to the merchant beside the
router) and FLEET_CLOUD (the cloud's https URL) in the environment, and FLEET_CA (a PEM file,
for a cloud whose certificate no public CA signs) if needed, the image holds
/etc/plaza/fleet.secret (0600 root), the tag in /etc/plaza/fleet.env and a [cloud] section in
gateway.toml: each router from it asks to join on first boot (plaza-fleet-enrol.service) and
waits for the merchant's approval. `make router-image` passes them on from its command line.

Usage: python provisioning/image/build.py [--deb FILE] [--ssh-key FILE.pub] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PLAZA_IMAGE_CACHE", "/var/cache/plaza-image"))
WORK = ROOT / "build" / "image"
SUITE = "bookworm"
NAME = "plaza-router"
# The router's system: kernel and boot, systemd with networkd and resolved, SSH, and what the
# Plaza package depends on (provisioning/package/nfpm.yaml). No apt runs at image build time
# after this: the .deb must install from these.
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "systemd", "systemd-sysv", "systemd-resolved",
    "udev", "dbus", "kmod", "iproute2", "openssh-server", "ca-certificates",
    "python3", "nftables", "libnftables1", "dnsmasq-base", "libnetfilter-queue1", "iptables",
    "adduser", "procps", "less",
)  # fmt: skip
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DISK_SIZE_MB = 2048
PART_OFFSET = 1024 * 1024  # the partition starts at sector 2048, as fdisk would put it
LABEL = "plaza-root"
# eth0/eth1 rather than enp0sN: the first NIC is the WAN and the second the LAN whatever the
# slot numbering of the machine (QEMU, Vagrant's VirtualBox, a two-port router).
KERNEL_ARGS = f"root=LABEL={LABEL} ro console=tty0 console=ttyS0,115200 net.ifnames=0"
MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

WAN_NETWORK = """\
# The WAN: the first NIC, by DHCP (address, gateway, DNS for the router itself).
[Match]
Name=eth0

[Network]
DHCP=ipv4
IPv6AcceptRA=yes
"""
LAN_NETDEV = """\
# The LAN bridge Plaza's gateway.toml names ([lan] interface): Wi-Fi APs and LAN ports join it.
[NetDev]
Name=br-lan
Kind=bridge
"""
LAN_PORT = """\
# The second NIC is a port of the LAN bridge.
[Match]
Name=eth1

[Network]
Bridge=br-lan
"""
LAN_BRIDGE = """\
# The router's LAN address, from /etc/plaza/gateway.toml [lan] address at image build time.
# Up without a cable too: plaza-gateway and dnsmasq need it at boot. IPMasquerade: the LAN is
# forwarded and NATed to the WAN (networkd turns on IPv4 forwarding and adds the masquerade
# rule); without it an authorized phone has no way out (Plaza's table only filters).
[Match]
Name=br-lan

[Network]
Address={address}
IPMasquerade=ipv4
ConfigureWithoutCarrier=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
RESOLVED = """\
# dnsmasq (plaza-dnsmasq.service) is the LAN's DNS: resolved keeps off port 53 and only
# writes the WAN's DNS servers to /run/systemd/resolve/resolv.conf for the router itself.
[Resolve]
DNSStubListener=no
"""
SSHD = """\
# Key-only login for the technician (the key baked in at image build); no password anywhere.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PermitEmptyPasswords no
"""
SSH_HOSTKEYS = """\
# Host keys are made on the router's first boot, not at image build: two routers flashed
# from one image never share them.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""
EXTLINUX = """\
DEFAULT plaza
TIMEOUT 10
PROMPT 0
SERIAL 0 115200
LABEL plaza
  LINUX /boot/{kernel}
  INITRD /boot/{initrd}
  APPEND {args}
"""


class ImageError(RuntimeError):
    """A step of the image build failed; the message says which."""


# The dashboard's secrets are "fleet-" and 32 URL-safe characters (cloud/fleet.py); a little
# slack either way, never quotes, spaces or newlines.
SECRET_RE = re.compile(r"fleet-[A-Za-z0-9_-]{16,100}\Z")
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/#@+-]{0,62}\Z")  # the cloud takes <= 63 ASCII
URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z")
FLEET_VARS = ("FLEET_SECRET", "VENUE_TAG", "FLEET_CLOUD", "FLEET_CA")
FLEET_CA_FILE = "/etc/plaza/fleet-ca.pem"


class Fleet(NamedTuple):  # not a dataclass: tests load this file without a module entry
    """What an image that enrols itself carries (all checked by `fleet_from`)."""

    secret: str
    venue_tag: str
    cloud_url: str
    ca_pem: str = ""

    def digest(self) -> bytes:
        return "\0".join(
            ("fleet", self.secret, self.venue_tag, self.cloud_url, self.ca_pem)
        ).encode()


def fleet_from(env: dict[str, str]) -> Fleet | None:
    """The fleet enrolment asked for in `env`, None when none of its variables is set (the
    image as without it); a one-line ImageError naming the variable that is wrong."""
    if not any(name in env for name in FLEET_VARS):
        return None
    secret, tag, url = (env.get(n, "").strip() for n in FLEET_VARS[:3])
    for name, value, pattern, what, hint in (
        ("FLEET_SECRET", secret, SECRET_RE, "not a fleet secret",
         "fleet-... from the dashboard's Routers waiting page"),
        ("VENUE_TAG", tag, TAG_RE, "not 1-63 letters, digits, spaces or ._:/#@+-",
         "shown to the merchant beside the router"),
        ("FLEET_CLOUD", url, URL_RE, "not an https:// URL",
         "the cloud the routers ask, e.g. https://cloud.example.com"),
    ):  # fmt: skip
        if not pattern.match(value):
            raise ImageError(f"{name}: {what if value else 'missing or empty'} ({hint})")
    ca = ""
    if env.get("FLEET_CA", "").strip():
        try:
            ca = Path(env["FLEET_CA"].strip()).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ImageError(f"FLEET_CA: cannot read {env['FLEET_CA']!r}: {exc}") from None
        if "-----BEGIN CERTIFICATE-----" not in ca:
            raise ImageError(f"FLEET_CA: {env['FLEET_CA']!r} holds no PEM certificate")
    elif "FLEET_CA" in env:
        raise ImageError("FLEET_CA: empty (a PEM file; leave it out for a publicly signed cloud)")
    return Fleet(secret, tag, url.rstrip("/"), ca)


def bake_fleet(root: Path, fleet: Fleet) -> None:
    """The secret (root only), the venue tag for the unit, the cloud in gateway.toml (which
    the agent and, once enrolled, the gateway read: the URL and the CA for its uplink)."""
    _write(root, "/etc/plaza/fleet.secret", fleet.secret + "\n", 0o600)
    _write(
        root,
        "/etc/plaza/fleet.env",
        "# The venue tag this image's routers show the merchant (plaza-fleet-enrol.service).\n"
        f'PLAZA_FLEET_VENUE_TAG="{fleet.venue_tag}"\n',
    )
    config = root / "etc/plaza/gateway.toml"
    text = config.read_text()
    section = (
        f'\n# Baked by make router-image FLEET_CLOUD=...\n[cloud]\nurl = "{fleet.cloud_url}"\n'
    )
    if fleet.ca_pem:
        _write(root, FLEET_CA_FILE, fleet.ca_pem)
        section += f'ca_bundle = "{FLEET_CA_FILE}"\n'
    try:
        tomllib.loads(text + section)
    except tomllib.TOMLDecodeError as exc:  # the package's default grew a [cloud] section
        raise ImageError(f"FLEET_CLOUD: cannot add [cloud] to gateway.toml: {exc}") from None
    with open(config, "a") as f:  # its owner and mode (root:plaza 0640) kept
        f.write(section)


def _run(cmd: list[str], timeout: float = 1800) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout
    )
    if done.returncode != 0:
        raise ImageError(f"{' '.join(cmd[:6])} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def base_key(packages: tuple[str, ...] = PACKAGES) -> str:
    return hashlib.sha256(" ".join([SUITE, "minbase", *sorted(packages)]).encode()).hexdigest()


def base_tarball(packages: tuple[str, ...] = PACKAGES) -> Path:
    """Layer 1, the cached Debian base for `packages` (mmdebstrap, a few minutes when cold)."""
    tarball = CACHE / f"{SUITE}-router-{base_key(packages)[:16]}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    _run([
        "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
        f"--include={','.join(packages)}", SUITE, str(partial), *MIRRORS,
    ])  # fmt: skip
    partial.rename(tarball)
    return tarball


def _chroot(root: Path, script: str) -> str:
    """`script` in the root, with /proc, /dev and /sys mounted in a private mount namespace
    (they vanish with it) and no network."""
    outer = (
        'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" '
        '&& mount -t sysfs sysfs "$1/sys" && exec chroot "$1" sh -ec "$2"'
    )
    return _run(
        ["unshare", "--mount", "--net", "--fork", "sh", "-c", outer, "sh", str(root), script]
    )


def _write(root: Path, inside: str, text: str, mode: int = 0o644) -> None:
    target = root / inside.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def lan_address(root: Path) -> str:
    with open(root / "etc/plaza/gateway.toml", "rb") as f:
        return tomllib.load(f)["lan"]["address"]


def configure(root: Path, deb: Path, ssh_key: str, fleet: Fleet | None = None) -> None:
    """Layer 2: Plaza installed and the router set up in the unpacked base."""
    shutil.copy(deb, root / "tmp/plaza.deb")
    _chroot(root, "dpkg -i /tmp/plaza.deb && rm /tmp/plaza.deb")
    if fleet is not None:
        bake_fleet(root, fleet)
    _write(root, "/etc/hostname", "plaza-router\n")
    _write(root, "/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tplaza-router\n")
    _write(root, "/etc/fstab", f"LABEL={LABEL}\t/\text4\terrors=remount-ro\t0\t1\n")
    net = "/etc/systemd/network"
    _write(root, f"{net}/10-wan.network", WAN_NETWORK)
    _write(root, f"{net}/20-br-lan.netdev", LAN_NETDEV)
    _write(root, f"{net}/21-lan-port.network", LAN_PORT)
    _write(root, f"{net}/22-br-lan.network", LAN_BRIDGE.format(address=lan_address(root)))
    _write(root, "/etc/systemd/resolved.conf.d/plaza.conf", RESOLVED)
    _write(root, "/etc/ssh/sshd_config.d/plaza.conf", SSHD)
    _write(root, "/etc/systemd/system/ssh.service.d/plaza-hostkeys.conf", SSH_HOSTKEYS)
    _write(root, "/root/.ssh/authorized_keys", ssh_key.strip() + "\n", 0o600)
    (root / "root/.ssh").chmod(0o700)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/resolv.conf")
    (root / "etc/machine-id").write_text("")  # made on first boot: one per router
    _chroot(
        root,
        "usermod -p '*' root; "  # no root password: only the key logs in
        "systemctl enable systemd-networkd systemd-resolved ssh "
        "plaza-gateway plaza-portal plaza-dnsmasq serial-getty@ttyS0 >/dev/null 2>&1; "
        "systemctl disable systemd-networkd-wait-online >/dev/null 2>&1 || true; "
        "apt-get clean; rm -rf /var/lib/apt/lists/* /var/log/*.log",
    )
    kernel, initrd = boot_files(root)
    _write(
        root,
        "/boot/extlinux/extlinux.conf",
        EXTLINUX.format(kernel=kernel.name, initrd=initrd.name, args=KERNEL_ARGS),
    )


def boot_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("no kernel in /boot: linux-image-amd64 missing from the base")
    kernel = kernels[-1]
    initrd = root / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.exists():
        raise ImageError(f"no {initrd.name} in /boot")
    return kernel, initrd


def make_disk(root: Path, raw: Path) -> None:
    """Layer 3: an MBR disk, one bootable ext4 partition made from `root` (mkfs.ext4 -d, no
    mount), then extlinux installed through a loop device on that partition."""
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE_MB * 1024 * 1024)
    layout = f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n"
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=layout, text=True, check=True)
    blocks = (DISK_SIZE_MB * 1024 * 1024 - PART_OFFSET) // 4096
    # No 64bit feature: syslinux 6.04 reads ext4 without it only.
    _run([
        "mkfs.ext4", "-q", "-F", "-L", LABEL, "-O", "^64bit", "-b", "4096",
        "-E", f"offset={PART_OFFSET}", "-d", str(root), str(raw), str(blocks),
    ])  # fmt: skip
    loop = _run(["losetup", "--find", "--show", "--offset", str(PART_OFFSET), str(raw)]).strip()
    mnt = WORK / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        _run(["mount", loop, str(mnt)])
        try:
            _run(["extlinux", "--install", str(mnt / "boot/extlinux")])
        finally:
            _run(["umount", str(mnt)])
    finally:
        _run(["losetup", "-d", loop])
    with open(raw, "r+b") as f:
        f.write(MBR.read_bytes()[:440])


def default_ssh_key(out: Path) -> Path:
    """The lab's and tests' key, made once under dist/ (never a key for a real router)."""
    private = out / "plaza-lab-key"
    if not private.exists():
        out.mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "plaza-lab", "-f", str(private)])
    return private.with_suffix(".pub")


def deb_digest(deb: Path) -> str:
    """The package's control files, maintainer scripts and files (names, modes, contents),
    without timestamps: `make package` rebuilds the .deb every time and nfpm stamps the build
    time in it, so the file's own hash would change with nothing changed."""
    h = hashlib.sha256()
    for part in ("--ctrl-tarfile", "--fsys-tarfile"):  # maintainer scripts, then the files
        data = subprocess.run(["dpkg-deb", part, str(deb)], capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                h.update(f"{m.name}\0{m.mode}\0{m.type!r}\0{m.linkname}\0".encode())
                f = tar.extractfile(m)
                if f is not None:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def inputs_digest(deb: Path, ssh_key: str, fleet: Fleet | None = None) -> str:
    h = hashlib.sha256()
    h.update(base_key().encode())
    h.update(deb_digest(deb).encode())
    h.update(ssh_key.strip().encode())
    h.update(Path(__file__).read_bytes())
    if fleet is not None:  # none: the same key as an image built before fleets existed
        h.update(fleet.digest())
    return h.hexdigest()


def build(deb: Path, ssh_key_file: Path, out: Path, fleet: Fleet | None = None) -> Path:
    ssh_key = ssh_key_file.read_text()
    if not ssh_key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ImageError(f"{ssh_key_file} is not an OpenSSH public key")
    qcow2 = out / f"{NAME}.qcow2"
    stamp = out / f"{NAME}.inputs"
    digest = inputs_digest(deb, ssh_key, fleet)
    outputs = (qcow2, out / f"{NAME}.vmlinuz", out / f"{NAME}.initrd")
    if stamp.exists() and stamp.read_text().strip() == digest and all(p.exists() for p in outputs):
        print(f"{qcow2}: up to date")
        return qcow2
    t0 = time.monotonic()
    tarball = base_tarball()
    t1 = time.monotonic()
    root = WORK / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    _run(["tar", "-C", str(root), "-xf", str(tarball)])
    configure(root, deb, ssh_key, fleet)
    kernel, initrd = boot_files(root)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(kernel, out / f"{NAME}.vmlinuz")
    shutil.copy(initrd, out / f"{NAME}.initrd")
    t2 = time.monotonic()
    raw = WORK / f"{NAME}.raw"
    make_disk(root, raw)
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)])
    raw.unlink()
    shutil.rmtree(root)
    stamp.write_text(digest + "\n")
    t3 = time.monotonic()
    size = qcow2.stat().st_size / 2**20
    print(
        f"{qcow2}: {size:.0f} MiB (base {t1 - t0:.0f} s, router {t2 - t1:.0f} s, "
        f"disk {t3 - t2:.0f} s)"
    )
    return qcow2


def newest_deb(dist: Path) -> Path:
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    deb = dist / f"plaza_{version}_amd64.deb"
    if not deb.exists():
        raise ImageError(f"{deb} missing: run `make package` first")
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--deb", type=Path, help="default: dist/plaza_<version>_amd64.deb")
    parser.add_argument("--ssh-key", type=Path, help="public key; default dist/plaza-lab-key.pub")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("router-image: needs root (mmdebstrap, chroot, losetup)", file=sys.stderr)
        return 2
    try:
        fleet = fleet_from(dict(os.environ))  # first: a wrong variable costs no build
        deb = args.deb or newest_deb(args.out)
        key = args.ssh_key.expanduser() if args.ssh_key else default_ssh_key(args.out)
        build(deb, key, args.out, fleet)
    except ImageError as e:
        print(f"router-image: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
