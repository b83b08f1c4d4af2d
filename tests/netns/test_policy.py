"""Per-client policy and accounting on the real kernel: quotas, idle time, rate limits, the
venue's access lists and the usage outbox, against what the phones themselves counted.

The module's lab runs the gateway with a venue policy written into its config (phone3 is a
trusted MAC) and fast accounting (a poll every 0.5 s, an interim record every 2 s), restarting
the daemon where a test needs another policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway import config as gwconfig
from gateway.control_client import ControlClient
from lab.phone import Phone
from lab.topology import LAN_ADDRESS6, WEB_IP, WEB_IP6, Lab, nsexec
from tests.netns.conftest import _need_root, unique_name, wait_for

pytestmark = pytest.mark.netns

BIN = Path(sys.executable).parent
SITE = "http://www.example.test"
RESOLVE = ("--resolve", f"www.example.test:80:{WEB_IP}")  # no DNS: only the transfer counts
RESOLVE6 = ("-6", "--resolve", f"www.example.test:80:[{WEB_IP6}]")
ETHERNET_HEADER = 14  # what the phone's interface counts per frame and nft's IP counters do not
FAST = gwconfig.AccountingConfig(poll_seconds=0.5, interim_seconds=2)


def reconfigure(lab: Lab, **sections: object) -> None:
    """Restart the gateway with other [policy]/[accounting] sections (SIGTERM: the kernel
    table, its counters and the authorized clients stay)."""
    config = replace(gwconfig.load(lab.gateway_config_path), **sections)
    lab.stop("router-gateway")
    lab.gateway_config_path.write_text(gwconfig.to_toml(config))
    lab.start_gateway()


def phone(lab: Lab, name: str) -> dict:
    return next(p for p in lab.status()["phones"] if p["name"] == name)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    _need_root()
    lab = Lab(unique_name("p"))
    lab.up(phones=3)
    try:
        trusted = gwconfig.PolicyConfig(trusted_macs=(phone(lab, "phone3")["mac"],))
        reconfigure(lab, policy=trusted, accounting=FAST)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def venue(lab: Lab) -> Iterator[Lab]:
    """Every test starts with phone1 and phone2 captive and the module's policy."""
    control = lab.control()
    for client in control.clients():
        if client["state"] == "authorized" and not client["trusted"]:
            control.deauth(client["mac"])
    yield lab
    config = gwconfig.load(lab.gateway_config_path)
    if config.policy.blocked_macs or config.policy.max_clients:
        reconfigure(lab, policy=replace(config.policy, blocked_macs=(), max_clients=0))


def ctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "plaza-ctl"), "--socket", lab.control_socket, *args],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip


def db(lab: Lab) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{lab.router_dir / 'state' / 'plaza.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def records(lab: Lab, session: str) -> list[sqlite3.Row]:
    with contextlib.closing(db(lab)) as conn:
        return conn.execute(
            "SELECT * FROM usage_outbox WHERE session_id = ? ORDER BY id", (session,)
        ).fetchall()


def end_reason(lab: Lab, session: str) -> str | None:
    with contextlib.closing(db(lab)) as conn:
        row = conn.execute(
            "SELECT reason FROM session_records WHERE session_id = ?", (session,)
        ).fetchone()
    return row["reason"] if row else None


def curl(netns: str, *args: str, timeout: float = 30, family: str = "ipv4") -> dict:
    resolve = RESOLVE6 if family == "ipv6" else RESOLVE
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-sS", "-o", "/dev/null", *resolve,
         "-w", '{"code": %{http_code}, "down": %{size_download}, "up": %{size_upload}}',
         *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    result = json.loads(out.stdout or '{"code": 0, "down": 0, "up": 0}')
    return {**result, "exit": out.returncode}


def link_stats(netns: str) -> dict[str, int]:
    (link,) = json.loads(nsexec(netns, "ip", "-s", "-j", "link", "show", "eth0"))
    rx, tx = link["stats64"]["rx"], link["stats64"]["tx"]
    return {"rx_bytes": rx["bytes"], "rx_packets": rx["packets"],
            "tx_bytes": tx["bytes"], "tx_packets": tx["packets"]}  # fmt: skip


def kernel_counters(lab: Lab, session: str) -> dict[str, int]:
    """The session's counters read straight from the kernel, as JSON."""
    found = {}
    for direction in ("up", "down"):
        out = nsexec(lab.state.router, "nft", "-j", "list", "counter", "inet", "plaza",
                     f"{direction}_{session}")  # fmt: skip
        counter = next(i["counter"] for i in json.loads(out)["nftables"] if "counter" in i)
        found[f"bytes_{direction}"] = counter["bytes"]
        found[f"packets_{direction}"] = counter["packets"]
    return found


def pin_neighbours(lab: Lab, name: str) -> None:
    """Static ARP and ND entries both ways, so no ARP or ND frame lands in the phone's
    counters mid-transfer; the phone stops soliciting routers for the same reason."""
    info = phone(lab, name)
    (bridge,) = json.loads(nsexec(lab.state.router, "ip", "-j", "link", "show", "br-lan"))
    router6 = LAN_ADDRESS6.split("/")[0]
    link_local = "fe80::" + ":".join(  # the bridge's EUI-64 link-local address
        f"{a:02x}{b:02x}" for a, b in zip(*[iter(_eui64(bridge["address"]))] * 2, strict=True)
    )
    for address in ("198.19.0.1", router6, link_local):
        nsexec(info["netns"], "ip", "neigh", "replace", address, "lladdr", bridge["address"],
               "dev", "eth0", "nud", "permanent")  # fmt: skip
    for address in (info["ipv4"], *info["ipv6"]):
        nsexec(lab.state.router, "ip", "neigh", "replace", address, "lladdr", info["mac"],
               "dev", "br-lan", "nud", "permanent")  # fmt: skip


def _eui64(mac: str) -> list[int]:
    octets = [int(x, 16) for x in mac.split(":")]
    return [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]]


