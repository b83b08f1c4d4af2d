"""Kernel firewall backends: libnftables in-process, and an in-memory fake for unit tests.

libnftables is called through ctypes rather than by spawning `nft`: an element add then costs
tens of microseconds instead of a fork+exec of several milliseconds, which is what keeps
authorize latency flat. The library ships with nftables itself (Debian: libnftables1).

Reads (clients, counters, quotas) use libnftables' JSON output, never `nft list` text: the one
exception is the table's structure fingerprint, a comment that 1.0.x only prints as text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Protocol

from gateway import ruleset
from gateway.accounting import Quota, Reading, Usage
from gateway.config import Config
from gateway.ruleset import Changes, Element, Grant, KernelState, Start


class NftError(RuntimeError):
    """nft refused a command; the message is nft's own first error line."""


class Firewall(Protocol):
    """What the daemon needs of the kernel; one real and one fake implementation."""

    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None: ...
    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None: ...
    def state(self) -> KernelState: ...
    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]: ...
    def allowed(self) -> set[Element]: ...
    def present(self) -> bool: ...
    def current(self, config: Config) -> bool: ...


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
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lock = threading.Lock()

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


def json_documents(text: str) -> list[dict]:
    """Several list commands in one call answer with one JSON document each, back to back."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def _merged(text: str) -> str:
    """One `{"nftables": [...]}` document out of several."""
    items = [item for doc in json_documents(text) for item in doc.get("nftables", [])]
    return json.dumps({"nftables": items})


class NftFirewall:
    """The real kernel, through libnftables, in the caller's network namespace."""

    def __init__(self, nft: Libnftables | None = None) -> None:
        self.nft = nft or Libnftables()

    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        """Replace the table; walled-garden addresses learned from DNS are carried over with
        their remaining lifetime (dnsmasq answers from its cache without re-adding them), and
        session counters from `start` (the caller read them just before)."""
        garden: dict[str, list] = {}
        for name, _kind in ruleset.GARDEN_SETS:
            try:
                out = self.nft.run(
                    f"list set {ruleset.FAMILY} {ruleset.TABLE} {name}", json_output=True
                )
            except NftError:
                continue  # no table yet (first start) or an older table without the set
            garden[name] = ruleset.garden_elements(out)
        self.nft.run(ruleset.transaction(config, grants, garden, start))

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        """Apply element and object changes in one transaction (all or nothing)."""
        if changes:
            self.nft.run(ruleset.change_commands(changes, start))

    def state(self) -> KernelState:
        """The client sets, maps and objects (the garden sets, large, are not read). One call
        per listing: nft 1.0.6 loses its cache when one buffer lists sets and maps together."""
        where = f"{ruleset.FAMILY} {ruleset.TABLE}"
        cmds = [f"list set {where} {n}" for n in (ruleset.SET4, ruleset.SET6)]
        cmds += [f"list map {where} {stem}{f}" for stem in ruleset.POLICY_MAPS for f in "46"]
        cmds += [f"list {kind} table {where}" for kind in ("counters", "quotas", "limits")]
        out = "".join(self.nft.run(cmd, json_output=True) for cmd in cmds)
        return ruleset.parse_state(_merged(out))

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        """Counters and quotas per session: all of them, or only those of `sessions` (a
        session's end reads its own objects, not ten thousand others)."""
        where = f"{ruleset.FAMILY} {ruleset.TABLE}"
        if sessions is not None:
            cmds = []
            for grant in sessions:
                for kind, name in ruleset.grant_objects(grant):
                    if kind != "limit":
                        cmds.append(f"list {kind} {where} {name}")
            if not cmds:
                return {}
            try:
                out = _merged(self.nft.run("\n".join(cmds), json_output=True))
            except NftError:
                pass  # an object is missing (drift): read everything instead
            else:
                return ruleset.parse_readings(out, out)
        counters = self.nft.run(f"list counters table {where}", json_output=True)
        quotas = self.nft.run(f"list quotas table {where}", json_output=True)
        return ruleset.parse_readings(counters, quotas)

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
            self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}", terse=True)
        except NftError:
            return False
        return True

    def current(self, config: Config) -> bool:
        """The kernel's table has the structure `config` renders (same fingerprint)."""
        try:
            listing = self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}", terse=True)
        except NftError:
            return False
        have = ruleset.fingerprint(listing)
        return have is not None and have == ruleset.fingerprint(ruleset.render(config))

    def listing(self) -> str:
        return self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}")


