"""The libnftables binding: nft's own parser and cache, in-process, for what is rare.

libnftables is called through ctypes rather than by spawning `nft`: a command then costs what
nft's work costs, not a fork+exec of several milliseconds. The library ships with nftables
itself (Debian: libnftables1). What runs often (client elements and objects, counter reads,
the reconciler's listing) goes over netlink instead (gateway/dataplane/netlink.py):
libnftables fills its cache with the whole table before every command, which at 10,000
clients cost ~35 ms per element add. What stays here is replacing the whole table and
reading the walled-garden sets into it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from gateway.dataplane.firewall import NftError


class Libnftables:
    """Minimal binding of the libnftables C API (nft_ctx_new / nft_run_cmd_from_buffer)."""

    NFT_CTX_OUTPUT_JSON = 1 << 4
    NFT_CTX_OUTPUT_TERSE = 1 << 11  # leave set elements out of listings

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise NftError(
                f"libnftables not found ({exc}); install nftables/libnftables1"
            ) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = self._new()
        self._lock = threading.Lock()

    def _new(self) -> int:
        ctx = self._lib.nft_ctx_new(0)
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        return ctx

    def release(self) -> None:
        """Drop the context's cache. libnftables keeps, between commands, its copy of every
        table it had to read: after a table load or listing at 10,000 clients that is ~45 MB
        of C memory (every element and object) held for as long as the context lives. Every
        frequent kernel operation goes over netlink instead (`NfNetlink`), so the rare
        libnftables call starts from an empty cache and the memory goes back after it."""
        from gateway.ops import memory

        with self._lock:
            old, self._ctx = self._ctx, self._new()
            self._lib.nft_ctx_free(old)
        memory.trim()

    def run(self, commands: str, json_output: bool = False, terse: bool = False) -> str:
        with self._lock:
            flags = self.NFT_CTX_OUTPUT_JSON if json_output else 0
            flags |= self.NFT_CTX_OUTPUT_TERSE if terse else 0
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            first = next((line for line in err.splitlines() if line.strip()), "unknown error")
            raise NftError(first)
        return out
