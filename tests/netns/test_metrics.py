"""The router's Prometheus endpoint and structured logs, on the real kernel.

A phone logs in with the wallet; then the metrics are scraped from inside the router's
namespace (the endpoint listens on the router's loopback only) and the daemon's and portal's
logs are read back: logfmt lines, and the OAuth code of that login nowhere in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from lab import shopper
from lab.phone import Phone
from lab.topology import Lab, nsexec
from tests.netns.conftest import running_lab
from tests.promtext import parse

pytestmark = pytest.mark.netns

METRICS_URL = "http://127.0.0.1:9100/metrics"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("x", phones=1) as lab:
        yield lab


def scrape(lab: Lab) -> str:
    return nsexec(lab.state.router, "curl", "-sS", "--fail", "--max-time", "5", METRICS_URL)


def test_metrics_after_a_wallet_login(lab: Lab) -> None:
    before = parse(scrape(lab))
    assert before["plaza_clients"].value(state="authorized") == 0
    assert before["plaza_clients"].value(state="captive") == 1
    assert before["plaza_garden_inspector_up"].value() == 1
    assert before["plaza_garden_names"].value(source="router") == 1  # the wallet's host
    assert before["plaza_garden_names"].value(source="cloud") == 0
    assert before["plaza_dnsmasq_restarts_total"].value(result="ok") == 0

    phone = Phone(lab.netns_of("phone1"))
    try:
        portal = lab.status()["portal_url"]
        callback = shopper.approve_login(phone, shopper.start_login(phone, portal), portal)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        shopper.finish_login(phone, portal, callback)  # raises unless 303 to /welcome
    finally:
        phone.close()

    text = scrape(lab)
    assert 'plaza_clients{state="authorized"} 1\n' in text
    page = parse(text)
    auth = page["plaza_authorize_duration_seconds"]
    assert auth.value("_count") >= 1 and auth.value("_sum") > 0
    assert page["plaza_control_requests_total"].value(op="auth", outcome="ok") >= 1
    leases = page["plaza_lease_events_total"]  # read from dnsmasq's lease file
    assert leases.value(action="add") + leases.value(action="old") >= 1
    verdicts = page["plaza_garden_verdicts_total"]
    assert verdicts.value(verdict="allow", reason="garden") >= 1  # the captive trip to the wallet
    assert "plaza_garden_queue_dropped_total" in page  # the kernel's queue counters are read
    assert page["process_resident_memory_bytes"].value() > 0  # the budget is a bench's job
    assert page["process_open_fds"].value() > 0

    lab.control().deauth(lab.state.phones[0].mac)
    page = parse(scrape(lab))
    assert page["plaza_sessions_ended_total"].value(reason="admin") == 1
    assert page["plaza_clients"].value(state="authorized") == 0

    # Structured, one line per event, and the login's OAuth code in neither log.
    gateway_log = (lab.run_dir / "router-gateway.log").read_text()
    portal_log = (lab.run_dir / "router-portal.log").read_text()
    assert f'level=info logger=plaza.daemon msg="metrics at {METRICS_URL}"' in gateway_log
    assert 'logger=plaza.gateway msg="authorized ' in gateway_log
    assert "level=info logger=plaza.portal " in portal_log
    assert code not in gateway_log and code not in portal_log


def test_metrics_listen_only_on_the_routers_loopback(lab: Lab) -> None:
    """Phones cannot scrape the router (nothing about the venue leaks to shoppers)."""
    phone = Phone(lab.netns_of("phone1"))
    try:
        r = phone.get("http://198.19.0.1:9100/metrics", timeout=3)
        assert not r.ok
    finally:
        phone.close()
