"""The sandbox wallet harness itself (tests/wallet_harness.py): HTTPS with the lab CA only,
no connection blocking another, private keys written 0600."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.wallet_harness import Browser, Sandbox


def test_sandbox_serves_https_with_the_lab_ca(wallet: Sandbox, browser: Browser) -> None:
    answer = browser.get(wallet.issuer + "/.well-known/openid-configuration")
    assert answer.status == 200
    assert '"issuer":"' + wallet.issuer in answer.body.replace(" ", "")


def test_sandbox_refuses_clients_that_do_not_trust_its_ca(wallet: Sandbox) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(wallet.issuer + "/health", timeout=5)


def test_a_stalled_connection_does_not_block_others(wallet: Sandbox, browser: Browser) -> None:
    import socket

    host, port = urlsplit(wallet.issuer).hostname, urlsplit(wallet.issuer).port
    with socket.create_connection((host, port)):  # opens, never says hello
        started = time.monotonic()
        assert browser.get(wallet.issuer + "/health").status == 200
        assert time.monotonic() - started < 2


def test_provision_writes_private_keys_0600(wallet: Sandbox) -> None:
    for key in ("app_private_key_file",):
        assert Path(wallet.material["alipay"][key]).stat().st_mode & 0o077 == 0
    assert Path(wallet.material["settings"]).stat().st_mode & 0o077 == 0
    assert replace(wallet.oidc_config()).issuer == wallet.issuer
