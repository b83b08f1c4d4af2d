"""The walled garden on the real kernel: dnsmasq fills the sets, SNI decides, once per connection.

The lab's wallet address (192.0.2.20, and 2001:db8:2::20 over IPv6) serves wallet.test, which
is in the garden, and cdn-neighbour.test, which is not: same address, so only the SNI check can
tell them apart. Until the lab runs the sandbox wallet there, this module serves both names
itself (over IPv4 only). The cases that hold in both families are parametrized over `fam`;
the phone's curl is pinned to the family (-4 / -6), or happy eyeballs would pick one for it.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gateway.dataplane import ruleset
from gateway.garden.queue import xt_rule
from lab.phone import Phone
from lab.topology import (
    WALLET_IP,
    WALLET_IP6,
    WALLET_IP_HOSTS,
    WEB_IP,
    WEB_IP6,
    Lab,
    _tcp_open,
    _wait_for,
    ipv6_of,
    nsexec,
)
from tests.netns.conftest import running_lab

pytestmark = pytest.mark.netns

WALLET = "https://wallet.test/"


@dataclass(frozen=True)
class Fam:
    name: str
    wallet: str
    web: str
    curl: tuple[str, ...]  # curl: this family only
    garden: str  # the garden set dnsmasq fills for this family
    prohibited: int  # errno of the router's ICMP refusal (admin-prohibited)

    @property
    def neighbour(self) -> tuple[str, ...]:
        """curl: cdn-neighbour.test at the wallet's address (no DNS name points there)."""
        host = f"[{self.wallet}]" if ":" in self.wallet else self.wallet
        return (*self.curl, "--resolve", f"cdn-neighbour.test:443:{host}")


FAMS = {
    "ipv4": Fam("ipv4", WALLET_IP, WEB_IP, ("-4",), ruleset.GARDEN4, errno.EHOSTUNREACH),
    "ipv6": Fam("ipv6", WALLET_IP6, WEB_IP6, ("-6",), ruleset.GARDEN6, errno.EACCES),
}
RESET = (35, 56)  # curl: TLS connect error / receive failure, both "Connection reset by peer"

# Handshakes in the worker threads: a refused connection stays half-open at the server (the
# reset goes to the phone only), and must not stall accept() for the next one.
SERVER = """
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("GARDEN-OK " + self.headers.get("Host", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def process_request_thread(self, request, client_address):
        try:
            request.settimeout(5)
            request.do_handshake()
        except OSError:
            return self.shutdown_request(request)
        super().process_request_thread(request, client_address)
server = Server((sys.argv[1], 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
server.serve_forever()
"""

# Sends the first bytes of a TCP connection to WALLET_IP:443 by hand: a real ClientHello
# (optionally split in two segments, or cut short) or raw bytes; prints how the server end
# answered: "reply <first byte>" or "error <errno>", and how long that took.
CLIENT = """
import socket, ssl, sys, time
mode, arg, cut, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if mode == "hello":
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=arg)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
else:
    data = arg.encode()
s = socket.create_connection((sys.argv[5], 443), timeout=8)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(data[:cut])
if pause >= 0:
    time.sleep(pause)
    s.sendall(data[cut:])
start = time.monotonic()
try:
    got = s.recv(5)
    print("reply", got[:1].hex() or "eof", round(time.monotonic() - start, 2))
except OSError as exc:
    print("error", exc.errno, round(time.monotonic() - start, 2))
"""

UDP = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"\\x00" * 48)
try:
    s.recv(100)
    print("reply")
except OSError as exc:
    print("error", exc.errno)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("g", phones=1) as lab:
        yield lab


@pytest.fixture(scope="module")
def own_server(lab: Lab) -> bool:
    """Serve wallet.test and cdn-neighbour.test on the wallet address, unless the lab does."""
    inet = lab.state.internet
    if _tcp_open(inet, WALLET_IP, 443):
        return False
    cert, key = lab.ca.issue("garden-test", list(WALLET_IP_HOSTS))
    lab.spawn("garden-test-tls", inet, sys.executable, "-c", SERVER, WALLET_IP, str(cert), str(key))
    _wait_for(lambda: _tcp_open(inet, WALLET_IP, 443), 10, "the garden test server")
    return True


@pytest.fixture(params=list(FAMS))
def fam(request: pytest.FixtureRequest) -> Fam:
    return FAMS[request.param]