def settled(control: ControlClient, who: str) -> dict:
    """The client's view once two polls have passed with its counters unchanged."""
    last = None
    while True:
        time.sleep(2 * FAST.poll_seconds + 0.1)
        view = control.client(who)
        usage = (view["bytes_up"], view["bytes_down"])
        if usage == last:
            return view
        last = usage


def test_trusted_mac_is_online_without_login(venue: Lab) -> None:
    info = phone(venue, "phone3")
    client = venue.control().client(info["mac"])
    assert client["state"] == "authorized" and client["trusted"]
    assert client["expires_at"] is None and client["policy"]["quota_total_mb"] == 0
    r = Phone(info["netns"]).get(SITE + "/")
    assert r.ok and r.status == 200 and "FAKE-INTERNET-OK" in r.body
    refused = ctl(venue, "deauth", info["mac"])
    assert refused.returncode == 1 and "trusted MAC" in refused.stderr


def test_blocked_mac_is_refused_and_an_online_one_is_kicked(venue: Lab) -> None:
    info = phone(venue, "phone2")
    session = venue.control().auth(info["mac"])["session_id"]
    config = gwconfig.load(venue.gateway_config_path)
    reconfigure(venue, policy=replace(config.policy, blocked_macs=(info["mac"],)))
    assert venue.control().client(info["mac"])["state"] == "captive"
    assert end_reason(venue, session) == "blocked"
    assert records(venue, session)[-1]["reason"] == "blocked"
    r = ctl(venue, "auth", info["mac"])
    assert r.returncode == 1 and f"{info['mac']} is blocked by the venue" in r.stderr
    assert not Phone(info["netns"]).get(SITE + "/").body.count("FAKE-INTERNET-OK")


def test_max_clients_refuses_one_more(venue: Lab) -> None:
    config = gwconfig.load(venue.gateway_config_path)
    reconfigure(venue, policy=replace(config.policy, max_clients=1))
    assert ctl(venue, "auth", phone(venue, "phone1")["mac"]).returncode == 0
    r = ctl(venue, "auth", phone(venue, "phone2")["mac"])
    assert r.returncode == 1 and "limit of 1 clients online is reached" in r.stderr
    # the trusted phone3 is online too and did not count
    assert venue.control().client(phone(venue, "phone3")["mac"])["state"] == "authorized"


def test_quota_exhaustion_stops_traffic_and_ends_the_session(venue: Lab) -> None:
    info = phone(venue, "phone1")
    r = ctl(venue, "auth", info["mac"], "--quota-down-mb", "2")
    assert r.returncode == 0, r.stderr
    client = venue.control().client(info["mac"])
    assert client["bytes_remaining"] == 2_000_000
    got = curl(info["netns"], "--max-time", "4", f"{SITE}/bytes/20000000")
    assert got["exit"] != 0  # cut off, not completed
    assert 1_500_000 < got["down"] <= 2_000_000  # body bytes; the quota counts IP bytes
    wait_for(lambda: venue.control().client(info["mac"])["state"] == "captive", 3, "the quota end")
    assert end_reason(venue, client["session_id"]) == "quota"
    final = records(venue, client["session_id"])[-1]
    assert final["final"] and final["reason"] == "quota"
    assert got["down"] < final["total_bytes_down"] <= 2_000_000
    after = Phone(info["netns"]).get(SITE + "/")
    assert after.status == 302  # captive again: the portal


def test_idle_timeout_ends_a_quiet_session(venue: Lab) -> None:
    info = phone(venue, "phone1")
    control = venue.control()
    session = control.call("auth", client=info["mac"], idle_seconds=2)["client"]["session_id"]
    ping = subprocess.run(
        ["ip", "netns", "exec", info["netns"], "ping", "-n", "-q", "-i", "0.5", "-c", "9",
         WEB_IP],
        capture_output=True, timeout=10,
    )  # fmt: skip
    assert ping.returncode == 0  # 4 s of traffic: the session outlived its idle time
    assert control.client(info["mac"])["state"] == "authorized"
    started = time.monotonic()
    wait_for(lambda: control.client(info["mac"])["state"] == "captive", 5, "the idle end")
    assert 1.5 < time.monotonic() - started < 4
    assert end_reason(venue, session) == "idle-timeout"


