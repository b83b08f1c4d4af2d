"""`plaza-lab vm ...`: the VM lab's commands (lab/vagrant_lab.py, lab/vagrant_scenarios.py),
each printing what it did."""

from __future__ import annotations

import sys
import time

from lab import libvirt
from lab.vagrant_lab import VMLab, VMLabError
from lab.vagrant_scenarios import SCENARIOS

ACTIONS = ("up", *SCENARIOS, "down", "status")


def main(action: str, phones: int, everything: bool = False) -> int:
    lab = VMLab(phones=phones, out=lambda s: print(s, flush=True))
    try:
        if action == "up":
            times = lab.up()
            for stage, seconds in times.items():
                print(f"  {stage:22} {seconds:6.1f} s")
            print("VM lab up: plaza-lab vm demo|outage|crash|roam|browser; log in with "
                  "`python -m lab.libvirt vagrant ssh router` (or phone1 ...)")  # fmt: skip
        elif action in SCENARIOS:
            from lab import vagrant_scenarios

            t0 = time.monotonic()
            ok = vagrant_scenarios.run(action, lab)
            print(f"vm {action}: {time.monotonic() - t0:.1f} s")
            return 0 if ok else 1
        elif action == "down":
            left = lab.down(everything=everything)
            held = {k: v for k, v in left.items() if v}
            print(f"VM lab down; libvirt still holds: {held or 'nothing'}")
            return 1 if everything and held else 0
        elif action == "status":
            return libvirt.main(["status"])
    except (VMLabError, libvirt.LibvirtError) as exc:
        print(f"plaza-lab vm {action}: {exc}", file=sys.stderr)
        return 1
    return 0