@pytest.fixture
def phone(lab: Lab, own_server: bool) -> Iterator[Phone]:
    """A captive phone that has looked up wallet.test through the router, as a browser would
    (A and AAAA: dnsmasq fills both garden sets)."""
    control = lab.control()
    for client in control.clients():
        if client["state"] == "authorized":
            control.deauth(client["mac"])
    ns = lab.netns_of("phone1")
    _wait_for(lambda: ipv6_of(lab.state.phones[0]), 15, "phone1's SLAAC address")
    assert nsexec(ns, "getent", "ahostsv4", "wallet.test").split()[0] == WALLET_IP
    assert nsexec(ns, "getent", "ahostsv6", "wallet.test").split()[0] == WALLET_IP6
    phone = Phone(ns)
    yield phone
    phone.close()


def queued(lab: Lab) -> int:
    """Packets handed to the inspector so far (the kernel's id sequence for the queue)."""
    out = nsexec(lab.state.router, "cat", "/proc/net/netfilter/nfnetlink_queue")
    for line in out.splitlines():
        fields = line.split()
        if fields and int(fields[0]) == ruleset.QUEUE_NUM:
            return int(fields[7])
    return 0


def run_in(ns: str, script: str, *args: str) -> list[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.split()


def garden4(lab: Lab, name: str = ruleset.GARDEN4) -> str:
    return nsexec(lab.state.router, "nft", "list", "set", "inet", "plaza", name)


def expires(lab: Lab, ip: str, name: str = ruleset.GARDEN4) -> int:
    """Seconds until `ip` falls out of the garden set `name` (-1: not in it)."""
    out = nsexec(lab.state.router, "nft", "-j", "list", "set", "inet", "plaza", name)
    return dict(ruleset.garden_elements(out)).get(ip, -1)


def test_dhcp_lease_carries_the_captive_api_url(lab: Lab) -> None:
    """RFC 8910 option 114, as the phone's DHCP client received it."""
    raw = (lab.run_dir / "phone1.lease.opt114").read_text().strip()
    assert bytes.fromhex(raw).decode() == lab.gateway_config().portal.api_url
    assert lab.gateway_config().portal.api_url.startswith("https://")


def test_dnsmasq_fills_the_garden_set(lab: Lab, phone: Phone, fam: Fam) -> None:
    assert f"elements = {{ {fam.wallet} expires" in garden4(lab, fam.garden)
    assert fam.web not in garden4(lab, fam.garden)  # www.example.test was never in the garden


def test_captive_phone_reaches_the_wallet_with_one_queued_packet(
    lab: Lab, phone: Phone, fam: Fam
) -> None:
    before = queued(lab)
    r = phone.get(WALLET, extra=fam.curl)  # TLS verified against the lab CA, name and chain
    assert r.ok and r.status < 500, r
    assert queued(lab) - before == 1  # the ClientHello; the rest stays in the kernel
    tracked = nsexec(lab.state.router, "conntrack", "-L", "-f", fam.name, "-p", "tcp",
                     "-d", fam.wallet, "--dport", "443", check=False)  # fmt: skip
    assert f"mark={ruleset.MARK_ALLOW}" in tracked  # the verdict sticks to the connection


def test_neighbour_on_a_garden_address_is_refused_by_sni(lab: Lab, phone: Phone, fam: Fam) -> None:
    assert fam.wallet in garden4(lab, fam.garden)  # the address is in; only the name is wrong
    before = queued(lab)
    r = phone.get("https://cdn-neighbour.test/", extra=fam.neighbour, timeout=3)
    assert not r.ok and r.exit_code in RESET, r
    assert r.seconds < 1.0, "refusal must be a reset, not a timeout"
    assert queued(lab) - before == 1


def test_non_garden_site_is_reset_without_the_inspector(lab: Lab, phone: Phone, fam: Fam) -> None:
    before = queued(lab)
    r = phone.get("https://www.example.test/", timeout=3, extra=fam.curl)
    assert not r.ok and r.exit_code == 7 and r.seconds < 0.5, r  # RST to the SYN
    assert queued(lab) == before


def test_plain_http_is_redirected_to_the_portal(lab: Lab, phone: Phone, fam: Fam) -> None:
    r = phone.get("http://www.example.test/", extra=fam.curl)
    assert r.status == 302 and r.location == lab.status()["portal_url"], r
    assert "FAKE-INTERNET-OK" not in r.body


def test_garbage_instead_of_a_client_hello_is_refused(lab: Lab, phone: Phone, fam: Fam) -> None:
    out = run_in(phone.netns, CLIENT, "raw", "GET / HTTP/1.0\r\n\r\n", "100", "-1", fam.wallet)
    assert out[:2] == ["error", str(errno.ECONNRESET)], out


def test_client_hello_without_sni_is_refused(lab: Lab, phone: Phone) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", phone.netns, "openssl", "s_client", "-connect",
         f"{WALLET_IP}:443", "-noservername"],
        input="", capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "BEGIN CERTIFICATE" not in proc.stdout  # no ServerHello ever came back


