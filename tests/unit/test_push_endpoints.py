"""Which push endpoints the cloud may contact (cloud/push/endpoints.py), with a table for
DNS: the rule alone, no sockets (the connection side is in test_webpush.py)."""

from __future__ import annotations

import socket

import pytest

from cloud.push.endpoints import EndpointGuard, EndpointRefused, parse_networks

TABLE = {
    "fcm.googleapis.com": ["142.250.74.106", "2a00:1450:4001:82b::200a"],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "ula.example": ["fd00::1"],
    "cgnat.example": ["100.64.1.1"],
    "nat64.example": ["64:ff9b::a00:1"],  # 10.0.0.1 through NAT64
    "mapped.example": ["::ffff:127.0.0.1"],
    "half.example": ["93.184.216.34", "127.0.0.1"],  # one public, one not
    "multicast.example": ["224.0.0.251"],
    "lab.example": ["198.18.0.7"],
}


def table(host: str, port: int) -> list[str]:
    if host not in TABLE:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return TABLE[host]


PUBLIC_ONLY = EndpointGuard((), table)


def test_a_public_push_service_passes_at_its_first_address() -> None:
    assert PUBLIC_ONLY.check("https://fcm.googleapis.com/fcm/send/abc") == "142.250.74.106"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/push/x",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://8.8.8.8/",  # public, but a literal: push services have names
        "https://[::ffff:127.0.0.1]/",
        "https://2130706433/",  # 127.0.0.1 as one number
        "https://0x7f.1/",
        "https://127.1/",
    ],
)
def test_ip_literals_are_refused(url: str) -> None:
    with pytest.raises(EndpointRefused, match=r"IP address|a number") as caught:
        PUBLIC_ONLY.check(url)
    assert not caught.value.temporary


@pytest.mark.parametrize(
    "host",
    [
        "internal.example",
        "metadata.example",
        "ula.example",
        "cgnat.example",
        "nat64.example",
        "mapped.example",
        "half.example",
        "multicast.example",
        "lab.example",
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(EndpointRefused, match="non-public address"):
        PUBLIC_ONLY.check(f"https://{host}/push/x")


def test_a_name_that_does_not_resolve_is_a_temporary_refusal() -> None:
    with pytest.raises(EndpointRefused, match="does not resolve") as caught:
        PUBLIC_ONLY.check("https://nowhere.example/x")
    assert caught.value.temporary


@pytest.mark.parametrize("url", ["http://fcm.googleapis.com/x", "https:///x", "https://a:99999/"])
def test_not_an_https_url_with_a_host(url: str) -> None:
    with pytest.raises(EndpointRefused):
        PUBLIC_ONLY.check(url)


def test_the_allowed_networks_let_the_lab_in_and_nothing_else() -> None:
    lab = EndpointGuard(parse_networks("198.18.0.0/15, 127.0.0.0/8 2001:db8::/32"), table)
    assert lab.check("https://lab.example/push/x") == "198.18.0.7"
    assert lab.check("https://127.0.0.1:8443/push/x") == "127.0.0.1"
    assert lab.check("https://[2001:db8::5]/") == "2001:db8::5"
    assert lab.check("https://fcm.googleapis.com/x") == "142.250.74.106"  # public still fine
    for url in ("https://internal.example/", "https://10.0.0.1/", "https://[::1]/"):
        with pytest.raises(EndpointRefused):
            lab.check(url)


def test_a_bad_network_setting_is_named() -> None:
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks("127.0.0.0/8,10.0.0.0/33")
