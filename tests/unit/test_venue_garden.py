"""The cloud's walled-garden names on the router: checked, written for dnsmasq, restarted once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Config, GardenConfig, GatewayConfig
from gateway.garden.venue import VenueGarden
from gateway.stations import dnsmasq
from plaza.validators import MAX_GARDEN_DOMAINS


def make_config(tmp_path: Path, restart: tuple[str, ...] = ()) -> Config:
    return Config(
        gateway=GatewayConfig(state_dir=str(tmp_path / "state")),
        garden=GardenConfig(domains=("bank.test",), dnsmasq_restart=restart),
    )


def write_cloud(config: Config, domains: object, version: int = 1) -> None:
    path = Path(config.gateway.state_dir) / "cloud-config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"version": version, "config": {"garden": {"domains": domains}}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)  # a new inode, as the uplink's atomic write makes


def fragment(config: Config) -> str:
    return (dnsmasq.fragments_dir(config) / dnsmasq.CLOUD_GARDEN).read_text()


def test_without_a_cloud_file_the_router_garden_stands_and_nothing_restarts(tmp_path: Path):
    config = make_config(tmp_path)
    venue = VenueGarden(config)
    garden = venue.check()
    assert garden is not None and garden.allows("bank.test")
    assert not garden.allows("shop.test")
    assert "nftset=" not in fragment(config)  # the router's names are in dnsmasq.conf itself
    assert not venue.restart_due
    assert venue.check() is None  # one stat, nothing new


def test_cloud_names_join_the_garden_and_dnsmasq_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    venue = VenueGarden(config)
    venue.check()
    write_cloud(config, ["Shop.Test.", "*.cdn.shop.test", "bank.test", "shop.test"])
    garden = venue.check()
    assert garden is not None
    assert garden.allows("shop.test") and garden.allows("img.cdn.shop.test")
    assert not garden.allows("cdn.shop.test")  # `*.x` is below x only, as in the TOML
    assert garden.allows("bank.test") and garden.allows("wallet.test")
    lines = [line for line in fragment(config).splitlines() if line.startswith("nftset=")]
    assert [line.split("/")[1] for line in lines] == ["cdn.shop.test", "shop.test"]
    assert venue.restart_due and venue.cloud == ["shop.test", "*.cdn.shop.test", "bank.test"]
    venue.restart_due = False
    write_cloud(config, ["shop.test", "*.cdn.shop.test"], version=2)  # same names, new file
    assert venue.check() is not None
    assert not venue.restart_due  # dnsmasq's config did not change: no restart


@pytest.mark.parametrize(
    "domains",
    [
        ["shop.test\nserver=/#/192.0.2.66"],  # a second dnsmasq line
        ["shop.test/192.0.2.66"],
        ["shop test"],
        ["*"],
        ["*.com"],  # a whole top-level domain before login
        [""],
        [7],
        "shop.test",
        [f"n{i}.test" for i in range(MAX_GARDEN_DOMAINS + 1)],
    ],
)
def test_a_hostile_or_malformed_list_is_refused_whole(
    tmp_path: Path, domains: object, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    venue = VenueGarden(config)
    write_cloud(config, ["shop.test"])
    venue.check()
    write_cloud(config, domains, version=2)
    with caplog.at_level(logging.ERROR, "plaza.garden"):
        garden = venue.check()
        assert venue.check() is None
    assert garden is not None and not garden.allows("shop.test") and garden.allows("bank.test")
    text = fragment(config)
    assert "nftset=" not in text and "192.0.2.66" not in text and "server=" not in text
    assert len([r for r in caplog.records if "not used" in r.getMessage()]) == 1  # logged once


def test_a_torn_cloud_file_leaves_the_router_garden(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    venue = VenueGarden(config)
    write_cloud(config, ["shop.test"])
    assert venue.check().allows("shop.test")
    (Path(config.gateway.state_dir) / "cloud-config.json").write_text('{"version": 3, "conf')
    garden = venue.check()
    assert garden is not None and not garden.allows("shop.test")


def test_restart_runs_the_configured_command_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    config = make_config(tmp_path, (sys.executable, "-c", script, str(marker), "a; rm -rf /"))
    venue = VenueGarden(config)
    write_cloud(config, ["shop.test"])
    venue.check()
    assert venue.restart_due
    assert venue.restart_dnsmasq()
    assert marker.read_text() == "a; rm -rf /"  # one argument, never a shell command
    assert venue.restarts == {"ok": 1, "failed": 0} and not venue.restart_due


def test_a_failing_or_missing_restart_command_is_counted_not_raised(tmp_path: Path) -> None:
    failing = VenueGarden(make_config(tmp_path, (sys.executable, "-c", "raise SystemExit(3)")))
    assert not failing.restart_dnsmasq() and failing.restarts["failed"] == 1
    missing = VenueGarden(make_config(tmp_path, (str(tmp_path / "no-such-command"),)))
    assert not missing.restart_dnsmasq() and missing.restarts["failed"] == 1
    unset = VenueGarden(make_config(tmp_path))
    assert not unset.restart_dnsmasq() and unset.restarts == {"ok": 0, "failed": 0}


def test_dnsmasq_reads_the_generated_config_with_the_cloud_fragment(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    conf = dnsmasq.write(config, tmp_path / "etc")
    write_cloud(config, ["shop.test", "*.cdn.shop.test"])
    VenueGarden(config).check()
    assert f"conf-dir={dnsmasq.fragments_dir(config)},*.conf" in conf.read_text()
    done = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "syntax check OK" in done.stderr


@pytest.mark.parametrize("opener", ["*.co.uk", "*.github.io", "*.com.cn", "*.CO.UK."])
def test_a_wildcard_over_a_public_suffix_from_the_cloud_is_refused_whole(
    tmp_path: Path, opener: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A compromised cloud cannot open thousands of sites before login: the router checks
    the public suffix list itself and refuses the cloud's whole list (logged), keeping its
    own names; a venue's own wildcard under such a suffix is fine."""
    config = make_config(tmp_path)
    venue = VenueGarden(config)
    write_cloud(config, ["shop.test", "*.cafe-uno.co.uk"])
    garden = venue.check()
    assert garden is not None and garden.allows("img.cafe-uno.co.uk")
    write_cloud(config, ["shop.test", opener, "*.cafe-uno.co.uk"], version=2)
    with caplog.at_level(logging.ERROR, "plaza.garden"):
        garden = venue.check()
    assert garden is not None
    assert not garden.allows("anything.co.uk") and not garden.allows("evil.github.io")
    assert not garden.allows("shop.test") and not garden.allows("img.cafe-uno.co.uk")
    assert garden.allows("bank.test") and garden.allows("wallet.test")  # the router's own
    assert venue.cloud == []
    assert "nftset=" not in fragment(config)
    [record] = [r for r in caplog.records if "not used" in r.getMessage()]
    assert "public suffix" in record.getMessage()
