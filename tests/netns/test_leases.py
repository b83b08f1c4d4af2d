"""dnsmasq's leases reach the daemon through its lease file (gateway/stations/lease_watch.py),
on the real kernel with the lab's real dnsmasq and DHCP clients: no process per DHCP event."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.stations import dnsmasq
from lab.topology import Lab, nsexec
from tests.netns.conftest import running_lab
from tests.promtext import Parsed, parse

pytestmark = pytest.mark.netns

METRICS_URL = "http://127.0.0.1:9100/metrics"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("l", phones=1) as lab:
        yield lab


def lease_events(lab: Lab) -> Parsed:
    page = parse(nsexec(lab.state.router, "curl", "-sS", "--fail", "--max-time", "5", METRICS_URL))
    requests = page["plaza_control_requests_total"].samples
    # nothing sent a lease over the control socket: no hook ran
    assert not [labels for _, labels in requests if ("op", "lease") in labels]
    return page["plaza_lease_events_total"]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_dnsmasq_runs_no_script_and_the_phone_is_learned_from_the_file(lab: Lab) -> None:
    conf = (lab.router_dir / "plaza-dnsmasq.conf").read_text()
    assert "dhcp-script" not in conf
    leasefile = dnsmasq.lease_file(lab.gateway_config())
    assert f"dhcp-leasefile={leasefile}" in conf
    (phone,) = lab.state.phones
    assert phone.mac in Path(leasefile).read_text()
    seen = lab.control().client(phone.mac)
    assert (seen["ip"], seen["hostname"], seen["state"]) == (phone.ipv4, phone.name, "captive")
    events = lease_events(lab)
    assert events.value(action="add") + events.value(action="old") >= 1


def test_a_released_lease_is_a_departure_and_the_new_one_a_join(lab: Lab) -> None:
    """The phone rejoins with a new MAC (udhcpc -R releases the old lease): dnsmasq drops the
    old line, the daemon reads a `del` and re-probes the old MAC, which no longer answers, so
    that station leaves; the new MAC's lease is read with its host name."""
    (phone,) = lab.state.phones
    old_mac = phone.mac
    released = lease_events(lab).value(action="del")
    phone = lab.rejoin_with_new_mac(phone.name, "02:50:4c:00:0a:01")
    seen = lab.control().client(phone.mac)
    assert (seen["ip"], seen["hostname"]) == (phone.ipv4, phone.name)
    wait_for(lambda: lease_events(lab).value(action="del") > released, 10, "the release")

    def gone() -> bool:
        return old_mac not in {c["mac"] for c in lab.control().clients()}

    wait_for(gone, 20, "the old MAC's station to leave after its failed re-probe")
