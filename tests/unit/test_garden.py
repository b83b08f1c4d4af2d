"""Walled-garden decisions: which names, and the verdict per connection from queued packets."""

from __future__ import annotations

import logging

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Raw

from gateway.config import Config, GardenConfig
from gateway.garden import inspector as gardenmod
from gateway.garden.inspector import Garden, Inspector, RateLimitedLog, Verdict, dissect
from plaza.wallet.config import WalletConfig
from tests.conftest import FakeClock
from tests.fuzz.hellos import real_client_hello as client_hello

PHONE, WALLET = "198.19.0.100", "192.0.2.20"
GARDEN = Garden.of(["wallet.test", "*.pay.example"])


def pkt(payload: bytes = b"", seq: int = 1000, sport: int = 40000, src: str = PHONE) -> bytes:
    layer = IP(src=src, dst=WALLET) / TCP(sport=sport, dport=443, seq=seq, flags="PA")
    return bytes(layer / Raw(payload)) if payload else bytes(layer)


def inspector(clock: FakeClock | None = None) -> Inspector[int]:
    clock = clock or FakeClock()
    return Inspector(GARDEN, clock=clock, reasons=RateLimitedLog(gardenmod.log, clock=clock))


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("wallet.test", True),
        ("WALLET.test.", True),
        ("www.wallet.test", False),  # exact names are exact
        ("evilwallet.test", False),
        ("a.pay.example", True),  # *.x: any depth below x
        ("a.b.pay.example", True),
        ("pay.example", False),  # ... but not x itself
        ("notpay.example", False),
        ("cdn-neighbour.test", False),
        ("", False),
    ],
)
def test_garden_names(host: str, allowed: bool) -> None:
    assert GARDEN.allows(host) is allowed


def test_wallet_hosts_are_always_in_the_garden() -> None:
    oidc = Garden.from_config(Config(garden=GardenConfig(domains=("*.ocsp.example",))))
    assert oidc.allows("wallet.test") and oidc.allows("r3.ocsp.example")
    alipay = Config(
        wallet=WalletConfig(
            dialect="alipay",
            authorize_url="https://openauth.alipay.test/oauth2/publicAppAuthorize.htm",
            gateway_url="https://openapi.alipay.test/gateway.do",
        )
    )
    g = Garden.from_config(alipay)
    assert g.allows("openauth.alipay.test") and g.allows("openapi.alipay.test")
    assert oidc.dns_domains() == ["ocsp.example", "wallet.test"]


# -- packets -----------------------------------------------------------------------------------
def test_dissect_ipv4_ipv6_and_padding() -> None:
    seg = dissect(pkt(b"hello", seq=7))
    assert seg is not None
    assert seg.flow == (PHONE, 40000, WALLET, 443)
    assert (seg.seq, seg.payload, seg.complete) == (7, b"hello", True)
    padded = dissect(pkt() + b"\x00" * 6)  # Ethernet minimum-size padding past the IP length
    assert padded is not None and padded.payload == b""
    v6 = bytes(
        IPv6(src="2001:db8::5", dst="2001:db8::20")
        / IPv6ExtHdrDestOpt()
        / TCP(sport=1, dport=443)
        / Raw(b"abc")
    )
    seg6 = dissect(v6 + b"XX")
    assert seg6 is not None and seg6.payload == b"abc" and seg6.flow[0] == "2001:db8::5"


def test_dissect_sees_a_partial_copy_and_non_tcp() -> None:
    whole = pkt(b"x" * 100)
    seg = dissect(whole[:-10])
    assert seg is not None and not seg.complete and len(seg.payload) == 90
    assert dissect(bytes(IP(dst=WALLET) / UDP(dport=443) / Raw(b"quic"))) is None
    assert dissect(b"") is None
    assert dissect(b"\x70garbage") is None


# -- verdicts ----------------------------------------------------------------------------------
def test_one_packet_decides_a_garden_connection() -> None:
    insp = inspector()
    assert insp.packet(pkt(client_hello("wallet.test")), 1) == [(1, Verdict.ALLOW)]
    assert insp.packet(pkt(client_hello("a.pay.example"), sport=2), 2) == [(2, Verdict.ALLOW)]
    assert insp.stats["allowed"] == 2 and not insp.held


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (client_hello("cdn-neighbour.test"), "not-garden"),
        (client_hello(None), "no-sni"),
        (b"GET / HTTP/1.1\r\n\r\n", "not-tls"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "malformed"),
        (b"\x16\x03\x01\xff\xff\x01", "oversized"),
    ],
)
def test_refusals(payload: bytes, kind: str) -> None:
    insp = inspector()
    assert insp.packet(pkt(payload), 1) == [(1, Verdict.REFUSE)]
    assert insp.stats[f"refused:{kind}"] == 1 and not insp.held


def test_bare_segment_passes_undecided() -> None:
    assert inspector().packet(pkt(b""), 1) == [(1, Verdict.PASS)]


