"""The disk boots on its own (MBR, extlinux, `root=LABEL=plaza-root`), as on a user's machine
or a router it was written to: no kernel handed in by QEMU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.vm import RouterVM

pytestmark = [pytest.mark.vm, pytest.mark.netns]


def test_the_disk_boots_alone_through_extlinux(router_image: Path) -> None:
    vm = RouterVM(name=f"pvd{os.getpid() % 10000}", image=router_image, direct_kernel=False)
    try:
        vm.up()
        seconds = vm.wait_ssh()
        print(f"\nstandalone disk boot to SSH under TCG: {seconds:.0f} s")
        cmdline = vm.ssh("cat /proc/cmdline").stdout
        # extlinux names the image it loaded; QEMU's -kernel does not.
        assert "BOOT_IMAGE=/boot/vmlinuz-" in cmdline, cmdline
        assert "root=LABEL=plaza-root" in cmdline and "net.ifnames=0" in cmdline, cmdline
        mounts = vm.ssh("findmnt -n -o SOURCE,FSTYPE /").stdout.split()
        assert mounts == ["/dev/vda1", "ext4"], mounts
    finally:
        vm.down()
