"""The ClientHello parser on real ClientHellos (Python's own TLS stack) and on hostile bytes."""

from __future__ import annotations

import random

import pytest

from gateway.garden.sni import MAX_HELLO, MAX_RECORD, Kind, parse_client_hello
from tests.fuzz.hellos import real_client_hello


def client_hello(server_name: str | None = "wallet.test", max_tls: str = "") -> bytes:
    """The first flight of a real TLS client: exactly what goes on the wire as the first TCP
    payload of a connection (one recipe for these tests and the fuzz properties)."""
    return real_client_hello(server_name, max_tls)


def records(handshake: bytes, *sizes: int) -> bytes:
    """Re-frame a handshake message into records of the given sizes (the rest in the last)."""
    out, pos = b"", 0
    for size in (*sizes, len(handshake)):
        chunk = handshake[pos : pos + size]
        if chunk:
            out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        pos += len(chunk)
    return out


def test_real_client_hello_with_sni() -> None:
    hello = parse_client_hello(client_hello("wallet.test"))
    assert hello.kind is Kind.SNI and hello.sni == "wallet.test"


def test_tls12_only_client_and_case_are_normalised() -> None:
    hello = parse_client_hello(client_hello("Shop.Example.TEST", max_tls="1.2"))
    assert hello.kind is Kind.SNI and hello.sni == "shop.example.test"


def test_real_client_hello_without_sni() -> None:
    assert parse_client_hello(client_hello(None)).kind is Kind.NO_SNI


def test_every_prefix_is_incomplete_until_the_name_is_whole() -> None:
    """A ClientHello cut anywhere is 'wait for more', never 'wrong', and the name is only
    reported once all of it has arrived."""
    data = client_hello("wallet.test")
    name_end = data.index(b"wallet.test") + len("wallet.test")
    for n in range(1, len(data)):
        hello = parse_client_hello(data[:n])
        if n < name_end:
            assert hello.kind is Kind.INCOMPLETE, (n, hello)
        else:
            assert hello.kind is Kind.SNI and hello.sni == "wallet.test", (n, hello)


def test_hello_fragmented_over_records() -> None:
    handshake = client_hello("wallet.test")[5:]
    for split in (1, 3, 40, len(handshake) - 1):
        hello = parse_client_hello(records(handshake, split))
        assert hello.kind is Kind.SNI and hello.sni == "wallet.test", split
    no_sni = client_hello(None)[5:]
    assert parse_client_hello(records(no_sni, 50)).kind is Kind.NO_SNI


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: wallet.test\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x80\x2e\x01\x03\x01",  # SSLv2-style ClientHello
        b"\x16\x02\x01\x00\x10",  # handshake record, SSL 2 version byte
        b"\x16\x03\x09\x00\x10",  # record version beyond TLS 1.3
        b"\x00" * 100,
    ],
)
def test_not_tls(data: bytes) -> None:
    assert parse_client_hello(data).kind is Kind.NOT_TLS


def test_oversized_lengths() -> None:
    big_record = b"\x16\x03\x01" + (MAX_RECORD + 1).to_bytes(2, "big") + b"\x01"
    assert parse_client_hello(big_record).kind is Kind.OVERSIZED
    big_hello = b"\x16\x03\x01\x00\x04\x01" + (MAX_HELLO + 1).to_bytes(3, "big")
    assert parse_client_hello(big_hello).kind is Kind.OVERSIZED


def _with_name(name: bytes, extra: bytes = b"") -> bytes:
    """A minimal ClientHello with a hand-made server_name extension."""
    entry = b"\x00" + len(name).to_bytes(2, "big") + name + extra
    ext_body = len(entry).to_bytes(2, "big") + entry
    ext = b"\x00\x00" + len(ext_body).to_bytes(2, "big") + ext_body
    body = (
        b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
        + len(ext).to_bytes(2, "big") + ext
    )  # fmt: skip
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def test_hand_made_hello_round_trips() -> None:
    assert parse_client_hello(_with_name(b"wallet.test")).sni == "wallet.test"


@pytest.mark.parametrize(
    "data",
    [
        _with_name(b"wallet.test."),  # RFC 6066: no trailing dot
        _with_name(b"wal let.test"),
        _with_name(b"wallet.test\x00evil.test"),
        _with_name("wället.test".encode()),  # not ASCII: IDNs travel as xn-- labels
        _with_name(b""),
        _with_name(b"a" * 300),
        _with_name(b"wallet.test", extra=b"\x00\x00\x09other.test"),  # two host names
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello, not a ClientHello
        b"\x16\x03\x01\x00\x00",  # empty record
    ],
)
def test_malformed(data: bytes) -> None:
    assert parse_client_hello(data).kind is Kind.MALFORMED


def test_inconsistent_extension_length_is_malformed() -> None:
    data = bytearray(client_hello("wallet.test"))
    at = data.index(b"wallet.test") - 2  # the host name's own length field
    data[at : at + 2] = (0xFFFF).to_bytes(2, "big")
    assert parse_client_hello(bytes(data)).kind is Kind.MALFORMED


def test_hostile_bytes_never_raise() -> None:
    """Random bytes, and a real hello with every byte flipped in turn: always a Hello."""
    rng = random.Random(8910)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(300)]
    samples += [b"\x16\x03\x01" + bytes(rng.randrange(256) for _ in range(200)) for _ in range(300)]
    real = client_hello("wallet.test")
    for i in range(len(real)):
        flipped = bytearray(real)
        flipped[i] ^= 0xFF
        samples.append(bytes(flipped))
    for data in samples:
        hello = parse_client_hello(data)
        assert isinstance(hello.kind, Kind)
        if hello.kind is Kind.SNI:
            assert hello.sni and hello.sni.isascii()


def test_empty_input_waits() -> None:
    assert parse_client_hello(b"").kind is Kind.INCOMPLETE
    assert parse_client_hello(b"\x16\x03").kind is Kind.INCOMPLETE
