"""The control client (gateway/control_client.py), as `plaza-ctl` and the portal use it: it
speaks the control protocol with CPython's `_socket` and `_json` (written so for OpenWrt's
lease hook, a process per DHCP event, gone since the daemon reads dnsmasq's lease file). It
must send the bytes `json.dumps` makes and read answers as `json.loads` does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import control_client
from gateway.control_client import ControlClient, ControlError

STRINGS = [
    "",
    "02:50:4c:00:00:01",
    "198.19.0.100",
    'quote " and backslash \\ and slash /',
    "new\nline\ttab\x00nul\x1besc\x7fdel",
    "王美的 iPhone",
    "emoji \U0001f600 outside the BMP",
    "\udcc3\udca9 lone surrogates (undecodable argv bytes)",
    "\u2028\u2029 separators",
]


@pytest.mark.parametrize("value", STRINGS)
def test_the_request_line_is_the_shared_clients(value: str) -> None:
    args = {"action": "add", "mac": value, "ip": value, "hostname": value}
    expected = json.dumps({"op": "lease", **args}, separators=(",", ":")).encode() + b"\n"
    assert control_client.encode("lease", args) == expected


@pytest.mark.parametrize(
    "args",
    [
        {"offset": 0, "limit": 1000},  # `clients`, a page at a time
        {"client": "02:50:4c:00:00:01", "minutes": None},
        {"yes": True, "no": False, "n": -1.5e300, "big": 2**70, "inf": float("inf")},
        {"list": [1, "\u738b", {"nested": None}], "tuple": (1, 2)},
    ],
)
def test_other_values_are_written_as_json_dumps_writes_them(args: dict) -> None:
    """plaza-ctl and the portal send numbers, None and lists through the same encoder."""
    expected = json.dumps({"op": "auth", **args}, separators=(",", ":")).encode() + b"\n"
    assert control_client.encode("auth", args) == expected


def test_what_json_dumps_refuses_is_refused_alike() -> None:
    loop: list = []
    loop.append(loop)
    for value in (object(), loop):
        with pytest.raises((TypeError, ValueError)) as dumped:
            json.dumps({"op": "x", "v": value}, separators=(",", ":"))
        with pytest.raises(dumped.type) as encoded:
            control_client.encode("x", {"v": value})
        assert str(encoded.value) == str(dumped.value)


@pytest.mark.parametrize(
    "text",
    [
        '{"ok":true}',
        '{"ok": false, "error": "no such client: \\u738b"}',
        ' {"ok":true,"client":{"mac":"02:50:4c:00:00:01","n":-1.5e3,"x":null,"l":[1,2]}}\n',
        '"just a string"',
        "[1, 2.5, true]",
    ],
)
def test_answers_are_read_as_json_loads_reads_them(text: str) -> None:
    assert control_client.decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"ok":true} trailing', "nan", "{'ok': true}", "\xff"])
def test_what_json_loads_refuses_is_refused(text: str) -> None:
    data = text.encode("latin-1")
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        control_client.decode(data)


@pytest.fixture
def answering(tmp_path: Path) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A one-connection-at-a-time control socket: answers each request with the next of
    `answers` and records what it was sent."""
    path = str(tmp_path / "control.sock")
    answers: list[bytes] = []
    received: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                received.append(data)
                conn.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers, received
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(5)


@pytest.mark.parametrize(
    "answer, outcome",
    [
        (b'{"ok":true,"client":{"mac":"m"}}\n', {"ok": True, "client": {"mac": "m"}}),
        (b'{"ok":false,"error":"bad mac"}\n', "bad mac"),
        (b'{"ok":false}\n', "unknown error"),
        (b"[true]\n", "the gateway sent a malformed response"),
        (b"<html>\n", "the gateway sent a malformed response"),
        (b"", "the gateway sent a malformed response"),
    ],
)
def test_answers_and_errors_are_the_shared_clients(
    answering: tuple[str, list[bytes], list[bytes]], answer: bytes, outcome: dict | str
) -> None:
    path, answers, received = answering
    answers.append(answer)
    client = ControlClient(path, timeout=5)
    args = {"action": "add", "mac": "02:50:4c:00:00:01", "ip": "198.19.0.100", "hostname": "x"}
    if isinstance(outcome, dict):
        assert client.call("lease", **args) == outcome
    else:
        with pytest.raises(ControlError) as caught:
            client.call("lease", **args)
        assert str(caught.value) == outcome
    assert received == [json.dumps({"op": "lease", **args}, separators=(",", ":")).encode() + b"\n"]


def test_no_daemon_is_the_same_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.sock")
    with pytest.raises(ControlError) as caught:
        ControlClient(path, timeout=1).call("lease", action="add", mac="m", ip="i", hostname="")
    assert str(caught.value) == f"the gateway is not running (no control socket at {path})"


def test_the_client_imports_neither_json_nor_socket(tmp_path: Path) -> None:
    """What the module's docstring promises: its imports stay small. A bare Python
    (-I -S) imports it and asks a gateway that is not there."""
    root = Path(control_client.__file__).parents[1]
    probe = (
        f"import sys; sys.path.insert(0, {str(root)!r});"
        "from gateway.control_client import ControlClient, ControlError\n"
        f"try: ControlClient({str(tmp_path / 'absent.sock')!r}, timeout=2).call('ping')\n"
        "except ControlError as exc: print(exc, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", "-c", probe],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the gateway is not running" in done.stderr
    imported = {
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if "import time:" in line
    }
    assert "gateway.control_client" in imported  # the probe works
    assert not imported & {"json", "socket", "re", "typing", "enum", "functools"}


def test_without_the_accelerators_it_falls_back_to_json_and_socket(tmp_path: Path) -> None:
    """A Python built without `_json` still runs the client (more slowly)."""
    client = Path(control_client.__file__)
    probe = (
        "import runpy, sys; sys.modules['_json'] = None;"
        f"hook = runpy.run_path({str(client)!r}, run_name='client');"
        "line = hook['encode']('lease', {'mac': '\\u738b\\n'});"
        "print(line.decode().strip(), hook['decode'](b'{\"ok\": true}'), 'json' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30,
        env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['{"op":"lease","mac":"\\u738b\\n"}', "{'ok':", "True}", "True"]
