"""Properties of the SNI parser (gateway/garden/sni.py), the first code to read a captive phone's
bytes.

Whatever arrives, `parse_client_hello` answers with a kind and never raises (its catch-all
`parser error` branch is never reached); a name it reports is a strict DNS name; a well-formed
hello gives back exactly the name it carries, however it is cut into records or segments.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from gateway.garden.sni import MAX_STREAM, Kind, parse_client_hello
from tests.conftest import ROOT
from tests.fuzz.hellos import (
    Hello,
    hellos,
    length_fields,
    real_client_hello,
    records,
    server_name_ext,
)

STRICT_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
CORPUS = ROOT / "bench" / "corpus" / "sni"


def check(data: bytes) -> None:
    """What holds for every input: a kind, no parser error, and only a strict name."""
    hello = parse_client_hello(data)
    assert isinstance(hello.kind, Kind)
    assert not hello.detail.startswith("parser error"), hello
    if hello.kind is Kind.SNI:
        assert STRICT_NAME.fullmatch(hello.sni) and len(hello.sni) <= 253, hello
    else:
        assert hello.sni == ""


@given(st.binary(max_size=3000))
def test_any_bytes(data: bytes) -> None:
    check(data)


@given(st.binary(max_size=2000), st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03"]))
def test_bytes_behind_a_handshake_record_header(data: bytes, header: bytes) -> None:
    check(header + len(data).to_bytes(2, "big") + data)
    check(header + len(data).to_bytes(2, "big") + b"\x01" + len(data).to_bytes(3, "big") + data)


@given(hellos())
def test_a_well_formed_hello_gives_its_name(case: tuple[Hello, str | None]) -> None:
    hello, name = case
    got = parse_client_hello(hello.wire())
    if name is None:
        assert got.kind is Kind.NO_SNI, got
    else:
        assert (got.kind, got.sni) == (Kind.SNI, name)


@given(hellos(), st.lists(st.integers(1, 300), max_size=6))
def test_fragmented_over_records_the_answer_is_the_same(
    case: tuple[Hello, str | None], splits: list[int]
) -> None:
    hello, _ = case
    whole = parse_client_hello(hello.wire())
    fragmented = parse_client_hello(hello.wire(splits))
    assert (fragmented.kind, fragmented.sni) == (whole.kind, whole.sni)


@given(hellos(), st.data())
def test_a_prefix_waits_for_more_or_gives_the_final_answer(
    case: tuple[Hello, str | None], data: st.DataObject
) -> None:
    """Cut anywhere: "incomplete", or already the whole hello's answer (a name once it has
    arrived; no name once only the body of the last, other extension is missing), never
    "malformed"."""
    hello, name = case
    wire = hello.wire()
    cut = data.draw(st.integers(1, len(wire) - 1))
    got = parse_client_hello(wire[:cut])
    if got.kind is Kind.SNI:
        assert got.sni == name and name.encode() in wire[:cut]
    elif got.kind is Kind.NO_SNI:
        assert name is None
    else:
        assert got.kind is Kind.INCOMPLETE, (cut, got)


@given(hellos(), st.data())
def test_flipped_bytes_never_crash(case: tuple[Hello, str | None], data: st.DataObject) -> None:
    wire = bytearray(case[0].wire())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] ^= data.draw(st.integers(1, 255))
    check(bytes(wire))


@given(hellos(), st.data())
def test_a_lying_length_field_never_crashes(
    case: tuple[Hello, str | None], data: st.DataObject
) -> None:
    hello, name = case
    wire = bytearray(hello.wire())
    offset, size = data.draw(st.sampled_from(length_fields(hello)))
    true = int.from_bytes(wire[offset : offset + size], "big")
    lie = data.draw(
        st.one_of(
            st.integers(0, (1 << (8 * size)) - 1),
            st.sampled_from([true - 1, true + 1, 0, (1 << (8 * size)) - 1]).filter(
                lambda n: 0 <= n < 1 << (8 * size)
            ),
        )
    )
    assume(lie != true)
    wire[offset : offset + size] = lie.to_bytes(size, "big")
    check(bytes(wire))
    got = parse_client_hello(bytes(wire))
    if got.kind is Kind.SNI:
        assert got.sni == name  # a lie elsewhere may still leave the name readable


@given(hellos(), st.data())
def test_truncated_then_padded_with_garbage(
    case: tuple[Hello, str | None], data: st.DataObject
) -> None:
    wire = case[0].wire()
    cut = data.draw(st.integers(0, len(wire)))
    check(wire[:cut] + data.draw(st.binary(max_size=200)))


HOSTILE = st.text(
    st.sampled_from("abcXYZ019-_.\n\r\t \x00/\\:é\u212a\u0131*"), min_size=0, max_size=40
)


@given(st.one_of(HOSTILE, st.builds(lambda a, b: a + b, st.just("wallet.test"), HOSTILE)))
@example("wallet.test\n")  # regression: `$` in the name pattern matched before a final newline
@example("wallet.test.")
@example("WALLET.test")
def test_only_a_strict_name_is_reported(name: str) -> None:
    raw = name.encode("utf-8")
    hello = Hello(extensions=[server_name_ext(raw)])
    got = parse_client_hello(hello.wire())
    lower = name.lower()
    if name.isascii() and STRICT_NAME.fullmatch(lower) and len(lower) <= 253:
        assert (got.kind, got.sni) == (Kind.SNI, lower)
    else:
        assert got.kind is Kind.MALFORMED, (name, got)


def test_a_trailing_newline_is_not_a_name() -> None:
    """Regression (found by the property above): "wallet.test\\n" was reported as a name."""
    got = parse_client_hello(Hello(extensions=[server_name_ext(b"wallet.test\n")]).wire())
    assert got.kind is Kind.MALFORMED


@given(st.integers(MAX_STREAM - 10, 4 * MAX_STREAM), st.integers(0, 255))
def test_a_huge_stream_is_cut_not_walked(size: int, fill: int) -> None:
    """Far more bytes than a hello needs: answered from the prefix (the deadline is the
    hang check)."""
    hello = Hello(extensions=[(0x0015, bytes([fill]) * 16000)])  # padding extension
    check(hello.wire() + bytes([fill]) * size)
    check(b"\x16\x03\x01\x40\x00" + bytes([fill]) * size)


@pytest.mark.parametrize("max_tls", ["", "1.2"])
@pytest.mark.parametrize("name", ["wallet.test", "Shop.Example.TEST", None])
def test_real_hellos_from_openssl(name: str | None, max_tls: str) -> None:
    got = parse_client_hello(real_client_hello(name, max_tls))
    if name is None:
        assert got.kind is Kind.NO_SNI
    else:
        assert (got.kind, got.sni) == (Kind.SNI, name.lower())


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*") if p.is_file())


def test_the_fuzzing_corpus_is_real_and_parses_as_named() -> None:
    """bench/corpus/sni/<name>__<what>.bin: the seed hellos of `make fuzz` parse to the name
    in their file name (`nosni` for none)."""
    files = corpus_files()
    assert len(files) >= 6
    for path in files:
        expected = path.name.split("__")[0]
        got = parse_client_hello(path.read_bytes())
        if expected == "nosni":
            assert got.kind is Kind.NO_SNI, path.name
        else:
            assert (got.kind, got.sni) == (Kind.SNI, expected), path.name


@given(st.sampled_from(range(64)), st.data())
def test_corpus_hellos_mutated(index: int, data: st.DataObject) -> None:
    files = corpus_files()
    assume(files)
    wire = bytearray(files[index % len(files)].read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.integers(0, 255))
    splits = data.draw(st.lists(st.integers(1, 500), max_size=3))
    check(bytes(wire))
    if wire[:1] == b"\x16":
        check(records(bytes(wire[5:]), 0x0301, *splits))