def test_split_client_hello_is_reassembled(lab: Lab, phone: Phone, fam: Fam) -> None:
    """The name in the second segment: the first is held, then both go through."""
    before = queued(lab)
    out = run_in(phone.netns, CLIENT, "hello", "wallet.test", "60", "0.05", fam.wallet)
    assert out[:2] == ["reply", "16"], out  # a TLS handshake record: the ServerHello
    assert queued(lab) - before == 2


def test_client_hello_cut_short_is_refused_after_the_hold(lab: Lab, phone: Phone) -> None:
    out = run_in(phone.netns, CLIENT, "hello", "wallet.test", "60", "-1", WALLET_IP)
    assert out[:2] == ["error", str(errno.ECONNRESET)], out
    assert 1.0 < float(out[2]) < 5.0  # garden.HOLD_SECONDS, not the client's timeout


def test_quic_to_the_garden_gets_icmp_but_ntp_passes(lab: Lab, phone: Phone, fam: Fam) -> None:
    assert run_in(phone.netns, UDP, fam.wallet, "443") == ["error", str(fam.prohibited)]
    # nothing listens on the wallet's NTP port: the fake internet's own port-unreachable
    # (ECONNREFUSED) proves the router let it through; a non-garden address is refused.
    assert run_in(phone.netns, UDP, fam.wallet, "123") == ["error", str(errno.ECONNREFUSED)]
    assert run_in(phone.netns, UDP, fam.web, "123") == ["error", str(fam.prohibited)]


def test_without_the_inspector_the_garden_fails_closed_and_fast(lab: Lab, phone: Phone) -> None:
    router = lab.state.router
    nsexec(router, "iptables", "-t", "mangle", "-D", *xt_rule())
    try:
        r = phone.get(WALLET, timeout=3, extra=("-4",))
        assert not r.ok and r.exit_code in RESET and r.seconds < 1.0, r
    finally:
        rule = xt_rule()
        nsexec(router, "iptables", "-t", "mangle", "-I", rule[0], "1", *rule[1:])
    assert phone.get(WALLET, extra=("-4",)).ok


def test_allowed_connections_keep_their_address_in_the_garden(
    lab: Lab, phone: Phone, fam: Fam
) -> None:
    router = lab.state.router
    nsexec(router, "nft", "delete", "element", "inet", "plaza", fam.garden, f"{{ {fam.wallet} }}")
    nsexec(router, "nft", "add", "element", "inet", "plaza", fam.garden,
           f"{{ {fam.wallet} expires 10m }}")  # fmt: skip
    assert 0 < expires(lab, fam.wallet, fam.garden) <= 600
    assert phone.get(WALLET, extra=fam.curl).ok
    assert expires(lab, fam.wallet, fam.garden) > 3500  # refreshed by use, not only by DNS


def test_authorized_phone_reaches_everything_without_the_inspector(
    lab: Lab, phone: Phone, own_server: bool, fam: Fam
) -> None:
    lab.control().auth(lab.state.phones[0].mac)
    before = queued(lab)
    neighbour = phone.get("https://cdn-neighbour.test/", extra=fam.neighbour)
    assert neighbour.ok, neighbour
    if own_server:
        assert neighbour.body == "GARDEN-OK cdn-neighbour.test"
    site = phone.get("https://www.example.test/", extra=fam.curl)
    assert site.ok and "FAKE-INTERNET-OK" in site.body
    assert phone.get(WALLET, extra=fam.curl).ok
    assert run_in(phone.netns, UDP, fam.web, "123") == ["error", str(errno.ECONNREFUSED)]
    assert queued(lab) == before  # authorized traffic never leaves the kernel


def test_gateway_log_names_the_hook_and_each_refusal_once(lab: Lab) -> None:
    text = (lab.run_dir / "router-gateway.log").read_text()
    assert "walled-garden inspector on queue 11 via" in text
    assert text.count("is not in the walled garden") == 1
    assert "Traceback" not in text


def test_plain_http_garden_reaches_ocsp_and_nothing_else(lab: Lab, phone: Phone) -> None:
    """RFC 8908 asks that captive clients reach OCSP: plain HTTP to the configured responder
    passes unredirected, while HTTP to any other address still goes to the portal."""
    r = phone.get("http://ocsp.plaza.test/some/ocsp/request", extra=("-4",))
    assert r.status == 200 and r.body == "OCSP-OK\n"
    assert "198.19.0.1" not in r.headers.get("location", "")
    other = phone.get("http://www.example.test/", extra=("-4",))
    assert other.status == 302 and other.location == lab.status()["portal_url"]
    out = nsexec(lab.state.router, "nft", "list", "set", "inet", "plaza", "garden_http4")
    assert "192.0.2.30" in out and "192.0.2.80" not in out
