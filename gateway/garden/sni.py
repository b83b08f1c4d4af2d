"""Find the server name (SNI) in the first bytes a client sends on a TLS connection.

Written by hand rather than with scapy's TLS layer: the parser only has to walk a handful of
length-prefixed fields, must never raise on hostile input, must never allocate more than the
bytes it was given, and must tell "not yet complete" apart from "wrong" (a ClientHello split
over two TCP segments is normal: post-quantum key shares make it ~1.8 KB). Every length is
checked against both its enclosing structure and the hard limits below before it is used.

The result is one of a few kinds, so the caller can refuse with a reason and count reasons.
Encrypted Client Hello (ECH) is not special-cased: the outer ClientHello carries the public
name of the client-facing server, and that is the name checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

RECORD_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
NAME_TYPE_HOST = 0x00

MAX_RECORD = 1 << 14  # RFC 8446 5.1: a plaintext record fragment is at most 2^14 bytes
MAX_HELLO = 16 * 1024  # ours: real ClientHellos are 0.2-2.5 KB; more is abuse or a tunnel
MAX_STREAM = MAX_HELLO + 64 * 5  # the hello plus the record headers around its fragments

# `\Z`, not `$`: `$` also matches before a trailing newline, so "wallet.test\n" was a "valid"
# name (found by tests/fuzz/test_fuzz_sni.py).
HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z"
)


class Kind(Enum):
    SNI = "sni"  # a host name was found (the hello may still be incomplete)
    INCOMPLETE = "incomplete"  # well-formed so far; more bytes are needed to decide
    NO_SNI = "no-sni"  # a complete ClientHello without a server name
    NOT_TLS = "not-tls"  # the bytes are not a TLS handshake record at all
    MALFORMED = "malformed"  # TLS-shaped, but a length or a field is inconsistent
    OVERSIZED = "oversized"  # a declared length is beyond what a ClientHello needs


@dataclass(frozen=True)
class Hello:
    kind: Kind
    sni: str = ""
    detail: str = ""  # why, for the log; never contains client bytes except a valid name


class _Short(Exception):
    """Reading past the bytes received so far, but within the declared lengths."""


class _Bad(Exception):
    """A declared length or value is impossible."""


class _NotTls(Exception):
    """The bytes do not start like a TLS handshake record."""


class _Oversized(Exception):
    """A declared length beyond the limits above."""


class _Reader:
    """Bounded reads over `data[pos:end]`; `have` is how much of it has really arrived."""

    def __init__(self, data: bytes, pos: int, end: int, have: int) -> None:
        self.data, self.pos, self.end, self.have = data, pos, end, min(end, have)

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Bad("a field runs past its enclosing length")
        if self.pos + n > self.have:
            raise _Short()
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def sub(self, n: int) -> _Reader:
        """A reader over the next n bytes (which need not have arrived yet)."""
        if self.pos + n > self.end:
            raise _Bad("a vector runs past its enclosing length")
        inner = _Reader(self.data, self.pos, self.pos + n, self.have)
        self.pos += n
        return inner

    def done(self) -> bool:
        return self.pos >= self.end


def _handshake_bytes(stream: bytes) -> bytes:
    """Join the fragments of the handshake records at the start of `stream`.

    A ClientHello may legally be fragmented over several records; some stacks do that to
    defeat middleboxes like this one. Returns the handshake bytes seen so far; raises for
    anything that is not a run of handshake records.
    """
    out = bytearray()
    pos = 0
    while pos < len(stream):
        header = stream[pos : pos + 5]
        if header[0] != RECORD_HANDSHAKE:
            if pos == 0:
                raise _NotTls("first byte is not a TLS handshake record")
            raise _Bad("a non-handshake record inside the ClientHello")
        if (len(header) >= 2 and header[1] != 3) or (len(header) >= 3 and header[2] > 4):
            raise _NotTls("record version is not TLS 1.x")
        if len(header) < 5:
            return bytes(out)
        length = int.from_bytes(header[3:5], "big")
        if length == 0:
            raise _Bad("an empty handshake record")
        if length > MAX_RECORD:
            raise _Oversized(f"a record of {length} bytes")
        fragment = stream[pos + 5 : pos + 5 + length]
        out += fragment
        pos += 5 + length
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            return bytes(out)  # the whole handshake message is here
        if len(fragment) < length:
            return bytes(out)
    return bytes(out)


def parse_client_hello(stream: bytes) -> Hello:
    """Classify the first bytes a client sent; never raises, whatever `stream` holds."""
    if not stream:
        return Hello(Kind.INCOMPLETE, detail="no data yet")
    if len(stream) > MAX_STREAM:
        stream = stream[:MAX_STREAM]  # anything the hello needs is within this prefix
    try:
        hs = _handshake_bytes(stream)
        if not hs:
            return Hello(Kind.INCOMPLETE, detail="record header only")
        if hs[0] != HANDSHAKE_CLIENT_HELLO:
            return Hello(Kind.MALFORMED, detail=f"handshake type {hs[0]}, not a ClientHello")
        if len(hs) < 4:
            return Hello(Kind.INCOMPLETE, detail="handshake header incomplete")
        length = int.from_bytes(hs[1:4], "big")
        if length > MAX_HELLO:
            return Hello(Kind.OVERSIZED, detail=f"a ClientHello of {length} bytes")
        return _client_hello(_Reader(hs, 4, 4 + length, len(hs)))
    except _NotTls as exc:
        return Hello(Kind.NOT_TLS, detail=str(exc))
    except _Oversized as exc:
        return Hello(Kind.OVERSIZED, detail=str(exc))
    except _Bad as exc:
        return Hello(Kind.MALFORMED, detail=str(exc))
    except _Short:
        return Hello(Kind.INCOMPLETE, detail="ClientHello continues in a later segment")
    except Exception as exc:  # unreachable by design; a parser bug must not kill the queue
        return Hello(Kind.MALFORMED, detail=f"parser error {type(exc).__name__}")


def _client_hello(r: _Reader) -> Hello:
    version = r.uint(2)
    if version >> 8 != 3:
        raise _Bad("ClientHello version is not TLS")
    r.take(32)  # random
    session_id = r.uint(1)
    if session_id > 32:
        raise _Bad("session id longer than 32 bytes")
    r.take(session_id)
    suites = r.uint(2)
    if suites < 2 or suites % 2:
        raise _Bad("cipher suite list of odd or zero length")
    r.sub(suites)
    methods = r.uint(1)
    if methods < 1:
        raise _Bad("no compression methods")
    r.sub(methods)
    if r.done():
        return Hello(Kind.NO_SNI, detail="ClientHello without extensions")
    extensions = r.sub(r.uint(2))
    if not r.done():
        raise _Bad("bytes after the extensions")
    seen: set[int] = set()
    while not extensions.done():
        ext_type = extensions.uint(2)
        body = extensions.sub(extensions.uint(2))
        if ext_type in seen:
            raise _Bad(f"extension {ext_type} appears twice")
        seen.add(ext_type)
        if ext_type == EXT_SERVER_NAME:
            # Decide as soon as the name is known; the rest of the hello may still be in flight.
            return Hello(Kind.SNI, sni=_server_name(body))
    return Hello(Kind.NO_SNI, detail="ClientHello without a server_name extension")


def _server_name(body: _Reader) -> str:
    names = body.sub(body.uint(2))
    if not body.done():
        raise _Bad("bytes after the server name list")
    host: str | None = None
    while not names.done():
        name_type = names.uint(1)
        value = names.take(names.uint(2))
        if name_type != NAME_TYPE_HOST:
            continue  # RFC 6066 allows other types; none are defined
        if host is not None:
            raise _Bad("more than one host name")  # RFC 6066 3: at most one per type
        try:
            text = value.decode("ascii").lower()
        except UnicodeDecodeError:
            raise _Bad("host name is not ASCII") from None
        if not HOST_RE.match(text):
            raise _Bad("host name is not a valid DNS name")  # includes a trailing dot
        host = text
    if host is None:
        raise _Bad("server_name extension without a host name")
    return host
