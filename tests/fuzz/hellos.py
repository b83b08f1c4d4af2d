"""ClientHellos built field by field, and hypothesis strategies that make them.

The parser is tested against hellos whose every length we chose, so a property can say what
the right answer is (this name, or none) and a mutation can lie about exactly one length.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field

from hypothesis import strategies as st

EXT_SERVER_NAME = 0x0000
EXT_ECH = 0xFE0D  # draft-ietf-tls-esni: encrypted_client_hello
EXT_KEY_SHARE = 0x0033
EXT_SUPPORTED_VERSIONS = 0x002B
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]  # RFC 8701


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def server_name_ext(*names: bytes, name_type: int = 0) -> tuple[int, bytes]:
    entries = b"".join(u8(name_type) + u16(len(n)) + n for n in names)
    return EXT_SERVER_NAME, u16(len(entries)) + entries


@dataclass
class Hello:
    """The fields of a ClientHello; `wire()` frames it in one or more records."""

    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    version: int = 0x0303
    random: bytes = b"\x00" * 32
    session_id: bytes = b""
    suites: bytes = b"\x13\x01\x13\x02"
    methods: bytes = b"\x00"
    record_version: int = 0x0301

    def body(self) -> bytes:
        exts = b"".join(u16(t) + u16(len(b)) + b for t, b in self.extensions)
        return (
            u16(self.version) + self.random + u8(len(self.session_id)) + self.session_id
            + u16(len(self.suites)) + self.suites + u8(len(self.methods)) + self.methods
            + u16(len(exts)) + exts
        )  # fmt: skip

    def handshake(self) -> bytes:
        body = self.body()
        return b"\x01" + u24(len(body)) + body

    def wire(self, splits: list[int] | None = None) -> bytes:
        """The records on the wire; `splits`: sizes of the first fragments (rest in the last)."""
        return records(self.handshake(), self.record_version, *(splits or []))


def records(handshake: bytes, record_version: int = 0x0301, *sizes: int) -> bytes:
    out, pos = b"", 0
    for size in (*sizes, len(handshake)):
        chunk = handshake[pos : pos + size]
        if chunk:
            out += b"\x16" + u16(record_version) + u16(len(chunk)) + chunk
        pos += len(chunk)
    return out


# -- strategies ------------------------------------------------------------------------------
_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
label = st.builds(
    lambda first, middle, last: first + middle + last if middle or last else first,
    st.sampled_from(_LABEL_CHARS),
    st.text(_LABEL_CHARS + "-", max_size=20),
    st.sampled_from(_LABEL_CHARS),
)
host_name = st.lists(label, min_size=1, max_size=6).map(".".join).filter(lambda h: len(h) <= 253)

other_extension = st.tuples(
    st.integers(1, 0xFFFF).filter(lambda t: t != EXT_SERVER_NAME),
    st.binary(max_size=300),
)
ech_extension = st.binary(min_size=8, max_size=400).map(lambda b: (EXT_ECH, b))
grease_extension = st.sampled_from(GREASE).map(lambda t: (t, b""))
key_share = st.sampled_from([32, 65, 1184 + 32]).map(  # x25519, P-256, X25519MLKEM768
    lambda n: (EXT_KEY_SHARE, u16(n + 4) + u16(0x11EC) + u16(n) + b"\x42" * n)
)


def _unique(exts: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    seen: set[int] = set()
    out = []
    for ext_type, body in exts:
        if ext_type not in seen:
            seen.add(ext_type)
            out.append((ext_type, body))
    return out


@st.composite
def hellos(draw: st.DrawFn, with_name: bool | None = None) -> tuple[Hello, str | None]:
    """A well-formed ClientHello and the name it carries (None: no server_name)."""
    others = draw(
        st.lists(st.one_of(other_extension, ech_extension, grease_extension, key_share), max_size=8)
    )
    others = _unique(others)
    name = draw(host_name) if with_name is None or with_name else None
    if with_name is None and draw(st.booleans()):
        name = None
    exts = list(others)
    if name is not None:
        at = draw(st.integers(0, len(exts)))
        exts.insert(at, server_name_ext(name.encode()))
    suites = draw(st.lists(st.sampled_from([0x1301, 0x1302, 0xC02F, *GREASE]), min_size=1))
    hello = Hello(
        extensions=exts,
        version=draw(st.sampled_from([0x0301, 0x0302, 0x0303])),
        random=draw(st.binary(min_size=32, max_size=32)),
        session_id=draw(st.binary(max_size=32)),
        suites=b"".join(u16(s) for s in suites),
        methods=draw(st.sampled_from([b"\x00", b"\x01\x00"])),
        record_version=draw(st.sampled_from([0x0301, 0x0303])),
    )
    return hello, name


def real_client_hello(server_name: str | None, max_tls: str = "") -> bytes:
    """The first flight of Python's own TLS client (OpenSSL), taken from a MemoryBIO."""
    ctx = ssl.create_default_context()
    if server_name is None:
        ctx.check_hostname = False
    if max_tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def length_fields(hello: Hello) -> list[tuple[int, int]]:
    """(offset, size) of every length field in `hello.wire()` (one record): where a lie goes."""
    wire = hello.wire()
    out = [(3, 2), (6, 3)]  # record length, handshake length
    pos = 9 + 2 + 32
    out.append((pos, 1))
    pos += 1 + len(hello.session_id)
    out.append((pos, 2))
    pos += 2 + len(hello.suites)
    out.append((pos, 1))
    pos += 1 + len(hello.methods)
    out.append((pos, 2))  # all extensions
    pos += 2
    for ext_type, body in hello.extensions:
        out.append((pos + 2, 2))
        if ext_type == EXT_SERVER_NAME and len(body) >= 2:
            out.append((pos + 4, 2))  # the name list
            inner = pos + 6
            while inner + 3 <= pos + 4 + len(body):
                out.append((inner + 1, 2))  # one name
                inner += 3 + int.from_bytes(wire[inner + 1 : inner + 3], "big")
        pos += 4 + len(body)
    return out
