"""DHCP host names from the lease hook to the operator's terminal (issue 10, item 5): only
printable UTF-8 is kept, the lease event always arrives, and `plaza-ctl` never prints a raw
control character, whatever an older database holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.control_client import ControlClient
from gateway.gateway import Gateway
from gateway.ops import ctl
from gateway.stations import dnsmasq, hostnames, lease_hook
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


def run_hook(config: Config, tmp_path: Path, args: list[bytes], env: dict[bytes, bytes]) -> str:
    """OpenWrt's view (firmware_overlay/etc/hotplug.d/dhcp/90-plaza): the hook run as
    `python3 -I -S lease_hook.py ACTION MAC IP [HOSTNAME]`, with bytes as dnsmasq passes them."""
    socket = os.fsencode(config.gateway.control_socket)
    done = subprocess.run(
        [os.fsencode(sys.executable), b"-I", b"-S", os.fsencode(lease_hook.__file__), *args],
        env={b"PATH": os.environb[b"PATH"], b"PLAZA_CONTROL_SOCKET": socket, **env},
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    return done.stderr.decode(errors="replace")


def test_escape_sequences_and_bad_bytes_through_the_real_lease_hook(
    run_daemon: RunDaemon, config: Config, tmp_path: Path
) -> None:
    others = {"02:50:4c:00:00:02": "198.19.0.102", "02:50:4c:00:00:03": "198.19.0.103"}

    def script(client: ControlClient, gw: Gateway) -> None:
        # the name dnsmasq would not use for DNS comes only in the environment
        supplied = {b"DNSMASQ_SUPPLIED_HOSTNAME": CLEAR_SCREEN + b"owned"}
        assert run_hook(config, tmp_path, [b"add", MAC.encode(), IP.encode()], supplied) == ""
        (mac2, ip2), (mac3, ip3) = others.items()
        weird = {b"DNSMASQ_SUPPLIED_HOSTNAME": b"caf\xff"}
        assert run_hook(config, tmp_path, [b"add", mac2.encode(), ip2.encode()], weird) == ""
        args = [b"old", mac3.encode(), ip3.encode(), b"tablet\xff\x1b"]
        assert run_hook(config, tmp_path, args, {}) == ""
        found = {c["mac"]: (c["ip"], c["hostname"]) for c in client.clients()}
        assert found == {MAC: (IP, ""), mac2: (ip2, ""), mac3: (ip3, "")}
        assert {c.mac: c.hostname for c in gw.store.load()} == {MAC: "", mac2: "", mac3: ""}
        good = {b"DNSMASQ_SUPPLIED_HOSTNAME": "Mei\u2019s phone".encode()}
        run_hook(config, tmp_path, [b"old", MAC.encode(), IP.encode()], good)
        assert client.client(MAC)["hostname"] == "Mei\u2019s phone"

    run_daemon(config, script)


def test_escape_sequences_and_bad_bytes_through_the_lease_file(
    run_daemon: RunDaemon, config: Config
) -> None:
    """dnsmasq's lease file, as the daemon reads it: the same names dropped, the leases kept."""
    others = {"02:50:4c:00:00:02": "198.19.0.102", "02:50:4c:00:00:03": "198.19.0.103"}
    leases = dnsmasq.lease_file(config)
    (mac2, ip2), (mac3, ip3) = others.items()

    def wait(found: dict, client: ControlClient) -> None:
        for _ in range(300):
            if {c["mac"]: (c["ip"], c["hostname"]) for c in client.clients()} == found:
                return
            time.sleep(0.01)
        assert {c["mac"]: (c["ip"], c["hostname"]) for c in client.clients()} == found

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
