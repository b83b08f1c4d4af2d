"""What can go wrong while provisioning a router, as one exception with the exit code the
technician's shell (and the batch runner, and the VM test) sees.

The codes are part of the interface (README "Field technician"): a script may branch on them,
so a code keeps its meaning once published.
"""

from __future__ import annotations

OK = 0
CHECK_FAILED = 1  # verify: at least one check failed
USAGE = 2  # bad arguments or input files (argparse uses 2 as well)
UNREACHABLE = 3  # host unreachable, SSH key refused, host key changed
INSTALL_FAILED = 4  # the package did not install; the previous version is still installed
CONFIG_REFUSED = 5  # the new config failed check-config or was rolled back; the old one stays
CLAIM_REFUSED = 6  # the cloud refused the claim code (unknown, used, expired)
CLOUD_UNREACHABLE = 7  # the router (or this laptop) could not reach the cloud
DISK_FULL = 8  # not enough free space on the router for the package
HALF_DONE = 9  # the router is in a state that needs a person (see the message)
MISSING_DEPENDENCY = 10  # this laptop lacks a library (`rich`) for the progress display

NAMES = {
    OK: "ok",
    CHECK_FAILED: "check failed",
    USAGE: "usage",
    UNREACHABLE: "unreachable",
    INSTALL_FAILED: "install failed",
    CONFIG_REFUSED: "config refused",
    CLAIM_REFUSED: "claim refused",
    CLOUD_UNREACHABLE: "cloud unreachable",
    DISK_FULL: "disk full",
    HALF_DONE: "needs attention",
    MISSING_DEPENDENCY: "missing dependency",
}


class ProvisionError(Exception):
    """A step that cannot go on: `message` says what happened, `hint` what to do about it."""

    def __init__(self, code: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
