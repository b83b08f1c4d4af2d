"""The pure-Python NFQUEUE reader (gateway/dataplane/nfq_netlink.py, what the daemon uses where
the netfilterqueue C extension is missing, as on OpenWrt) against the real kernel, in a fresh
network namespace: bind with fail-open, read a queued packet's payload, accept it with a mark
the kernel then matches, drop another, one verdict per packet, unbind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns
PROBE = Path(__file__).with_name("nfq_netlink_probe.py")


def test_queue_over_plain_netlink() -> None:
    if os.geteuid() != 0:
        pytest.skip("network-namespace tests need root (CI runs them as root)")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(PROBE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "bound",
        "payload plaza-accept 40",
        "mark 0",
        "received plaza-accept",
        "marked 1",
        "dropped",
        "one verdict",
        "unbound",
    ], done.stdout + done.stderr
