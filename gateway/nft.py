"""Kernel firewall backends: libnftables in-process, and an in-memory fake for unit tests.

libnftables is called through ctypes rather than by spawning `nft`: an element add then costs
tens of microseconds instead of a fork+exec of several milliseconds, which is what keeps
authorize latency flat. The library ships with nftables itself (Debian: libnftables1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Protocol

from gateway import ruleset
from gateway.config import Config
from gateway.ruleset import Element


class NftError(RuntimeError):
    """nft refused a command; the message is nft's own first error line."""


class Firewall(Protocol):
    """What the daemon needs of the kernel; one real and one fake implementation."""

    def apply(self, config: Config, clients: list[Element]) -> None: ...
    def allow(self, clients: list[Element]) -> None: ...
    def revoke(self, clients: list[Element]) -> None: ...
    def allowed(self) -> set[Element]: ...
    def present(self) -> bool: ...


class Libnftables:
    """Minimal binding of the libnftables C API (nft_ctx_new / nft_run_cmd_from_buffer)."""

    NFT_CTX_OUTPUT_JSON = 1 << 4

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
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lock = threading.Lock()

    def run(self, commands: str, json_output: bool = False) -> str:
        with self._lock:
            flags = self.NFT_CTX_OUTPUT_JSON if json_output else 0
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            first = next((line for line in err.splitlines() if line.strip()), "unknown error")
            raise NftError(first)
        return out


class NftFirewall:
    """The real kernel, through libnftables, in the caller's network namespace."""

    def __init__(self, nft: Libnftables | None = None) -> None:
        self.nft = nft or Libnftables()

    def apply(self, config: Config, clients: list[Element]) -> None:
        """Replace the table; walled-garden addresses learned from DNS are carried over with
        their remaining lifetime (dnsmasq answers from its cache without re-adding them)."""
        garden: list = []
        for name in (ruleset.GARDEN4, ruleset.GARDEN6):
            try:
                out = self.nft.run(
                    f"list set {ruleset.FAMILY} {ruleset.TABLE} {name}", json_output=True
                )
            except NftError:
                continue  # no table yet (first start) or an older table without the set
            garden += ruleset.garden_elements(out)
        self.nft.run(ruleset.transaction(config, clients, garden))

    def allow(self, clients: list[Element]) -> None:
        if clients:
            self.nft.run(ruleset.element_command("add", clients))

    def revoke(self, clients: list[Element]) -> None:
        # One element at a time so an element that is already gone does not abort the others.
        for client in clients:
            try:
                self.nft.run(ruleset.element_command("delete", [client]))
            except NftError as exc:
                if "No such file or directory" not in str(exc):
                    raise

    def allowed(self) -> set[Element]:
        found: set[Element] = set()
        for name in (ruleset.SET4, ruleset.SET6):
            out = self.nft.run(
                f"list set {ruleset.FAMILY} {ruleset.TABLE} {name}", json_output=True
            )
            for item in json.loads(out)["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    ip, mac = elem["concat"]
                    found.add((ip, mac))
        return found

    def present(self) -> bool:
        try:
            self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}")
        except NftError:
            return False
        return True

    def listing(self) -> str:
        return self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}")


class FakeFirewall:
    """In-memory stand-in with the same contract, so policy tests need neither root nor kernel."""

    def __init__(self) -> None:
        self.table: str | None = None
        self.elements: set[Element] = set()
        self.calls: list[tuple[str, tuple[Element, ...]]] = []

    def apply(self, config: Config, clients: list[Element]) -> None:
        self.table = ruleset.render(config, clients)
        self.elements = set(clients)
        self.calls.append(("apply", tuple(sorted(clients))))

    def allow(self, clients: list[Element]) -> None:
        self.elements.update(clients)
        self.calls.append(("allow", tuple(clients)))

    def revoke(self, clients: list[Element]) -> None:
        self.elements.difference_update(clients)
        self.calls.append(("revoke", tuple(clients)))

    def allowed(self) -> set[Element]:
        return set(self.elements)

    def present(self) -> bool:
        return self.table is not None
