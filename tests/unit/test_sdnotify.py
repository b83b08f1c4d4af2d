"""plaza/sdnotify.py: what systemd receives on $NOTIFY_SOCKET, and silence without it."""

from __future__ import annotations

import socket
from pathlib import Path

from plaza import sdnotify


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_ready_reaches_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _listener(path) as sock:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(64) == b"READY=1"


def test_abstract_socket_address() -> None:
    name = f"plaza-test-notify-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sdnotify.notify("STATUS=serving", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"STATUS=serving"


def test_no_socket_no_notification() -> None:
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