def test_garbled_packet_is_refused_not_raised() -> None:
    insp = inspector()
    assert insp.packet(b"\x45\x00", 1) == [(1, Verdict.REFUSE)]
    assert insp.packet(bytes(IP(dst=WALLET) / UDP(dport=443)), 2) == [(2, Verdict.REFUSE)]
    assert insp.stats["refused:garbled"] == 2


def test_split_hello_is_held_then_decided_together() -> None:
    """A name in the second segment: the first is held (nothing reaches the server yet)."""
    data = client_hello("wallet.test")
    cut = data.index(b"wallet.test") - 10
    insp = inspector()
    assert insp.packet(pkt(data[:cut], seq=1000), "a") == []
    assert insp.packet(pkt(data[:cut], seq=1000), "a-again") == [("a-again", Verdict.DROP)]
    assert insp.packet(pkt(data[cut:], seq=1000 + cut), "b") == [
        ("a", Verdict.ALLOW),
        ("b", Verdict.ALLOW),
    ]
    assert not insp.held and insp.stats["duplicates"] == 1


def test_split_hello_to_a_non_garden_name_is_refused_once() -> None:
    data = client_hello("cdn-neighbour.test")
    cut = 60
    insp = inspector()
    assert insp.packet(pkt(data[:cut]), "a") == []
    assert insp.packet(pkt(data[cut:], seq=1000 + cut), "b") == [
        ("a", Verdict.REFUSE),  # carries the reset
        ("b", Verdict.DROP),
    ]


def test_sequence_wraps_and_overlap_is_trimmed() -> None:
    data = client_hello("wallet.test")
    start = 2**32 - 20  # the hello crosses the sequence-number wrap
    insp = inspector()
    assert insp.packet(pkt(data[:50], seq=start), 1) == []
    # a resent segment overlapping the held bytes, then carrying the rest
    rest = insp.packet(pkt(data[40:], seq=(start + 40) % 2**32), 2)
    assert rest == [(1, Verdict.ALLOW), (2, Verdict.ALLOW)]


def test_gap_is_refused() -> None:
    data = client_hello("wallet.test")
    insp = inspector()
    insp.packet(pkt(data[:50]), 1)
    assert insp.packet(pkt(data[60:], seq=1060), 2) == [(1, Verdict.REFUSE), (2, Verdict.DROP)]
    assert insp.stats["refused:out-of-order"] == 1


def test_held_hello_expires(clock: FakeClock) -> None:
    insp = inspector(clock)
    insp.packet(pkt(client_hello("wallet.test")[:50]), 1)
    assert insp.next_deadline() == clock.now + gardenmod.HOLD_SECONDS
    clock.advance(gardenmod.HOLD_SECONDS - 0.1)
    assert insp.expire() == []
    clock.advance(0.2)
    assert insp.expire() == [(1, Verdict.REFUSE)]
    assert insp.next_deadline() is None


def test_partial_copy_cannot_be_held() -> None:
    """The queue copies at most COPY_RANGE bytes: a cut packet cannot be continued."""
    data = client_hello("wallet.test")
    insp = inspector()
    assert insp.packet(pkt(data[:50])[:-5], 1) == [(1, Verdict.REFUSE)]
    assert insp.stats["refused:truncated"] == 1


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gardenmod, "MAX_FLOWS", 3)
    head = client_hello("wallet.test")[:50]
    insp = inspector()
    for port in range(3):
        assert insp.packet(pkt(head, sport=port), port) == []
    assert insp.packet(pkt(head, sport=99), 99) == [(99, Verdict.REFUSE)]
    assert len(insp.held) == 3
    released = insp.release_all()
    assert sorted(h for h, v in released if v is Verdict.REFUSE) == [0]  # one reset carrier
    assert not insp.held


def test_segment_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gardenmod, "MAX_SEGMENTS", 3)
    data = client_hello("wallet.test")
    insp = inspector()
    out: list = []
    for i in range(3):
        out = insp.packet(pkt(data[i * 5 : i * 5 + 5], seq=1000 + i * 5), i)
    assert out == [(0, Verdict.REFUSE), (1, Verdict.DROP), (2, Verdict.DROP)]


def test_refusals_are_logged_once_per_kind_with_a_rate_limit(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    insp = inspector(clock)
    with caplog.at_level(logging.INFO, logger="plaza.garden"):
        for port in range(50):
            insp.packet(pkt(b"garbage", sport=port), port)
            insp.packet(pkt(client_hello(None), sport=1000 + port), port)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2  # one per kind, not one per packet
        clock.advance(gardenmod.LOG_INTERVAL + 1)
        insp.packet(pkt(b"garbage", sport=7), 7)
        assert "(+49 more since the last report)" in caplog.records[-1].getMessage()
    assert insp.stats["refused:not-tls"] == 51


def test_dissect_refuses_malformed_headers() -> None:
    import pytest

    good = pkt(b"hello")
    for bad in (
        good[:12],  # truncated IPv4 header
        bytes([0x41]) + good[1:],  # IHL 4 bytes: shorter than a header
        good[:20] + good[20:32],  # truncated TCP header
        good[:6] + b"\x20\x00" + good[8:],  # IPv4 "more fragments"
    ):
        with pytest.raises(ValueError):
            dissect(bad)
