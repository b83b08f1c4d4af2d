"""`make vagrant-box`: dist/plaza-router.box, the router image as a local vagrant-libvirt box.

The box is the router image (dist/plaza-router.qcow2) with one layer on top, written on a
copy of its disk and never into the image itself (the router's network layout stays as
`make router-image` makes it):

- a systemd-networkd file for Vagrant's management NIC, matched by its PCI slot (the
  Vagrantfile puts it in MGMT_PCI_SLOT, after the WAN and LAN NICs, so those stay eth0 and
  eth1): an address by DHCP from libvirt and nothing else (no default route, no DNS), so all
  of a VM's own traffic keeps taking the lab's paths;
- Debian's busybox and curl, so a phone VM (the same box with Plaza left masked) runs the
  namespace lab's DHCP client (busybox udhcpc with lab/udhcpc.sh) and its HTTP client (curl,
  lab/phone.py). Guests have no internet: the .debs are fetched here, on the host, resolved
  against the image's own dpkg status so only what is missing is added.

Cached: rebuilt only when the image (its inputs digest) or this file changed. Then
`vagrant box add --force plaza/router` (a local box; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
WORK = ROOT / "build" / "box"
IMAGE = DIST / "plaza-router.qcow2"
IMAGE_INPUTS = DIST / "plaza-router.inputs"
BOX = DIST / "plaza-router.box"
BOX_INPUTS = DIST / "plaza-router.box.inputs"
BOX_NAME = "plaza/router"
PART_OFFSET = 1024 * 1024  # provisioning/image/build.py PART_OFFSET
DISK_GB = 2  # provisioning/image/build.py DISK_SIZE_MB
EXTRA_PACKAGES = ("busybox", "curl")
# The management NIC's PCI slot: after the WAN (0x0a) and the LAN (0x0b), so that with
# net.ifnames=0 the kernel still names the WAN eth0 and the LAN eth1 (probe order is slot order).
WAN_PCI_SLOT = 0x0A
LAN_PCI_SLOT = 0x0B
MGMT_PCI_SLOT = 0x10
MGMT_NETWORK = f"""\
# Vagrant's management NIC (vagrant-libvirt box layer, lab/vagrant_box.py): only Vagrant's SSH.
# An address by DHCP and nothing more: no default route, no DNS, so the router's and the phones'
# own traffic never takes it. Matched by PCI slot, before the image's eth0/eth1 files.
[Match]
Path=pci-0000:00:{MGMT_PCI_SLOT:02x}.0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseGateway=no
UseRoutes=no
UseDNS=no
UseNTP=no
UseHostname=no
"""
BOX_VAGRANTFILE = """\
# Defaults of the plaza/router box (lab/vagrant_box.py): Vagrant logs in as root with the lab's
# key baked into the image (no vagrant user, no password, no key insertion).
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.insert_key = false
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
"""


class BoxError(RuntimeError):
    """The box could not be built or added; the message says what to do."""


def metadata() -> dict[str, object]:
    """metadata.json of a vagrant-libvirt box (format 2: one disk)."""
    return {
        "provider": "libvirt",
        "format": "qcow2",
        "virtual_size": DISK_GB,
        "disks": [{"path": "box.img", "format": "qcow2"}],
    }


def inputs_digest(image_inputs: str, source: bytes) -> str:
    """What the box depends on: the image's own inputs digest, and this builder."""
    return hashlib.sha256(image_inputs.strip().encode() + b"\0" + source).hexdigest()


def current_digest() -> str:
    if not IMAGE.exists() or not IMAGE_INPUTS.exists():
        raise BoxError(f"{IMAGE} missing: run `make router-image` first")
    return inputs_digest(IMAGE_INPUTS.read_text(), Path(__file__).read_bytes())


def is_stale() -> bool:
    """True when dist/plaza-router.box is missing or was built from another image; BoxError
    when the image itself is missing (the box is built from it: say so first)."""
    digest = current_digest()
    if not BOX.exists() or not BOX_INPUTS.exists():
        return True
    return BOX_INPUTS.read_text().strip() != digest


