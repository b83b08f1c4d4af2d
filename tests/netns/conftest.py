"""Network-namespace fixtures: a lab with a unique name, always torn down.

These need root (CI runs as root). They are not skipped there: only a non-root developer run
skips them, with the reason shown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.phone import Phone
from lab.topology import Lab

pytestmark = pytest.mark.netns


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network-namespace tests need root (CI runs them as root)")


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@contextlib.contextmanager
def running_lab(prefix: str = "t", **up: Any) -> Iterator[Lab]:
    """A lab with a unique name, brought up with `up` and always taken down."""
    _need_root()
    lab = Lab(unique_name(prefix))
    try:
        lab.up(**up)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(phones=2) as lab:
        yield lab


@pytest.fixture
def fresh(lab: Lab) -> Lab:
    """Every test starts with every phone captive."""
    control = lab.control()
    for client in control.clients():
        if client["state"] == "authorized":
            control.deauth(client["mac"])
    return lab


@pytest.fixture
def phone1(lab: Lab) -> Iterator[Phone]:
    phone = Phone(lab.netns_of("phone1"))
    yield phone
    phone.close()


@pytest.fixture
def phone2(lab: Lab) -> Iterator[Phone]:
    phone = Phone(lab.netns_of("phone2"))
    yield phone
    phone.close()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `predicate` until it returns something true (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
