"""DHCP host names from dnsmasq's lease file to the operator's terminal (issue 10, item 5): only
printable UTF-8 is kept, the lease event always arrives, and `plaza-ctl` never prints a raw
control character, whatever an older database holds."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.control_client import ControlClient
from gateway.gateway import Gateway
from gateway.ops import ctl
from gateway.stations import dnsmasq, hostnames
from tests.unit.conftest import RunDaemon

MAC = "02:50:4c:00:00:01"
IP = "198.19.0.100"
CLEAR_SCREEN = b"\x1b[2J\x1b[H"


@pytest.mark.parametrize(
    "raw, kept",
    [
        (b"phone1", "phone1"),
        ("张三的 iPhone".encode(), "张三的 iPhone"),
        (b"Galaxy-S21 ", "Galaxy-S21"),
        (CLEAR_SCREEN + b"pwned", ""),
        (b"caf\xff", ""),  # not UTF-8
        (b"a\nb", ""),
        (b"a\x7fb", ""),  # DEL
        ("evil\u202egnp.exe".encode(), ""),  # a bidirectional override
        ("caf\udcff", ""),  # the surrogate a 0xff byte becomes in argv or environ
        (b"x" * 100, "x" * 63),
    ],
)
def test_only_printable_utf8_is_kept(raw: bytes | str, kept: str) -> None:
    assert hostnames.clean(raw) == kept


def test_escape_sequences_and_bad_bytes_through_the_lease_file_lan_lease_file_names(
    run_daemon: RunDaemon, config: Config, tmp_path: Path
) -> None:
    """OpenWrt's view: its dnsmasq's file (/tmp/dhcp.leases there), named by [lan] lease_file
    outside the state directory, here replaced whole (a restore, or a dnsmasq that renames)
    rather than rewritten in place: the same names dropped, the leases kept, a good name
    taken at the renewal."""
    leases = tmp_path / "tmp" / "dhcp.leases"
    leases.parent.mkdir()
    config = dataclasses.replace(
        config, lan=dataclasses.replace(config.lan, lease_file=str(leases))
    )
    others = {"02:50:4c:00:00:02": "198.19.0.102", "02:50:4c:00:00:03": "198.19.0.103"}
    (mac2, ip2), (mac3, ip3) = others.items()

    def replace(lines: list[bytes]) -> None:
        new = leases.with_name("dhcp.leases.new")
        new.write_bytes(b"\n".join(lines) + b"\n")
        os.replace(new, leases)

    def script(client: ControlClient, gw: Gateway) -> None:
        lines = [
            f"1900000000 {MAC} {IP} ".encode() + CLEAR_SCREEN + b"owned *",
            f"1900000000 {mac2} {ip2} caf".encode() + b"\xff *",
            f"1900000000 {mac3} {ip3} tablet".encode() + b"\xff\x1b *",
        ]
        replace(lines)
        wait({MAC: (IP, ""), mac2: (ip2, ""), mac3: (ip3, "")}, client)
        assert {c.mac: c.hostname for c in gw.store.load()} == {MAC: "", mac2: "", mac3: ""}
        lines[0] = f"1900000600 {MAC} {IP} Mei\u2019s-phone *".encode()
        replace(lines)
        wait({MAC: (IP, "Mei\u2019s-phone"), mac2: (ip2, ""), mac3: (ip3, "")}, client)
        assert not (Path(config.gateway.state_dir) / "dnsmasq.leases").exists()

    run_daemon(config, script)


def wait(found: dict, client: ControlClient) -> None:
    """Until the gateway's clients are `found` (MAC -> (IP, host name)), 3 s at most."""
    for _ in range(300):
        if {c["mac"]: (c["ip"], c["hostname"]) for c in client.clients()} == found:
            return
        time.sleep(0.01)
    assert {c["mac"]: (c["ip"], c["hostname"]) for c in client.clients()} == found


def test_escape_sequences_and_bad_bytes_through_the_lease_file(
    run_daemon: RunDaemon, config: Config
) -> None:
    """dnsmasq's lease file, as the daemon reads it: the same names dropped, the leases kept."""
    others = {"02:50:4c:00:00:02": "198.19.0.102", "02:50:4c:00:00:03": "198.19.0.103"}
    leases = dnsmasq.lease_file(config)
    (mac2, ip2), (mac3, ip3) = others.items()

    def script(client: ControlClient, gw: Gateway) -> None:
        lines = [
            b"1900000000 " + MAC.encode() + b" " + IP.encode() + b" " + CLEAR_SCREEN + b"owned *",
            f"1900000000 {mac2} {ip2} caf".encode() + b"\xff *",
            f"1900000000 {mac3} {ip3} tablet".encode() + b"\xff\x1b *",
        ]
        leases.write_bytes(b"\n".join(lines) + b"\n")
        wait({MAC: (IP, ""), mac2: (ip2, ""), mac3: (ip3, "")}, client)
        assert {c.mac: c.hostname for c in gw.store.load()} == {MAC: "", mac2: "", mac3: ""}
        lines[0] = f"1900000600 {MAC} {IP} Mei\u2019s-phone *".encode()
        leases.write_bytes(b"\n".join(lines) + b"\n")
        wait({MAC: (IP, "Mei\u2019s-phone"), mac2: (ip2, ""), mac3: (ip3, "")}, client)

    run_daemon(config, script)


def test_ctl_escapes_what_an_older_database_holds(
    run_daemon: RunDaemon, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    socket_path = config.gateway.control_socket

    def script(client: ControlClient, gw: Gateway) -> None:
        client.call("lease", action="add", mac=MAC, ip=IP)
        gw.table.clients[MAC].hostname = "\x1b[2J\x1b]0;owned\x07x\x7f\x9b"  # written before
        assert ctl.main(["--socket", socket_path, "clients"]) == 0
        assert ctl.main(["--socket", socket_path, "clients", "--json"]) == 0
        assert ctl.main(["--socket", socket_path, "client", MAC]) == 0

    run_daemon(config, script)
    out = capsys.readouterr().out
    assert not [c for c in out if not c.isprintable() and c != "\n"], repr(out)
    (row,) = [line for line in out.splitlines() if line.startswith(MAC)]
    assert row.endswith(r"\x1b[2J\x1b]0;owned\x07x\x7f\x9b")
    listed = json.loads(out[out.index("\n[\n") : out.index("\n]\n") + 2])
    assert listed[0]["hostname"] == "\x1b[2J\x1b]0;owned\x07x\x7f\x9b"  # exact, as JSON
