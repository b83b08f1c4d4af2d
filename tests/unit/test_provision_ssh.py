"""provisioning/ssh.py's OpenSSH runner with a stand-in `ssh` on PATH: what ssh's exit status
255 means, a remote command's own failure, and the upload's byte count and disk-full case."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from provisioning import errors
from provisioning.errors import ProvisionError
from provisioning.ssh import OpenSSH

FAKE_SSH = """#!/bin/sh
# The last argument is the remote command line; behaviour comes from FAKE_SSH_MODE.
for last; do :; done
case "$FAKE_SSH_MODE" in
  denied) echo "root@r1: Permission denied (publickey)." >&2; exit 255;;
  noroute) echo "ssh: connect to host r1 port 22: No route to host" >&2; exit 255;;
  full) cat > /dev/null; echo "sh: 1: cannot create x.part: No space left on device" >&2; exit 1;;
  upload) cat > "$FAKE_SSH_OUT"; exit 0;;
  *) echo "ran: $last"; echo "warn" >&2; exit 3;;
esac
"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenSSH:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_OUT", str(tmp_path / "uploaded"))
    return OpenSSH("r1", known_hosts=tmp_path / "kh")


def test_a_failing_remote_command_is_a_result_quoted_for_the_shell(runner, monkeypatch) -> None:
    result = runner.run(["echo", "a b", "$HOME"])
    assert result.rc == 3 and result.stderr == "warn\n"
    assert result.stdout == "ran: echo 'a b' '$HOME'\n"


@pytest.mark.parametrize(
    ("mode", "words"), [("denied", "refused the SSH key"), ("noroute", "cannot reach the router")]
)
def test_ssh_status_255_is_unreachable(runner, monkeypatch, mode: str, words: str) -> None:
    monkeypatch.setenv("FAKE_SSH_MODE", mode)
    with pytest.raises(ProvisionError) as caught:
        runner.run(["true"])
    assert caught.value.code == errors.UNREACHABLE and words in caught.value.message


def test_upload_streams_every_byte_with_progress(runner, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_SSH_MODE", "upload")
    data = os.urandom(300_000)
    seen: list[int] = []
    runner.upload(io.BytesIO(data), len(data), "/var/cache/p.deb", seen.append)
    assert (tmp_path / "uploaded").read_bytes() == data
    assert seen[-1] == len(data) and len(seen) == 5  # 64 KiB chunks


def test_upload_to_a_full_disk_is_disk_full(runner, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_SSH_MODE", "full")
    with pytest.raises(ProvisionError) as caught:
        runner.upload(io.BytesIO(b"x" * 1000), 1000, "/var/cache/p.deb", lambda n: None)
    assert caught.value.code == errors.DISK_FULL and "No space left" in caught.value.message


def test_sudo_wraps_commands_and_the_upload(runner, monkeypatch, tmp_path: Path) -> None:
    runner.sudo = True
    assert runner.run(["id", "-un"]).stdout == "ran: sudo -n id -un\n"
    calls = tmp_path / "argv"
    fake = tmp_path / "bin/ssh"
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\necho "$last" > {calls}\ncat > /dev/null\n')
    runner.upload(io.BytesIO(b"x"), 1, "/etc/x", lambda n: None)
    assert calls.read_text().startswith("sudo -n sh -c 'umask 077 && cat > /etc/x.part")
