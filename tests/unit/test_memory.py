"""gateway/ops/memory.py on this machine's glibc: a freed big block must not pull the next ones
into the heap (the dynamic mmap threshold that made the daemon's memory creep under churn)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import ctypes, sys
from gateway.ops import memory
if sys.argv[1] == "configure":
    assert memory.configure()
size = 1 << 20
first = bytearray(size)
del first  # glibc: freeing an mmapped block raises a dynamic threshold to its size
second = bytearray(size)
address = ctypes.addressof((ctypes.c_char * size).from_buffer(second))
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        print("heap" if low <= address < high else "mapping")
        break
else:
    print("mapping")
"""


def where_the_second_block_lands(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.strip()


def test_big_blocks_keep_their_own_mappings_after_configure() -> None:
    # The premise: glibc's default moves the second 1 MiB block into the heap ...
    assert where_the_second_block_lands("default") == "heap"
    # ... and the daemon's setting keeps it in a mapping of its own, given back when freed.
    assert where_the_second_block_lands("configure") == "mapping"
