"""The cloud's secrets: its Ed25519 command-signing key and Flask's SECRET_KEY.

From the environment when set (what several instances behind a load balancer must share),
else from a file in the instance dir created on first use with mode 0600 — so the embedded
default needs no set-up and a restart keeps the key routers have pinned.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from plaza import signing


def _create_once(path: Path, content: bytes) -> bytes:
    """Write `content` unless the file exists (O_EXCL: two processes starting together end up
    with the same key); returns what the file holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return content


def cloud_key(instance: Path, env_pem: str | None = None) -> Ed25519PrivateKey:
    if env_pem:
        return signing.load_private(env_pem.encode())
    pem = _create_once(instance / "cloud.key", signing.private_pem(signing.new_key()))
    return signing.load_private(pem)


def secret_key(instance: Path, env_value: str | None = None) -> str:
    if env_value:
        return env_value
    return _create_once(instance / "secret_key", secrets.token_hex(32).encode()).decode().strip()
