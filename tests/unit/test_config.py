from pathlib import Path

import pytest

from gateway import config as cfg
from gateway.ops.cli import main as gateway_main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    default = cfg.Config()
    cfg.verify(default)
    assert cfg.load(write(tmp_path, cfg.to_toml(default))) == default


def test_values_are_read(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[lan]\ninterface = "lan0"\n[session]\ndefault_minutes = 30\n'))
    assert c.lan.interface == "lan0"
    assert c.session.default_minutes == 30
    assert c.portal.hostname == "portal.plaza.test"  # untouched sections keep defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[lan]\ninterfce = 'br-lan'\n", "unknown key 'interfce' in [lan]"),
        ("[lna]\n", "unknown section [lna]"),
        ("[session]\ndefault_minutes = 'ten'\n", "[session] default_minutes: expected an integer"),
        ("[session]\ndefault_minutes = true\n", "expected an integer"),
        ("[lan]\naddress = '198.19.0.1'\n", "[lan] address: expected an IPv4 ADDRESS/PREFIX"),
        ("[lan]\ndhcp_start = '10.0.0.5'\n", "[lan] dhcp_start: 10.0.0.5 is outside the LAN"),
        ("[lan]\ninterface = 'this-name-is-far-too-long'\n", "not a valid interface name"),
        ("[lan]\nupstream_dns = ['dns.example']\n", "[lan] upstream_dns: not an IP address"),
        ("[portal]\nport = 70000\n", "[portal] port: port out of range"),
        ("[portal]\nintercept_port = 80\n", "https_port and intercept_port must all differ"),
        ("[portal]\nclick_through = 1\n", "[portal] click_through: expected true or false"),
        ("[wallet]\ndialect = 'wechat'\n", "[wallet] dialect: 'oidc' or 'alipay'"),
        ("[wallet]\nissuer = 'http://wallet.test'\n", "[wallet] issuer: must be an https:// URL"),
        ("[wallet]\ndialect = 'alipay'\n", "[wallet] app_id is required"),
        ("[[offers]]\ntext = 'x'\n", "[offers[0]] is missing title"),
        ("[[offers]]\ntitle = 'a'\nurl = 'http://x'\n", "url must be https://"),
        ("[garden]\ndomains = ['bad domain']\n", "[garden] domains: not a domain name"),
        # A trailing newline would start a second line in dnsmasq's config.
        ('[garden]\ndomains = ["shop.test\\n"]\n', "[garden] domains: not a domain name"),
        ('[portal]\nhostname = "portal.test\\n"\n', "[portal] hostname: not a valid host"),
        ('[lan]\ninterface = "br-lan\\n"\n', "not a valid interface name"),
        ("[garden]\ndnsmasq_restart = ['']\n", "[garden] dnsmasq_restart: a command"),
        ("[garden]\ndomains = ['*.com']\n", "[garden] domains: not a domain name"),
        ("[portal]\nbrand_color = 'red'\n", "brand_color: expected #rrggbb"),
        ("[portal]\nhostname = 'bad host'\n", "[portal] hostname: not a valid host name"),
        ("[session]\nmax_minutes = 5\n", "max_minutes must be >= default_minutes"),
        ("[gateway]\nstate_dir = 'relative'\n", "must be an absolute path"),
        ("[lan]\nlease_file = 'dhcp.leases'\n", "[lan] lease_file: must be a file's absolute"),
        ("[lan]\nlease_file = '/tmp/'\n", "[lan] lease_file: must be a file's absolute path"),
        # written into dnsmasq's config too: a newline would start a line of its own
        ('[lan]\nlease_file = "/tmp/x\\nleasefile-ro"\n', "[lan] lease_file: must be a file"),
        ("lan = 3\n", "[lan] must be a table"),
        ("[lan\n", "not valid TOML"),
        ("[gateway]\nmetrics_listen = 'nowhere'\n", "[gateway] metrics_listen:"),
        ("[policy]\nquota_total_mb = -1\n", "[policy] quota_total_mb must be between 0"),
        ("[policy]\nrate_up_kbit = '1M'\n", "[policy] rate_up_kbit: expected an integer"),
        ("[policy]\ntrusted_macs = ['02:00:00:00:00:zz']\n", "[policy] trusted_macs: not a"),
        ("[policy]\nblocked_macs = ['01:00:5e:00:00:01']\n", "not a station MAC address"),
        (
            "[policy]\ntrusted_macs = ['02:00:00:00:00:01']\n"
            "blocked_macs = ['02-00-00-00-00-01']\n",
            "02:00:00:00:00:01 is in both trusted_macs and blocked_macs",
        ),
        (
            "[policy]\ntrusted_macs = ['02:00:00:00:00:01', '02:00:00:00:00:01']\n",
            "trusted_macs: 02:00:00:00:00:01 is listed twice",
        ),
        (
            "[policy]\nquota_up_mb = 200\nquota_total_mb = 100\n",
            "quota_up_mb (200) is larger than quota_total_mb (100)",
        ),
        ("[policy]\nidle_minutes = 60\n", "idle timeout (3600 s) is not shorter than the session"),
        ("[policy]\nspeed = 1\n", "unknown key 'speed' in [policy]"),
        ("[accounting]\npoll_seconds = 0\n", "[accounting] poll_seconds must be between"),
        ("[accounting]\ninterim_seconds = 1\n", "interim_seconds must be 0"),
    ],
)
def test_bad_config_is_refused_with_a_message_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)  # the file is named too


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "nope.toml")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "[session]\ndefault_minutes = 10\n")
    assert gateway_main(["--config", str(good), "check-config", "--offline"]) == 0
    assert "OK" in capsys.readouterr().out
    good.write_text("[lan]\nbogus = 1\n")
    assert gateway_main(["--config", str(good), "check-config", "--offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'bogus'" in err


def test_check_config_names_an_unknown_interface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[lan]\ninterface = 'nosuchif0'\n")
    assert gateway_main(["--config", str(path), "check-config"]) == 2
    assert "no such interface: 'nosuchif0'" in capsys.readouterr().err


def test_offers_and_sections_round_trip(tmp_path: Path) -> None:
    config = cfg.Config(
        offers=(cfg.OfferConfig(title="Coffee -20%", text="Today only", url="https://x.test/o"),),
        garden=cfg.GardenConfig(domains=("ocsp.plaza.test", "*.cdn.test")),
        reconnect=cfg.ReconnectConfig(trust_mac=True),
        portal=cfg.PortalConfig(venue_info='Line one\n"quoted" \\ 广场\ttab'),
    )
    assert cfg.load(write(tmp_path, cfg.to_toml(config))) == config


def test_wallet_hosts_are_derived_from_the_dialect() -> None:
    assert cfg.wallet_hosts(cfg.WalletConfig()) == ["wallet.test"]
    alipay = cfg.WalletConfig(
        dialect="alipay",
        authorize_url="https://openauth.wallet.test/x",
        gateway_url="https://openapi.wallet.test/gateway.do",
    )
    assert cfg.wallet_hosts(alipay) == ["openapi.wallet.test", "openauth.wallet.test"]


def test_policy_section_is_read_and_shapes_the_defaults(tmp_path: Path) -> None:
    c = cfg.load(
        write(
            tmp_path,
            "[session]\ndefault_minutes = 90\n[policy]\nidle_minutes = 15\n"
            "quota_total_mb = 500\nrate_down_kbit = 20000\nmax_clients = 50\n"
            "trusted_macs = ['02:AA:00:00:00:01']\n[accounting]\ninterim_seconds = 600\n",
        )
    )
    policy = c.policy.defaults(c.session.default_minutes)
    assert (policy.session_minutes, policy.idle_seconds) == (90, 900)
    assert (policy.quota_total_mb, policy.rate_down_kbit, policy.rate_up_kbit) == (500, 20000, 0)
    access = c.policy.access()
    assert access.trusted == {"02:aa:00:00:00:01"} and access.max_clients == 50
    assert c.accounting.interim_seconds == 600
    assert cfg.load(write(tmp_path, cfg.to_toml(c))) == c


def test_cloud_section_is_read_and_round_trips(tmp_path: Path) -> None:
    c = cfg.load(
        write(
            tmp_path,
            "[cloud]\nurl = 'https://cloud.plaza.test/'\nca_bundle = '/etc/plaza/ca.pem'\n"
            "heartbeat_seconds = 20\nupload_seconds = 2.5\n",
        )
    )
    assert c.cloud == cfg.CloudConfig(
        url="https://cloud.plaza.test/", ca_bundle="/etc/plaza/ca.pem",
        heartbeat_seconds=20.0, upload_seconds=2.5,
    )  # fmt: skip
    assert cfg.load(write(tmp_path, cfg.to_toml(c))) == c
    assert cfg.Config().cloud.url == ""  # enrolment's URL is used; the uplink needs cloud.json
    for url in ("http://127.0.0.1:8000", "http://[::1]:8000/plaza", "https://c.test:8443/x"):
        assert cfg.load(write(tmp_path, f"[cloud]\nurl = '{url}'\n")).cloud.url == url


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cloud]\nenabled = true\n", "unknown key 'enabled' in [cloud]"),
        ("[cloud]\nurl = 'http://cloud.plaza.test'\n", "[cloud] url: expected an https:// URL"),
        ("[cloud]\nurl = 'http://127.0.0.2'\n", "http:// only to 127.0.0.1 or [::1]"),
        ("[cloud]\nurl = 'https://user@cloud.test'\n", "[cloud] url: expected an https://"),
        ("[cloud]\nurl = 'https://c.test/a b'\n", "[cloud] url: expected an https://"),
        ("[cloud]\nurl = 3\n", "[cloud] url: expected a string"),
        ("[cloud]\nca_bundle = 'ca.pem'\n", "[cloud] ca_bundle: must be an absolute path"),
        ("[cloud]\nheartbeat_seconds = 0\n", "[cloud] heartbeat_seconds must be between 1"),
        ("[cloud]\nheartbeat_seconds = 60\n", "offline after 90 s"),
        ("[cloud]\nheartbeat_seconds = '30s'\n", "[cloud] heartbeat_seconds: expected a number"),
        ("[cloud]\nupload_seconds = 0.1\n", "[cloud] upload_seconds must be between 0.5"),
        ("cloud = 'https://c.test'\n", "[cloud] must be a table"),
    ],
)
def test_bad_cloud_config_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(write(tmp_path, text))
    assert message in str(err.value)