class FakeFirewall:
    """In-memory stand-in with the same contract, so policy tests need neither root nor kernel.

    It models what the gateway relies on: client elements and objects with the kernel's
    transaction rules (a change that deletes what is missing, or re-points a key, fails whole),
    counters that carry initial values, and quotas that drop traffic once used up. `traffic()`
    plays packets through a client's policy as `client_up` / `client_down` would.
    """

    def __init__(self) -> None:
        self.table: str | None = None
        self.elements: set[ruleset.Triple] = set()
        self.objects: dict[ruleset.ObjectKey, ruleset.Spec] = {}
        self.counters: dict[str, list[int]] = {}  # name -> [packets, bytes]
        self.quota_used: dict[str, int] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.fail_next: str | None = None  # an NftError message for the next change

    # -- the Firewall contract -------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        self.table = ruleset.render(config)
        self.elements, self.objects = set(), {}
        self.counters, self.quota_used = {}, {}
        self._commit(ruleset.diff(ruleset.desired(grants), KernelState()), start or {})
        self.calls.append(("apply", tuple(sorted(e for g in grants for e in g.elements()))))

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        if self.table is None:
            raise NftError("Error: No such file or directory; did you mean table 'plaza'?")
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise NftError(message)
        self._check(changes)
        self._commit(changes, start or {})
        self.calls.append(("change", (changes.del_elements, changes.add_elements)))

    def state(self) -> KernelState:
        return KernelState(frozenset(self.elements), dict(self.objects))

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        wanted = None if sessions is None else {g.session for g in sessions}
        usage: dict[str, dict[str, int]] = {}
        quotas: dict[str, dict[str, Quota]] = {}
        for (kind, name), spec in self.objects.items():
            prefix, _, session = name.partition("_")
            if wanted is not None and session not in wanted:
                continue
            if kind == "counter":
                packets, count = self.counters[name]
                usage.setdefault(session, {}).update(
                    {f"bytes_{prefix}": count, f"packets_{prefix}": packets}
                )
            elif kind == "quota":
                what = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}[prefix]
                quotas.setdefault(session, {})[what] = Quota(spec[0], self.quota_used[name])
        return {
            s: Reading(Usage(**usage.get(s, {})), quotas.get(s, {}))
            for s in usage.keys() | quotas.keys()
        }

    def allowed(self) -> set[Element]:
        return {
            (key.split(" . ")[0], key.split(" . ")[1])
            for name, key, _ in self.elements
            if name in (ruleset.SET4, ruleset.SET6)
        }

    def present(self) -> bool:
        return self.table is not None

    def current(self, config: Config) -> bool:
        return self.table == ruleset.render(config)

    # -- test helpers ----------------------------------------------------------------------
    def flush(self) -> None:
        """The table vanished (someone ran `nft flush ruleset`)."""
        self.table = None
        self.elements, self.objects, self.counters, self.quota_used = set(), {}, {}, {}

    def traffic(self, ip: str, mac: str, up: int = 0, down: int = 0, size: int = 1000) -> int:
        """Send `up` bytes from and `down` bytes to a client in packets of `size` bytes;
        returns the bytes that got through (quotas drop the rest)."""
        passed = 0
        f = "6" if ":" in ip else "4"
        authorized = any(n.startswith("auth") and k == f"{ip} . {mac}" for n, k, _ in self.elements)
        for direction, amount, key in (("up", up, f"{ip} . {mac}"), ("down", down, ip)):
            if direction == "up" and not authorized:
                continue  # lan_forward rejects it
            while amount > 0:
                length = min(size, amount)
                amount -= length
                if self._dropped_by_quota(direction, f, key, length):
                    continue
                counter = self._target(f"cnt_{direction}{f}", key)
                if counter:
                    self.counters[counter][0] += 1
                    self.counters[counter][1] += length
                    passed += length
        return passed

    # -- internals -------------------------------------------------------------------------
    def _target(self, map_name: str, key: str) -> str | None:
        return next((v for n, k, v in self.elements if n == map_name and k == key), None)

    def _dropped_by_quota(self, direction: str, f: str, key: str, length: int) -> bool:
        for stem in (f"quota_{direction}", f"quota_total_{direction}"):
            name = self._target(f"{stem}{f}", key)
            if name:
                self.quota_used[name] += length
                if self.quota_used[name] >= self.objects[("quota", name)][0]:
                    return True  # `quota over`: the packet that crosses the line goes too
        return False

    def _check(self, changes: Changes) -> None:
        elements = set(self.elements)
        for e in changes.del_elements:
            match = next((x for x in elements if x[:2] == e[:2]), None)
            if match is None:
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.discard(match)
        objects = set(self.objects)
        for key in changes.del_objects:
            if key not in objects:
                raise NftError("Error: Could not process rule: No such file or directory")
            if any(e[2] == key[1] for e in elements):
                raise NftError("Error: Could not process rule: Device or resource busy")
            objects.discard(key)
        objects |= {key for key, _ in changes.add_objects}
        for e in changes.add_elements:
            old = next((x for x in elements if x[:2] == e[:2]), None)
            if old is not None and old != e:
                raise NftError("Error: Could not process rule: File exists")
            if e[2] is not None and not any(k[1] == e[2] for k in objects):
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.add(e)

    def _commit(self, changes: Changes, start: Mapping[str, Start]) -> None:
        for e in changes.del_elements:
            self.elements = {x for x in self.elements if x[:2] != e[:2]}
        for key in changes.del_objects:
            self.objects.pop(key, None)
            self.counters.pop(key[1], None)
            self.quota_used.pop(key[1], None)
        for key, spec in changes.add_objects:
            kind, name = key
            prefix, _, session = name.partition("_")
            begin = start.get(session, Start())
            exists = key in self.objects
            self.objects[key] = spec
            if exists:
                continue  # a quota resized in place keeps what it used
            if kind == "counter":
                u = begin.usage
                self.counters[name] = (
                    [u.packets_up, u.bytes_up] if prefix == "up" else [u.packets_down, u.bytes_down]
                )
            elif kind == "quota":
                what = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}[prefix]
                self.quota_used[name] = begin.quota_used.get(what, 0)
        self.elements |= set(changes.add_elements)
