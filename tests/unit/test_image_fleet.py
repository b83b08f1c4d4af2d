"""`make router-image FLEET_SECRET=... VENUE_TAG=... FLEET_CLOUD=...` (provisioning/image/
build.py): each variable checked before any build with a one-line error naming it, what is
baked into the router's root (the secret 0600 root, the tag for the unit, the cloud in
gateway.toml as the gateway reads it), and the cache key: another secret redoes the router
layer (the digest), never the Debian base (its key)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from gateway import config as gateway_config

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "provisioning" / "image" / "build.py"
PACKAGE_CONFIG = ROOT / "provisioning" / "package" / "etc" / "gateway.toml"
UNIT = ROOT / "provisioning" / "package" / "systemd" / "plaza-fleet-enrol.service"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a"
SECRET = "fleet-" + "A1b2_C3d4-" * 3 + "xy"  # the dashboard's shape: fleet- and 32 characters
GOOD = {"FLEET_SECRET": SECRET, "VENUE_TAG": "main-st 12", "FLEET_CLOUD": "https://cloud.test"}
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plaza_image_build_fleet", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_the_variables_the_image_is_as_before(build: ModuleType) -> None:
    assert build.fleet_from({"PATH": "/usr/bin", "SSH_KEY": "k.pub"}) is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("FLEET_SECRET", "", "missing or empty"),
        ("FLEET_SECRET", "hunter2", "not a fleet secret"),
        ("FLEET_SECRET", SECRET + '"\nurl = "https://evil.test', "not a fleet secret"),
        ("VENUE_TAG", "", "missing or empty"),
        ("VENUE_TAG", 'main"st', "not 1-63"),
        ("VENUE_TAG", "x" * 64, "not 1-63"),
        ("VENUE_TAG", "café", "not 1-63"),
        ("FLEET_CLOUD", "", "missing or empty"),
        ("FLEET_CLOUD", "http://cloud.test", "not an https:// URL"),
        ("FLEET_CA", "", "empty"),
        ("FLEET_CA", "/nonexistent/ca.pem", "cannot read"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(
    build: ModuleType, name: str, value: str, says: str
) -> None:
    with pytest.raises(build.ImageError) as caught:
        build.fleet_from({**GOOD, name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and says in message and "\n" not in message


def test_one_variable_alone_names_the_missing_ones(build: ModuleType) -> None:
    with pytest.raises(build.ImageError, match=r"^VENUE_TAG: missing or empty"):
        build.fleet_from({"FLEET_SECRET": SECRET})
    with pytest.raises(build.ImageError, match=r"^FLEET_SECRET: missing or empty"):
        build.fleet_from({"VENUE_TAG": "main-st"})


def test_a_ca_file_that_holds_no_certificate(build: ModuleType, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(build.ImageError, match=r"^FLEET_CA: .* holds no PEM certificate"):
        build.fleet_from({**GOOD, "FLEET_CA": str(key)})


def test_main_refuses_before_building(
    build: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make router-image FLEET_SECRET=` (make puts it in the environment): exit 1 and one
    line, before the .deb is even looked for."""
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    monkeypatch.setenv("FLEET_SECRET", "")
    assert build.main(["--out", "/nonexistent/out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("router-image: FLEET_SECRET: missing or empty") and err.count("\n") == 1


def _router_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/plaza").mkdir(parents=True)
    shutil.copy(PACKAGE_CONFIG, root / "etc/plaza/gateway.toml")
    (root / "etc/plaza/gateway.toml").chmod(0o640)
    return root


def test_what_is_baked_into_the_router(build: ModuleType, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(CA)
    fleet = build.fleet_from(
        {**GOOD, "FLEET_CLOUD": "https://cloud.test/", "FLEET_CA": str(ca_file)}
    )
    root = _router_root(tmp_path)
    build.bake_fleet(root, fleet)
    secret = root / "etc/plaza/fleet.secret"
    assert secret.read_text() == SECRET + "\n"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (secret.stat().st_uid, secret.stat().st_gid) == (os.geteuid(), os.getegid())
    # The unit reads the tag from fleet.env (EnvironmentFile=) under the name it expands.
    env = (root / "etc/plaza/fleet.env").read_text()
    assert 'PLAZA_FLEET_VENUE_TAG="main-st 12"\n' in env
    unit = UNIT.read_text()
    assert "EnvironmentFile=-/etc/plaza/fleet.env" in unit
    assert "--venue-tag=${PLAZA_FLEET_VENUE_TAG}" in unit
    # gateway.toml: still the package's, its mode kept, with the cloud the gateway will use.
    toml = root / "etc/plaza/gateway.toml"
    assert toml.stat().st_mode & 0o777 == 0o640
    assert toml.read_text().startswith(PACKAGE_CONFIG.read_text())
    loaded = gateway_config.load(str(toml))
    assert loaded.cloud.url == "https://cloud.test"
    assert loaded.cloud.ca_bundle == build.FLEET_CA_FILE
    assert (root / build.FLEET_CA_FILE.lstrip("/")).read_text() == CA


def test_without_a_ca_the_system_of_the_cloud_is_trusted(build: ModuleType, tmp_path: Path) -> None:
    root = _router_root(tmp_path)
    build.bake_fleet(root, build.fleet_from(GOOD))
    loaded = gateway_config.load(str(root / "etc/plaza/gateway.toml"))
    assert (loaded.cloud.url, loaded.cloud.ca_bundle) == ("https://cloud.test", "")
    assert not (root / build.FLEET_CA_FILE.lstrip("/")).exists()


def test_a_config_that_already_names_a_cloud_is_an_error(build: ModuleType, tmp_path: Path) -> None:
    root = _router_root(tmp_path)
    with open(root / "etc/plaza/gateway.toml", "a") as f:
        f.write('[cloud]\nurl = "https://other.test"\n')
    with pytest.raises(build.ImageError, match=r"^FLEET_CLOUD: cannot add"):
        build.bake_fleet(root, build.fleet_from(GOOD))


def _deb(tmp: Path) -> Path:
    tree = tmp / "deb"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    out = tmp / "t.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True,
                   capture_output=True)  # fmt: skip
    return out


def test_the_cache_key(build: ModuleType, tmp_path: Path) -> None:
    """Every baked value is in dist/plaza-router.inputs' digest (another secret, tag, cloud or
    CA: the router layer and the disk are redone), none in the base's key (the cached Debian
    tarball is reused); no fleet: the key of the image as it was."""
    deb = _deb(tmp_path)
    base = build.base_key()
    plain = build.inputs_digest(deb, KEY)
    assert build.inputs_digest(deb, KEY, None) == plain
    fleet = build.fleet_from(GOOD)
    keys = {
        build.inputs_digest(deb, KEY, fleet),
        build.inputs_digest(deb, KEY, build.fleet_from({**GOOD, "FLEET_SECRET": SECRET + "z"})),
        build.inputs_digest(deb, KEY, build.fleet_from({**GOOD, "VENUE_TAG": "other"})),
        build.inputs_digest(deb, KEY, build.fleet_from({**GOOD, "FLEET_CLOUD": "https://c.test"})),
        build.inputs_digest(deb, KEY, build.Fleet(SECRET, "main-st 12", "https://cloud.test", CA)),
        plain,
    }
    assert len(keys) == 6
    assert build.inputs_digest(deb, KEY, build.fleet_from(GOOD)) == build.inputs_digest(
        deb, KEY, fleet
    )
    assert build.base_key() == base
