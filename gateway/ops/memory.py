"""The daemon's memory footprint: glibc malloc settings and giving freed memory back.

Python objects larger than 512 bytes (dict and set tables, big bytes and lists) and every C
library (libnftables, SQLite) allocate with glibc's malloc. Three of its defaults cost a
long-running daemon with worker threads megabytes for nothing:
- each thread that allocates gets an arena of its own (up to 8 per core), and memory freed in
  one arena is never reused by another thread: the worker's big kernel reads and the daemon
  thread's own allocations would each keep a high-water mark;
- the mmap threshold is dynamic: blocks over 128 KiB start out as their own mappings (given
  back to the kernel when freed), but the first such block freed raises the threshold to its
  size, up to 32 MiB. From then on a 10,000-entry dict table (about 1 MiB) made by a
  comparison or a poll lands in the heap among long-lived small blocks, and the pages it
  leaves behind stay resident: under churn the daemon's heap rose by steps of a megabyte
  at full comparisons (bench/churn.py, 100,000 cycles: 55.2-55.6 MB at the end; with the
  threshold fixed at 128 KiB, 51.3-52.2 MB from 10,000 cycles on, bench/README.md);
- freed memory in the middle of the heap goes back to the kernel only on `malloc_trim`.
So the daemon uses one arena (its threads take turns on the GIL anyway), a fixed mmap
threshold, and trims after the rare big transients (a table load through libnftables, a big
listing). Elsewhere than glibc (musl on OpenWrt) all three are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("plaza.memory")

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt() parameters (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed

_libc: ctypes.CDLL | None = None
_looked = False


def _glibc() -> ctypes.CDLL | None:
    global _libc, _looked
    if not _looked:
        _looked = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc = lib
        except (OSError, AttributeError):
            _libc = None  # not glibc
    return _libc


def configure() -> bool:
    """Make every thread allocate from the main arena and keep big blocks in mappings of
    their own (call before starting threads). False where this is not glibc."""
    lib = _glibc()
    if lib is None:
        return False
    arenas = lib.mallopt(M_ARENA_MAX, 1)
    threshold = lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(arenas and threshold)


def trim() -> None:
    """Give free heap memory back to the kernel (a few ms at most)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
