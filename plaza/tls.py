"""How the portal speaks TLS: TLS 1.2 with AEAD suites only (ECDHE with AES-GCM or
ChaCha20-Poly1305), and TLS 1.3 as OpenSSL has it.

CBC suites (ECDHE-*-AES128-SHA256 and friends) are refused: their MAC-then-encrypt design is
what Lucky Thirteen and the padding-oracle family attack, and every phone that can show the
sign-in sheet (Android 5+, iOS 9+) offers an AEAD suite. TLS 1.0 and 1.1 are refused too.
`plaza-cloud run --cert` uses this same recipe (cloud/cli.py).

cheroot's own adapter shakes hands inside accept(), on the listener's one serving thread: a
crowd's handshakes queue behind each other on one CPU, and one client that connects and stalls
holds the whole listener for the socket timeout. `WorkerHandshake` leaves the handshake to the
worker thread that reads the connection's first request, so handshakes run side by side (OpenSSL
releases the GIL) and a stalled client holds one worker.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
from typing import Any

from cheroot import errors
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.ssl.builtin import BuiltinSSLAdapter

AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 63\r\n"
    b"Connection: close\r\n\r\nThe client sent a plain HTTP request to an HTTPS-only port.\r\n\r\n"
)


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 minimum, AEAD suites only, and the server's order of preference."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(AEAD_CIPHERS)  # TLS 1.2 only; TLS 1.3's suites are all AEAD already
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    return context


class _HandshakeFirst(socket.SocketIO):
    """The raw reader of a server-side TLS socket: shakes hands before its first read, in
    whichever thread reads first (cheroot's worker)."""

    def __init__(self, sock: ssl.SSLSocket, mode: str) -> None:
        super().__init__(sock, mode)
        self.shaken = False

    def readinto(self, b: Any) -> int | None:
        if not self.shaken:
            self.shaken = True
            tls: ssl.SSLSocket = self._sock  # type: ignore[attr-defined]
            try:
                tls.do_handshake()
            except ssl.SSLError as exc:
                if "http request" in str(exc).lower():  # plain HTTP to the TLS port
                    with contextlib.suppress(OSError):
                        socket.socket.sendall(tls, PLAIN_HTTP_ANSWER)
                raise errors.FatalSSLAlert(*exc.args) from exc  # cheroot closes quietly
            except OSError as exc:  # reset or timed out before the handshake finished
                raise errors.FatalSSLAlert(*exc.args) from exc
        return super().readinto(b)


class _Reader(StreamReader):
    def __init__(self, sock: ssl.SSLSocket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE):
        # cheroot's reader is _pyio's BufferedReader over SocketIO: the same, over ours.
        super(StreamReader, self).__init__(_HandshakeFirst(sock, mode), bufsize)
        self.bytes_read = 0


class WorkerHandshake(BuiltinSSLAdapter):
    """cheroot's built-in adapter with the handshake moved from accept() to the worker."""

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        tls = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        # Not cheroot's SSL_* variables: they need the finished handshake, and nothing reads them.
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def makefile(self, sock: Any, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE) -> Any:
        return (_Reader if "r" in mode else StreamWriter)(sock, mode, bufsize)


def server_adapter(cert_file: str, key_file: str) -> WorkerHandshake:
    """cheroot's adapter for this certificate, with the context hardened as above."""
    adapter = WorkerHandshake(cert_file, key_file)
    harden(adapter.context)
    return adapter
