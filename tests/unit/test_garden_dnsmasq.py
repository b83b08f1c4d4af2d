"""dnsmasq's share of the walled garden and of RFC 8910: nftset= and option 114 lines."""

from __future__ import annotations

from gateway.config import Config, GardenConfig, PortalConfig
from gateway.stations import dnsmasq
from plaza.wallet.config import WalletConfig

SETS = "4#inet#plaza#garden4,6#inet#plaza#garden6"


def test_nftset_line_per_garden_domain_and_wallet_host() -> None:
    config = Config(garden=GardenConfig(domains=("*.ocsp.example", "Merchant.Example")))
    conf = dnsmasq.render_conf(config)
    lines = [line for line in conf.splitlines() if line.startswith("nftset=")]
    assert lines == [
        f"nftset=/merchant.example/{SETS}",
        f"nftset=/ocsp.example/{SETS}",  # dnsmasq's /x/ covers x and every name below it
        f"nftset=/wallet.test/{SETS}",  # the default wallet issuer is always in
    ]


def test_alipay_wallet_hosts_are_in_the_garden() -> None:
    wallet = WalletConfig(
        dialect="alipay",
        authorize_url="https://openauth.alipay.test/oauth2/publicAppAuthorize.htm",
        gateway_url="https://openapi.alipay.test/gateway.do",
    )
    lines = dnsmasq.garden_lines(Config(wallet=wallet))
    assert lines == [f"nftset=/openapi.alipay.test/{SETS}", f"nftset=/openauth.alipay.test/{SETS}"]


def test_option_114_carries_the_api_url_forced() -> None:
    portal = PortalConfig(hostname="wifi.shop.example", cert_file="/c.pem", key_file="/k.pem")
    conf = dnsmasq.render_conf(Config(portal=portal))
    assert 'dhcp-option-force=114,"https://wifi.shop.example/api/captive"' in conf.splitlines()


def test_no_option_114_without_https() -> None:
    conf = dnsmasq.render_conf(Config())  # the default portal has no certificate
    assert "114" not in conf


def test_cache_forgets_before_garden_addresses_time_out() -> None:
    conf = dnsmasq.render_conf(Config()).splitlines()
    assert f"max-cache-ttl={dnsmasq.MAX_CACHE_TTL}" in conf
    assert dnsmasq.MAX_CACHE_TTL < 3600  # ruleset.GARDEN_TIMEOUT


def test_plain_http_garden_gets_its_own_sets() -> None:
    from gateway.stations.dnsmasq import garden_lines

    lines = garden_lines(Config(garden=GardenConfig(http_domains=("ocsp.example",))))
    assert "nftset=/ocsp.example/4#inet#plaza#garden_http4,6#inet#plaza#garden_http6" in lines
