"""The daemon's memory footprint: glibc malloc settings and giving freed memory back.

Python objects larger than 512 bytes (dict and set tables, big bytes and lists) and every C
library (libnftables, SQLite) allocate with glibc's malloc. Two of its defaults cost a
long-running daemon with worker threads tens of megabytes for nothing:
- each thread that allocates gets an arena of its own (up to 8 per core), and memory freed in
  one arena is never reused by another thread: the worker's big kernel reads and the daemon
  thread's own allocations would each keep a high-water mark;
- freed memory in the middle of the heap goes back to the kernel only on `malloc_trim`.
So the daemon uses one arena (its threads take turns on the GIL anyway) and trims after the
rare big transients (a table load through libnftables, a big listing). Elsewhere than glibc
(musl on OpenWrt) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("plaza.memory")

M_ARENA_MAX = -8  # mallopt() parameter (malloc.h)

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


def one_arena() -> bool:
    """Make every thread allocate from the main arena (call before starting threads)."""
    lib = _glibc()
    return bool(lib and lib.mallopt(M_ARENA_MAX, 1))


def trim() -> None:
    """Give free heap memory back to the kernel (a few ms at most)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
