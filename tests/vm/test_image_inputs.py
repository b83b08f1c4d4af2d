"""The image build's cache key and input checks (no root, no build): what makes a second
`make router-image` skip or redo the work."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

BUILD = Path(__file__).resolve().parents[2] / "provisioning" / "image" / "build.py"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plaza_image_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _deb(tmp: Path, name: str, content: str, mtime: int) -> Path:
    tree = tmp / f"{name}.tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/f.py").write_text(content)
    subprocess.run(["touch", "-d", f"@{mtime}", str(tree / "usr/lib/f.py")], check=True)
    out = tmp / f"{name}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_the_key_ignores_build_times_but_not_contents(build: ModuleType, tmp_path: Path) -> None:
    same_a = _deb(tmp_path, "a", "x = 1\n", 1_000_000)
    same_b = _deb(tmp_path, "b", "x = 1\n", 2_000_000)
    changed = _deb(tmp_path, "c", "x = 2\n", 1_000_000)
    assert same_a.read_bytes() != same_b.read_bytes()  # the files differ: their times do
    assert build.inputs_digest(same_a, KEY_A) == build.inputs_digest(same_b, KEY_A)
    assert build.inputs_digest(same_a, KEY_A) != build.inputs_digest(changed, KEY_A)
    assert build.inputs_digest(same_a, KEY_A) != build.inputs_digest(same_a, KEY_B)


def test_a_file_that_is_not_a_public_key_is_refused(build: ModuleType, tmp_path: Path) -> None:
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(build.ImageError, match="not an OpenSSH public key"):
        build.build(tmp_path / "none.deb", private, tmp_path / "out")
    assert not (tmp_path / "out").exists()
