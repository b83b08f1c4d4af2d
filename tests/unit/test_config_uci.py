"""gateway/config_uci.py: /etc/config/plaza onto the config dataclasses, with the TOML file's
checks, every error naming `plaza.<section>.<option>`; the CLI and the portal on UCI."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import config as cfg
from gateway import config_uci
from gateway.ops.cli import main as gateway_main
from portal.cli import EXIT_DISABLED as PORTAL_EXIT_DISABLED
from portal.cli import main as portal_main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "firmware_overlay" / "etc" / "config" / "plaza"


def reference(**replace: str) -> str:
    """The shipped file with its interface set (it ships without one), and `replace`:
    'old line' -> 'new line' edits."""
    text = REFERENCE.read_text(encoding="utf-8")
    text = text.replace("\t#option interface 'br-guest'", "\toption interface 'lo'")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "config"  # a `config` directory, as /etc/config
    folder.mkdir(exist_ok=True)
    path = folder / "plaza"
    path.write_text(text, encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: ") :]


MINIMAL = (
    "config gateway 'gateway'\nconfig lan 'lan'\n\toption interface 'br-guest'\n"
    "config portal 'portal'\nconfig wallet 'wallet'\n"
)


# -- what a good file gives ----------------------------------------------------------------
def test_the_reference_file_loads_with_its_openwrt_values(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, reference()))
    assert config.gateway.enabled is False  # disabled until configured
    assert config.gateway.state_dir == "/etc/plaza/state"  # survives reboot and sysupgrade
    # /etc/init.d/plaza garden: copies the cloud's names into dnsmasq's confdir, restarts it
    assert config.garden.dnsmasq_restart == ("/etc/init.d/plaza", "garden")
    assert config.lan.interface == "lo" and config.lan.upstream_dns == ("192.0.2.53",)
    # everything else is the dataclasses' default
    openwrt = cfg.GatewayConfig(
        enabled=False, state_dir="/etc/plaza/state", control_socket="/var/run/plaza/control.sock"
    )
    assert config == cfg.Config(
        gateway=openwrt,
        lan=cfg.LanConfig(interface="lo", lease_file="/tmp/dhcp.leases"),  # OpenWrt's dnsmasq's
        garden=cfg.GardenConfig(dnsmasq_restart=("/etc/init.d/plaza", "garden")),
    )


def test_options_map_onto_the_sections(tmp_path: Path) -> None:
    text = MINIMAL + (
        "config policy 'policy'\n\toption session_minutes '30'\n\toption max_session_minutes 90\n"
        "\toption idle_minutes 10\n\tlist trusted_macs '3c:22:fb:12:34:56'\n"
        "config garden 'garden'\n\tlist domains '*.cdn.example.com'\n"
        "\tlist domains 'wallet.example.com'\n"
        "config portal 'portal'\n\toption click_through 'yes'\n\toption port 8081\n"
        "config accounting 'accounting'\n\toption poll_seconds '0.5'\n"
        "config offer\n\toption title 'Coffee'\n\toption url 'https://x.test/o'\n"
        "config offer 'second'\n\toption title 'Tea'\n"
    )
    config = cfg.load(write(tmp_path, text))
    assert config.session == cfg.SessionConfig(default_minutes=30, max_minutes=90)
    assert config.policy.idle_minutes == 10
    assert config.policy.trusted_macs == ("3c:22:fb:12:34:56",)
    assert config.garden.domains == ("*.cdn.example.com", "wallet.example.com")
    assert config.portal.click_through is True and config.portal.port == 8081
    assert config.accounting.poll_seconds == 0.5
    assert [o.title for o in config.offers] == ["Coffee", "Tea"]
    assert config.offers[0].url == "https://x.test/o"


@pytest.mark.parametrize(
    ("word", "value"),
    [*[(w, True) for w in ("1", "on", "true", "yes", "enabled")]]
    + [(w, False) for w in ("0", "off", "false", "no", "disabled")],
)
def test_booleans_as_openwrt_writes_them(tmp_path: Path, word: str, value: bool) -> None:
    text = MINIMAL.replace(
        "config gateway 'gateway'\n", f"config gateway 'gateway'\n\toption enabled {word}\n"
    )
    assert cfg.load(write(tmp_path, text)).gateway.enabled is value


def test_round_trip_through_show_config(tmp_path: Path) -> None:
    """dump() writes every value; reading it back gives the same config, offers and lists."""
    config = cfg.Config(
        lan=cfg.LanConfig(interface="br-guest", upstream_dns=("1.1.1.1", "9.9.9.9")),
        portal=cfg.PortalConfig(merchant_name="Tom's 'Café'", terms="Line 1\nLine 2"),
        session=cfg.SessionConfig(default_minutes=45, max_minutes=600),
        offers=(cfg.OfferConfig(title="A"), cfg.OfferConfig(title="B", text_zh="乙")),
        accounting=cfg.AccountingConfig(poll_seconds=2.5),
    )
    text = config_uci.dump(config, cfg.SECTIONS, cfg.LISTS)
    assert "option session_minutes '45'" in text and "config offer\n" in text
    assert cfg.load(write(tmp_path, text)) == config


# -- bad input: each a clear error naming the UCI option -----------------------------------
BAD = {
    "wrong type": (
        {"option session_minutes '60'": "option session_minutes 'thirty'"},
        "plaza.policy.session_minutes: expected an integer, got 'thirty' (line ",
    ),
    "not a boolean": (
        {"option click_through '0'": "option click_through 'maybe'"},
        "plaza.portal.click_through: expected '1' or '0', got 'maybe'",
    ),
    "not a number": (
        {"option tick_seconds '1.0'": "option tick_seconds '1s'"},
        "plaza.gateway.tick_seconds: expected a number, got '1s'",
    ),
    "list where an option belongs": (
        {"option idle_minutes '0'": "list idle_minutes '0'"},
        "plaza.policy.idle_minutes: takes one value (line ",
    ),
    "option where a list belongs": (
        {"list upstream_dns '192.0.2.53'": "option upstream_dns '192.0.2.53 9.9.9.9'"},
        "plaza.lan.upstream_dns: a list (line ",
    ),
    "option typo": (
        {"option idle_minutes '0'": "option idle_minute '0'"},
        "plaza.policy.idle_minute (line ",
    ),
    "section typo": (
        {"config policy 'policy'": "config polcy 'policy'"},
        "unknown section type 'polcy'; did you mean 'policy'?",
    ),
    "a second policy section": (
        {"config garden 'garden'": "config policy\nconfig garden 'garden'"},
        "plaza.@policy[1] (line ",
    ),
    "a section named otherwise": (
        {"config cloud 'cloud'": "config cloud 'main'"},
        "plaza.main (line ",
    ),
    "an anonymous singleton": (
        {"config cloud 'cloud'": "config cloud"},
        "plaza.@cloud[0] (line ",
    ),
    "no interface": (
        {"\toption interface 'lo'": "\t#option interface 'br-guest'"},
        "plaza.lan.interface: not set",
    ),
    "a verify rule, in UCI names": (
        {"option dhcp_start '198.19.0.100'": "option dhcp_start '10.0.0.1'"},
        "plaza.lan.dhcp_start: 10.0.0.1 is outside the LAN 198.19.0.0/24",
    ),
    "a lease file that is no absolute path": (
        {"option lease_file '/tmp/dhcp.leases'": "option lease_file 'dhcp.leases'"},
        "plaza.lan.lease_file: must be a file's absolute path, got 'dhcp.leases'",
    ),
    "a cross-field rule, in UCI names": (
        {"option max_session_minutes '1440'": "option max_session_minutes '30'"},
        "plaza.policy.max_session_minutes must be >= session_minutes",
    ),
    "a policy rule, in UCI names": (
        {"option idle_minutes '0'": "option idle_minutes '60'"},
        "plaza.policy",
    ),
    "not UCI at all": ({"config cloud 'cloud'": "[cloud]"}, "not valid UCI: line "),
}


@pytest.mark.parametrize(("edits", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_input_names_the_option(tmp_path: Path, edits: dict[str, str], expected: str) -> None:
    message = error(tmp_path, reference(**edits))
    assert expected in message
    assert not re.search(r"\[[a-z_]+\]", message), "a TOML name in a UCI error"


@pytest.mark.parametrize("kind", config_uci.REQUIRED_SECTIONS)
def test_a_missing_section(tmp_path: Path, kind: str) -> None:
    text = MINIMAL.replace(f"config {kind} '{kind}'\n", "")
    if kind == "lan":
        text = text.replace("\toption interface 'br-guest'\n", "")
    assert error(tmp_path, text).startswith(f"no '{kind}' section: add `config {kind} '{kind}'`")


def test_a_typo_gets_did_you_mean(tmp_path: Path) -> None:
    message = error(tmp_path, reference(**{"option idle_minutes '0'": "option idle_minute '0'"}))
    assert "unknown option; did you mean 'idle_minutes'?" in message


def test_an_offer_needs_a_title_and_names_its_index(tmp_path: Path) -> None:
    text = reference() + "config offer\n\toption title 'A'\nconfig offer\n\toption text 'B'\n"
    assert error(tmp_path, text) == "plaza.@offer[1].title: required in every 'offer' section"
    text = reference() + "config offer\n\toption title 'A'\nconfig offer\n\toption title 'B'\n"
    text += "\toption url 'http://x.test/'\n"
    assert error(tmp_path, text) == "plaza.@offer[1]: url must be https://"


def test_not_utf8_and_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_bytes(b"config t\n option a '\xff'\n")
    with pytest.raises(cfg.ConfigError, match=r"not UTF-8 \(byte 20\)"):
        cfg.load(path)
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "config" / "absent")


def test_rename_covers_gateway_configs_message_forms() -> None:
    assert config_uci.rename("[lan] dhcp_start is after dhcp_end") == (
        "plaza.lan.dhcp_start is after dhcp_end"
    )
    assert config_uci.rename("[session] default_minutes must be at least 1") == (
        "plaza.policy.session_minutes must be at least 1"
    )
    assert config_uci.rename("[[offers]] #2: title must not be empty") == (
        "plaza.@offer[1]: title must not be empty"
    )
    assert config_uci.rename("[policy] 3c:22:fb:12:34:56 is in both") == (
        "plaza.policy 3c:22:fb:12:34:56 is in both"
    )
    assert config_uci.rename("[policy] ab:22:fb:12:34:56 is in both") == (
        "plaza.policy ab:22:fb:12:34:56 is in both"
    )


# -- which reader a path gets --------------------------------------------------------------
def test_the_reader_is_chosen_by_path_then_content(tmp_path: Path) -> None:
    assert config_uci.is_uci(Path("/etc/config/plaza"))  # need not exist: by its folder
    toml = tmp_path / "gateway.toml"
    toml.write_text("config t\n")
    assert not config_uci.is_uci(toml)  # .toml is TOML, whatever is in it
    assert not config_uci.is_uci(Path("/srv/config/gateway.toml"))  # even in a config folder
    sniffed = tmp_path / "new-config"
    sniffed.write_text("# a comment\n\npackage plaza\nconfig gateway 'gateway'\n")
    assert config_uci.is_uci(sniffed)
    sniffed.write_text("# a comment\n[lan]\ninterface = 'x'\n")
    assert not config_uci.is_uci(sniffed)
    sniffed.write_text("config = 1\n")
    assert not config_uci.is_uci(sniffed)


# -- the CLI and the portal on UCI ---------------------------------------------------------
def test_check_config_on_uci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, reference())
    assert gateway_main(["--config", str(path), "check-config", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "OK, but disabled (plaza.gateway.enabled is '0')" in out
    assert "uci set plaza.gateway.enabled=1" in out
    path.write_text(reference(**{"\toption interface 'lo'": "\toption interface 'nosuchif0'"}))
    assert gateway_main(["--config", str(path), "check-config"]) == 2
    assert "plaza.lan.interface: no such interface: 'nosuchif0'" in capsys.readouterr().err


def test_check_config_subprocess_names_the_uci_option(tmp_path: Path) -> None:
    path = write(
        tmp_path, reference(**{"option session_minutes '60'": "option session_minutes 'thirty'"})
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.ops.cli",
            "--config",
            str(path),
            "check-config",
            "--offline",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.startswith(
        f"plaza-gateway: {path}: plaza.policy.session_minutes: expected an integer, got 'thirty'"
    )
    assert run.stderr.count("\n") == 1


def test_run_refuses_a_disabled_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, reference())
    assert gateway_main(["--config", str(path), "run"]) == config_uci.EXIT_DISABLED == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "uci set plaza.gateway.enabled=1" in err


def test_the_portal_refuses_a_disabled_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, reference())
    assert portal_main(["run", "--config", str(path)]) == PORTAL_EXIT_DISABLED == 3
    assert "disabled" in capsys.readouterr().err
    path.write_text(reference(**{"option port '80'": "option port '0'"}))
    assert portal_main(["run", "--config", str(path)]) == 2
    assert "plaza.portal.port: port out of range" in capsys.readouterr().err


def test_show_config_prints_what_loads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, reference())
    assert gateway_main(["--config", str(path), "show-config"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("package plaza\n") and "option interface 'lo'" in shown
    again = tmp_path / "again"
    again.write_text(shown)
    assert cfg.load(again) == cfg.load(path)
    assert gateway_main(["--config", str(path), "show-config", "--format", "toml"]) == 0
    toml = tmp_path / "shown.toml"
    toml.write_text(capsys.readouterr().out)
    assert cfg.load(toml) == cfg.load(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_portal_serves_from_the_uci_config(tmp_path: Path) -> None:
    """plaza-portal reads /etc/config/plaza through gateway.config like the daemon does."""
    port, intercept = free_port(), free_port()
    path = write(
        tmp_path,
        reference(
            **{
                "option enabled '0'": "option enabled '1'",
                "option state_dir '/etc/plaza/state'": f"option state_dir '{tmp_path}'",
                "option control_socket '/var/run/plaza/control.sock'": (
                    f"option control_socket '{tmp_path / 'absent.sock'}'"
                ),
                "option port '80'": f"option port '{port}'",
                "option intercept_port '8080'": f"option intercept_port '{intercept}'",
                "option merchant_name 'Plaza Demo Café'": "option merchant_name 'Harbour UCI'",
            }
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "portal.cli", "run", "--config", str(path), "--listen", "127.0.0.1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "portal did not start"
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        page = conn.getresponse()
        body = page.read().decode()
        conn.close()
        assert page.status == 200 and "Harbour UCI" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)
