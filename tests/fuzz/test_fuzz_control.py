"""Properties of the control socket (gateway/daemon.py, gateway/gateway.py) and of dnsmasq's
lease file that feeds the daemon its leases (gateway/stations/leases.py).

The socket is root-only, but what reaches the daemon is not all the root's own: the lease file
carries a phone's DHCP host name, the portal a shopper's form. So whatever bytes arrive, the
daemon answers with exactly one JSON line {"ok": ...} (an error is one line of its own, never
"internal error"), and after every request or lease the kernel holds exactly what the
sessions want. The lease path is tested through its public ends only (the file's parser and
diff, the daemon's `handle` and lease request): how host names are cleaned is another
module's business and may change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.assemble import open_gateway
from gateway.config import Config, GatewayConfig
from gateway.daemon import MAX_REQUEST, Daemon
from gateway.gateway import Gateway
from gateway.stations import leases
from gateway.stations.station import SessionError
from plaza.validators import MAC_RE
from tests.conftest import FakeClock
from tests.fakes.firewall import FakeFirewall
from tests.fuzz.jsonvalues import deep, mutated, objects, spaced, values

OPS = ["ping", "clients", "client", "auth", "deauth", "access", "access-lists", "shopper", "lease"]
macs = st.one_of(
    st.builds(lambda n: f"02:50:4c:00:00:{n:02x}", st.integers(0, 255)),
    st.text(max_size=20),
)
ips = st.one_of(
    st.builds(lambda n: f"198.19.0.{n}", st.integers(0, 255)),
    st.sampled_from(["fe80::1", "::", "198.19.1.5", "0.0.0.0", "198.19.0.100\n"]),
    st.text(max_size=20),
)
hostnames = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(os.fsdecode),  # dnsmasq passes the phone's bytes as they came
    st.sampled_from(["phone\nline", "a" * 300, "\x00", "\udcff\udcfe", "iPhone (2)", "小米"]),
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state: Path = tmp_path_factory.mktemp("fuzz-gateway")
    config = Config(
        gateway=GatewayConfig(state_dir=str(state), control_socket=str(state / "ctl.sock"))
    )
    gw = open_gateway(config, FakeFirewall(), FakeClock())
    gw.start()
    yield gw


def check_answer(answer: Any) -> None:
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and "\n" not in answer["error"].strip()
        assert "internal error" not in answer["error"]
    json.dumps(answer)  # the daemon must be able to send it


def requests_() -> st.SearchStrategy[Any]:
    args = st.fixed_dictionaries(
        {"op": st.sampled_from(OPS)},
        optional={
            "client": st.one_of(macs, ips, values), "mac": st.one_of(macs, values),
            "ip": st.one_of(ips, values), "action": st.sampled_from(
                ["add", "old", "del", "block", "trust", "unblock", "untrust", "init", ""]
            ) | values, "hostname": st.one_of(hostnames, values),
            "minutes": st.integers(-5, 10**6) | values, "reason": st.sampled_from(
                ["admin", "logout", "quota"]) | values, "offset": st.integers(-1, 10**6) | values,
            "limit": st.integers(-1, 10**4) | values, "wallet_user": values, "opt_in": values,
            "connect_url": values, "quota_total_mb": values, "idle_minutes": values,
        },
    )  # fmt: skip
    return st.one_of(args, values, objects)


@given(requests_())
@example({"op": "lease", "action": "add", "mac": "02:50:4c:00:00:01", "ip": "198.19.0.100",
          "hostname": "\udcff"})  # fmt: skip
@example({"op": "auth", "client": "198.19.0.100", "minutes": 10**30})
@example({"op": "__init__"})
def test_any_request_gets_an_answer_and_the_kernel_stays_right(
    gateway: Gateway, request_: Any
) -> None:
    check_answer(gateway.handle(request_))
    assert gateway.granted_as_desired()


@given(
    st.sampled_from(["add", "old"]),
    st.integers(100, 250),
    st.integers(0, 255),
    hostnames,
)
def test_a_lease_from_the_lan_is_taken_whatever_the_host_name(
    gateway: Gateway, action: str, host: int, mac_byte: int, hostname: str
) -> None:
    mac, ip = f"02:50:4c:00:01:{mac_byte:02x}", f"198.19.0.{host}"
    answer = gateway.handle(json.loads(json.dumps(
        {"op": "lease", "action": action, "mac": mac, "ip": ip, "hostname": hostname}
    )))  # fmt: skip
    check_answer(answer)
    assert answer["ok"], answer  # a strange host name never costs the phone its lease
    client = gateway.handle({"op": "client", "client": mac})
    assert client["ok"] and client["client"]["mac"] == mac
    shown = client["client"].get("hostname", "")
    assert isinstance(shown, str) and len(shown) <= 63 and "\n" not in shown
    assert gateway.granted_as_desired()


# -- the lease file: its bytes as dnsmasq (or a restore, or a torn read) leaves them -----------
def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # the phone's bytes, as dnsmasq writes them


lease_lines = st.builds(
    lambda fields: b" ".join(fields),
    st.tuples(
        st.one_of(st.integers(0, 2**40).map(lambda n: str(n).encode()), st.binary(max_size=8)),
        macs.map(_encoded), ips.map(_encoded), hostnames.map(_encoded),
        st.sampled_from([b"*", b"01:02:50:4c:00:00:01", b""]),
    ),
)  # fmt: skip
lease_files = st.lists(
    st.one_of(lease_lines, st.binary(max_size=60), st.just(b"duid 00:01:00:01")), max_size=8
).map(b"\n".join)


@given(lease_files, lease_files, st.booleans())
@example(b"", b"1900000000 02:50:4c:00:00:09 198.19.0.109 \xff\x1b[2J *", True)
@example(b"0 02:50:4c:00:00:09 198.19.0.109 a *", b"0 02:50:4c:00:00:09 198.19.0.109 b *", True)
def test_whatever_the_lease_file_holds_the_daemon_takes_what_is_a_lease(
    gateway: Gateway, before: bytes, after: bytes, whole: bool
) -> None:
    """Two readings of the lease file (the second perhaps cut mid-line): each event names a
    station MAC and an IPv4 address with a printable host name, and applying it as the daemon
    does (gateway/daemon.py `_lease`) leaves the kernel as the sessions want."""
    old = leases.parse(before + b"\n").leases
    reading = leases.parse(after + (b"\n" if whole else b""))
    for event in leases.diff(old, reading.leases):
        lease = event.lease
        assert MAC_RE.match(lease.mac) and ipaddress.IPv4Address(lease.ip)
        assert lease.hostname.isprintable() and len(lease.hostname) <= 63
        try:
            gateway.requests.lease(event.action, lease.mac, lease.ip, lease.hostname)
        except SessionError as exc:  # the daemon logs it in one line and reads on
            assert "\n" not in str(exc).strip()
        assert gateway.granted_as_desired()


# -- the socket's bytes -------------------------------------------------------------------------
class Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def daemon(gateway: Gateway) -> Daemon:
    return Daemon(gateway.config, gateway, lan_ifindex=None)


def exchange(daemon: Daemon, data: bytes) -> dict:
    async def run() -> bytes:
        reader = asyncio.StreamReader(limit=MAX_REQUEST)
        reader.feed_data(data)
        reader.feed_eof()
        writer = Writer()
        await daemon.handle_connection(reader, writer)  # type: ignore[arg-type]
        return writer.data

    out = asyncio.run(run())
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out[:200]
    return json.loads(out)


@given(
    st.one_of(
        st.binary(max_size=500),
        requests_().map(lambda r: json.dumps(r).encode() + b"\n"),
        objects.flatmap(spaced).flatmap(mutated).map(lambda t: t.encode() + b"\n"),
    )
)
@example(deep(20_000).encode() + b"\n")  # regression: RecursionError became "internal error"
@example(b'{"op":"ping"' + b" " * (MAX_REQUEST + 10) + b"}\n")
@example(b'{"op":"ping"}')  # no newline: the request ends at EOF
@example(b"\xff\xfe\n")
def test_any_bytes_on_the_socket_get_one_json_line(daemon: Daemon, data: bytes) -> None:
    check_answer(exchange(daemon, data))
    assert daemon.gateway.granted_as_desired()


def test_deep_nesting_is_not_valid_json(tmp_path: Path) -> None:
    """Regression: `[[[[...` past the recursion limit escaped the JSON error handling and was
    answered "internal error", with a traceback in the log per request."""
    config = Config(gateway=GatewayConfig(state_dir=str(tmp_path)))
    gw = open_gateway(config, FakeFirewall(), FakeClock())
    answer = exchange(Daemon(config, gw, lan_ifindex=None), deep(20_000).encode() + b"\n")
    assert answer == {"ok": False, "error": "request is not valid JSON"}
