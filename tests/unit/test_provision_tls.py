"""`flash --portal-cert/--portal-key`: the pair is checked on the laptop before anything is
copied, then installed where the venue config says, before the config step."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning import cli, errors, tls_files
from provisioning.errors import ProvisionError
from provisioning.flash import FlashPlan, flash
from provisioning.report import JsonReporter
from tests.fakes.ssh import FakeRouter

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CERT_FILE, KEY_FILE = "/etc/plaza/portal.pem", "/etc/plaza/portal.key"


def make_pair(
    tmp_path: Path,
    names: tuple[str, ...] = ("portal.venue.example",),
    days: tuple[int, int] = (-1, 90),
    name: str = "portal",
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
    )
    if names:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def venue(tmp_path: Path, hostname: str = "portal.venue.example", files: bool = True) -> Path:
    path = tmp_path / "venue.toml"
    portal = f'[portal]\nhostname = "{hostname}"\n'
    if files:
        portal += f'cert_file = "{CERT_FILE}"\nkey_file = "{KEY_FILE}"\n'
    path.write_text('[lan]\ninterface = "br-lan"\n' + portal)
    return path


def refused(*args: object, **kwargs: object) -> ProvisionError:
    with pytest.raises(ProvisionError) as caught:
        tls_files.load(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == errors.USAGE
    return caught.value


def test_a_good_pair_is_read_with_its_destinations(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path)
    tls = tls_files.load(cert, key, venue(tmp_path), NOW)
    assert (tls.cert_file, tls.key_file, tls.hostname) == (CERT_FILE, KEY_FILE,
                                                            "portal.venue.example")  # fmt: skip
    assert tls.chain == cert.read_bytes() and tls.key == key.read_bytes()


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = make_pair(tmp_path, name="a")
    _, other_key = make_pair(tmp_path, name="b")
    exc = refused(cert, other_key, venue(tmp_path), NOW)
    assert "is not the key of" in exc.message


@pytest.mark.parametrize(
    ("days", "words"), [((-90, -1), "expired on"), ((1, 90), "is valid only from")]
)
def test_a_certificate_out_of_its_dates_is_refused(
    tmp_path: Path, days: tuple[int, int], words: str
) -> None:
    cert, key = make_pair(tmp_path, days=days)
    assert words in refused(cert, key, venue(tmp_path), NOW).message


def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, names=("shop.other.example",))
    exc = refused(cert, key, venue(tmp_path), NOW)
    assert "is for shop.other.example, not portal.venue.example" in exc.message
    assert "hostname" in exc.hint


@pytest.mark.parametrize(
    ("names", "host", "ok"),
    [
        (["portal.venue.example"], "PORTAL.venue.example.", True),
        (["*.venue.example"], "portal.venue.example", True),
        (["*.venue.example"], "a.portal.venue.example", False),  # one label only
        (["*.venue.example"], "venue.example", False),
        ([], "portal.venue.example", False),
    ],
)
def test_names_cover_a_host_as_rfc_6125_says(names: list[str], host: str, ok: bool) -> None:
    assert tls_files.covers(names, host) is ok


def test_files_that_are_not_pem_or_are_encrypted_are_refused(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path)
    junk = tmp_path / "junk"
    junk.write_text("not pem")
    assert "not a PEM certificate" in refused(junk, key, venue(tmp_path), NOW).message
    assert "not a PEM private key" in refused(cert, junk, venue(tmp_path), NOW).message
    locked = tmp_path / "locked.key"
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "encrypted" in refused(cert, locked, venue(tmp_path), NOW).message
    assert "No such file" in refused(tmp_path / "absent", key, venue(tmp_path), NOW).message


def test_the_venue_config_must_say_where_the_files_go(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path)
    assert "needs --venue-config" in refused(cert, key, None, NOW).message
    exc = refused(cert, key, venue(tmp_path, files=False), NOW)
    assert "names no cert_file and key_file" in exc.message


def test_install_commands_place_the_files_with_their_modes(tmp_path: Path) -> None:
    """The router's shell commands, run for real: chain 0644, key 0640 in the config's group,
    the spooled copies gone."""
    cert, key = make_pair(tmp_path)
    config = tmp_path / "gateway.toml"
    config.write_text("")
    os.chown(config, -1, 4 if os.geteuid() == 0 else os.getegid())  # a group other than root's
    tls = tls_files.PortalTLS(
        cert.read_bytes(), key.read_bytes(), str(tmp_path / "tls/portal.pem"),
        str(tmp_path / "tls/portal.key"), "portal.venue.example",
    )  # fmt: skip
    spool_chain, spool_key = tmp_path / "chain.new", tmp_path / "key.new"
    spool_chain.write_bytes(tls.chain)
    spool_key.write_bytes(tls.key)
    command = tls_files.install_commands(str(spool_chain), str(spool_key), tls, str(config))
    subprocess.run(["sh", "-c", command], check=True)
    chain, private = Path(tls.cert_file), Path(tls.key_file)
    assert chain.read_bytes() == tls.chain and private.read_bytes() == tls.key
    assert stat.S_IMODE(chain.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o640
    assert private.stat().st_gid == config.stat().st_gid
    assert not spool_chain.exists() and not spool_key.exists()


def test_flash_installs_the_pair_before_the_config_step(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path)
    config = venue(tmp_path)
    router = FakeRouter(installed=("0.1.0", "ii"))
    plan = FlashPlan(
        claim="C-1", venue_config=config, portal_tls=tls_files.load(cert, key, config, NOW)
    )
    out = io.StringIO()
    result = flash(router, plan, JsonReporter(out))
    assert result["portal_tls"] == f"portal.venue.example: {CERT_FILE}, {KEY_FILE}"
    assert key.read_bytes() in router.uploads.values()
    assert cert.read_bytes() in router.uploads.values()
    commands = router.commands()
    placed = next(i for i, c in enumerate(commands) if c.startswith("sh -c install"))
    agent = next(i for i, c in enumerate(commands) if "apply-config" in c)
    assert placed < agent
    assert (
        f"install -D -m 0640 /var/cache/plaza-provision/portal-key.new {KEY_FILE}"
        in (commands[placed])
    )
    steps = [json.loads(x).get("step") for x in out.getvalue().splitlines()]
    assert steps.index("portal certificate") < steps.index("config (test and rollback)")


def test_the_command_line_refuses_half_a_pair_and_a_bad_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = make_pair(tmp_path, names=("other.example",))
    config = venue(tmp_path)

    def never(args: object) -> object:
        return lambda host, user, port: pytest.fail("no router may be touched")

    base = ["flash", "r1", "--claim", "C-1", "--venue-config", str(config), "--json"]
    assert cli.main([*base, "--portal-cert", str(cert)], make_runner=never) == errors.USAGE
    assert "go together" in capsys.readouterr().err
    code = cli.main([*base, "--portal-cert", str(cert), "--portal-key", str(key)], never)
    assert code == errors.USAGE
    assert "not portal.venue.example" in capsys.readouterr().err