def iperf(netns: str, *args: str) -> float:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "iperf3", "-c", WEB_IP, "-t", "3", "-O", "1", "-J", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1000


def test_rate_limit_holds_tcp_near_the_limit(venue: Lab) -> None:
    info = phone(venue, "phone1")
    server = subprocess.Popen(
        ["ip", "netns", "exec", venue.state.internet, "iperf3", "-s", "-B", WEB_IP],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        r = ctl(venue, "auth", info["mac"], "--rate-up-kbit", "4000", "--rate-down-kbit", "8000")
        assert r.returncode == 0, r.stderr
        up, down = iperf(info["netns"]), iperf(info["netns"], "-R")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    print(f"rate limit: up {up:.0f} of 4000 kbit/s, down {down:.0f} of 8000 kbit/s")
    assert 0.75 * 4000 < up < 1.15 * 4000
    assert 0.75 * 8000 < down < 1.15 * 8000


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_accounting_matches_the_phones_own_counters(venue: Lab, family: str) -> None:
    """The phone counts Ethernet frames; the gateway counts IP packets it forwarded. With DNS
    out of the way (--resolve) and ARP/ND pinned, the only difference is 14 bytes a frame.
    Over IPv6 the transfers use the phone's SLAAC addresses, all counted as its session."""
    info = phone(venue, "phone1")
    assert family == "ipv4" or len(info["ipv6"]) >= 2  # stable and temporary address
    control = venue.control()
    pin_neighbours(venue, "phone1")
    control.auth(info["mac"])
    upload = Path(f"/tmp/{venue.name}-upload.bin")
    upload.write_bytes(os.urandom(5_000_000))
    try:
        before, phone_before = settled(control, info["mac"]), link_stats(info["netns"])
        # IPv6: the download from one address, the upload from another: one session.
        one, two = (("--interface", a) for a in info["ipv6"][:2]) if family == "ipv6" else ((), ())
        got = curl(info["netns"], *one, f"{SITE}/bytes/20000000", family=family)
        assert got["down"] == 20_000_000
        sent = curl(info["netns"], *two, "--data-binary", f"@{upload}", f"{SITE}/bytes/0",
                    family=family)  # fmt: skip
        assert sent["up"] == 5_000_000
        after, phone_after = settled(control, info["mac"]), link_stats(info["netns"])
    finally:
        upload.unlink()
    d = {k: phone_after[k] - phone_before[k] for k in phone_after}
    phone_up = d["tx_bytes"] - ETHERNET_HEADER * d["tx_packets"]
    phone_down = d["rx_bytes"] - ETHERNET_HEADER * d["rx_packets"]
    gw_up = after["bytes_up"] - before["bytes_up"]
    gw_down = after["bytes_down"] - before["bytes_down"]
    print(f"accounting: up {gw_up} vs phone {phone_up}, down {gw_down} vs phone {phone_down}")
    assert abs(gw_up - phone_up) <= 0.001 * phone_up
    assert abs(gw_down - phone_down) <= 0.001 * phone_down
    assert gw_down > 20_000_000 and gw_up > 5_000_000


def test_outbox_survives_sigkill_mid_stream(venue: Lab) -> None:
    """Kill the daemon twice while a download runs: the records add up to the kernel's
    counters exactly, each with its own key, none missing, none twice."""
    info = phone(venue, "phone1")
    control = venue.control()
    session = control.auth(info["mac"])["session_id"]
    stream = subprocess.Popen(
        ["ip", "netns", "exec", info["netns"], "curl", "-sS", "-o", "/dev/null", *RESOLVE,
         f"{SITE}/bytes/16000000?per_second=2000000"],
    )  # fmt: skip
    try:
        for _ in range(2):
            time.sleep(2.7)
            os.killpg(venue.state.pids["router-gateway"], signal.SIGKILL)
            venue.stop("router-gateway")  # reap
            time.sleep(0.5)
            venue.start_gateway()
        assert stream.wait(timeout=30) == 0
    finally:
        stream.kill()
    settled(control, info["mac"])
    kernel = kernel_counters(venue, session)
    control.deauth(info["mac"])
    wait_for(lambda: records(venue, session)[-1]["final"], 3, "the final record")
    recs = records(venue, session)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert len({r["key"] for r in recs}) == len(recs) and recs[-1]["final"]
    assert len(recs) >= 4  # interim records before, between and after the kills
    for key in ("bytes_up", "packets_up", "bytes_down", "packets_down"):
        assert sum(r[key] for r in recs) == kernel[key], key
    assert kernel["bytes_down"] > 16_000_000