def _run(*cmd: str, timeout: float = 600, **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode != 0:
        raise BoxError(f"{' '.join(cmd[:3])} ... exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def fetch_debs(root: Path, dest: Path) -> list[Path]:
    """EXTRA_PACKAGES and whatever of their dependencies the image lacks, as .debs in `dest`:
    apt resolves against the image's dpkg status (Debian's archive, the host's apt sources)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "partial").mkdir(exist_ok=True)
    _run(
        "apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
        "-o", f"Dir::State::status={root / 'var/lib/dpkg/status'}",
        "-o", f"Dir::Cache::archives={dest}", "install", *EXTRA_PACKAGES,
        timeout=900,
    )  # fmt: skip
    return sorted(dest.glob("*.deb"))


def customise(root: Path, debs: list[Path]) -> None:
    """The box layer, in the mounted root of a copy of the image's disk."""
    net = root / "etc/systemd/network/05-vagrant-mgmt.network"
    net.write_text(MGMT_NETWORK)
    if debs:
        spool = root / "tmp/plaza-box-debs"
        spool.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            shutil.copy(deb, spool)
        names = [f"/tmp/plaza-box-debs/{d.name}" for d in debs]
        _run("chroot", str(root), "dpkg", "-i", *names)
        shutil.rmtree(spool)


def build(force: bool = False) -> Path:
    digest = current_digest()
    if not force and not is_stale():
        print(f"{BOX}: up to date")
        return BOX
    return pack(BOX, BOX_INPUTS, digest, lambda mnt: customise(mnt, fetch_debs(mnt, WORK / "debs")))


def pack(box: Path, inputs: Path, digest: str, layer: Callable[[Path], None]) -> Path:
    """A box from a copy of the router image's disk with `layer(mounted root)` written on it
    (the router box's layer above, the internet box's in lab/vagrant_inetbox.py); `digest`
    is kept in `inputs` for the cache."""
    t0 = time.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    raw, mnt = WORK / "disk.raw", WORK / "mnt"
    mnt.mkdir()
    _run("qemu-img", "convert", "-O", "raw", str(IMAGE), str(raw))
    loop = _run("losetup", "--find", "--show", "--offset", str(PART_OFFSET), str(raw)).strip()
    try:
        _run("mount", loop, str(mnt))
        try:
            layer(mnt)
        finally:
            _run("umount", str(mnt))
    finally:
        _run("losetup", "-d", loop)
    box_dir = WORK / "box"
    box_dir.mkdir()
    _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(box_dir / "box.img"))
    raw.unlink()
    (box_dir / "metadata.json").write_text(json.dumps(metadata(), indent=2) + "\n")
    (box_dir / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    partial = box.with_suffix(".box.partial")
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for name in ("metadata.json", "Vagrantfile", "box.img"):
            tar.add(box_dir / name, arcname=name)
    partial.replace(box)
    inputs.write_text(digest + "\n")
    shutil.rmtree(WORK)
    size = box.stat().st_size / 2**20
    print(f"{box}: {size:.0f} MiB in {time.monotonic() - t0:.0f} s")
    return box


def add(box: Path = BOX, name: str = BOX_NAME, inputs: Path = BOX_INPUTS) -> None:
    """`vagrant box add --force NAME` from the local file, unless already added from this very
    build (the digest is kept beside Vagrant's copy)."""
    digest = inputs.read_text().strip()
    mark = Path.home() / ".vagrant.d" / inputs.name
    if mark.exists() and mark.read_text().strip() == digest and box_added(name):
        print(f"box {name}: already added from this build")
        return
    _run("vagrant", "box", "add", "--force", "--name", name, str(box), timeout=900)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(digest + "\n")
    print(f"box {name}: added")


def box_added(name: str = BOX_NAME) -> bool:
    done = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True, timeout=60)
    return any(line.split()[:1] == [name] for line in done.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--no-add", dest="add", action="store_false", help="only build the file")
    args = parser.parse_args(argv)
    try:
        build(force=args.force)
        if args.add:
            add()
    except BoxError as exc:
        print(f"vagrant-box: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
