"""How the portal speaks TLS: TLS 1.2 with AEAD suites only (ECDHE with AES-GCM or
ChaCha20-Poly1305), and TLS 1.3 as OpenSSL has it.

CBC suites (ECDHE-*-AES128-SHA256 and friends) are refused: their MAC-then-encrypt design is
what Lucky Thirteen and the padding-oracle family attack, and every phone that can show the
sign-in sheet (Android 5+, iOS 9+) offers an AEAD suite. TLS 1.0 and 1.1 are refused too.
`plaza-cloud run --cert` uses this same recipe (cloud/cli.py).
"""

from __future__ import annotations

import ssl

from cheroot.ssl.builtin import BuiltinSSLAdapter

AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 minimum, AEAD suites only, and the server's order of preference."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(AEAD_CIPHERS)  # TLS 1.2 only; TLS 1.3's suites are all AEAD already
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    return context


def server_adapter(cert_file: str, key_file: str) -> BuiltinSSLAdapter:
    """cheroot's adapter for this certificate, with the context hardened as above."""
    adapter = BuiltinSSLAdapter(cert_file, key_file)
    harden(adapter.context)
    return adapter
