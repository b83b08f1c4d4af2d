"""What the gateway and the daemon need of the kernel's firewall, and the error it raises.

The contract lives apart from the kernel implementation (gateway/dataplane/kernel.py) so that
the gateway, the daemon and a test double depend on these few lines, not on ctypes and
netlink sockets; and so that the binding (libnft.py) and the codec (netlink.py), which raise
`NftError` too, sit below the implementation that uses them without an import circle.

Every method and attribute the daemon or the gateway uses on a firewall is declared here:
nothing is probed with `hasattr`. tests/unit/test_firewall_protocol.py checks that what
they call is declared, and that the kernel's class and the test double both implement it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.dataplane.ruleset import Changes, Element, Grant, KernelState, Start
    from gateway.stations.accounting import Reading


class NftError(RuntimeError):
    """nft refused a command; the message is nft's own first error line."""


class FirewallSnapshot(Protocol):
    """A big read (every counter, or a comparison of the whole client state) that the daemon
    runs in a worker thread while its own thread keeps answering logins.

    `with firewall.snapshot() as snap:` on the daemon's thread starts a journal of what the
    firewall commits meanwhile; `snap.read_readings()` or `snap.read_drift(grants)` run in
    the worker; back on the daemon's thread, `install()` hands the readings to the next
    `readings()` call and `repair()` says what is left to put right."""

    seconds: float  # what the read (and comparison) took in the worker

    def __enter__(self) -> FirewallSnapshot: ...
    def __exit__(self, *exc: object) -> None: ...
    def read_readings(self) -> None: ...
    def read_drift(self, grants: list[Grant]) -> None: ...
    def repair(self) -> Changes | None: ...
    def install(self) -> None: ...


class Firewall(Protocol):
    """What the daemon and the gateway need of the kernel: the kernel's own
    (gateway/dataplane/kernel.py NftFirewall) and an in-memory one for tests."""

    commits: int  # transactions this process committed (with `generation`: anyone else's?)

    # -- changes ---------------------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None: ...
    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None: ...
    def own_commit(self) -> None: ...

    # -- reads -----------------------------------------------------------------------------
    def present(self) -> bool: ...
    def current(self, config: Config) -> bool: ...
    def state(self) -> KernelState: ...
    def drift(self, grants: Iterable[Grant]) -> Changes: ...
    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]: ...
    def allowed(self) -> set[Element]: ...
    def generation(self) -> int: ...
    def snapshot(self) -> FirewallSnapshot: ...
