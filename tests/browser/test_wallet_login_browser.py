"""Headless Chromium inside a phone's namespace: splash -> wallet consent -> success page.

Screenshots are kept under tests/artifacts/browser/ for people to look at.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab.topology import Lab
from tests.conftest import ROOT
from tests.netns.conftest import running_lab

ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("b", phones=2) as lab:
        yield lab


def browse(lab: Lab, phone: str, *extra: str) -> dict:
    status = lab.status()
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.netns_of(phone), sys.executable, "-m", "lab.browser",
         "--site", status["internet"]["web_url"], "--ca", status["ca_cert"],
         "--shots", str(ARTIFACTS / phone), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_chromium_signs_in_through_the_wallet(lab: Lab) -> None:
    seen = browse(lab, "phone1")
    assert "error" not in seen, seen
    splash, consent, welcome, site = seen["steps"]
    assert splash["url"] == lab.status()["portal_url"]  # the intercepted page landed here
    assert "Log in with wallet" in splash["text"]
    assert consent["url"].startswith(lab.status()["wallet_url"])
    assert welcome["url"].endswith("/welcome")
    assert "online" in welcome["text"].lower()
    assert "Alice Wang" in welcome["text"]
    assert "FAKE-INTERNET-OK" in site["text"]
    mac = lab.state.phones[0].mac
    assert lab.control().client(mac)["state"] == "authorized"


def test_chromium_in_chinese(lab: Lab) -> None:
    seen = browse(lab, "phone2", "--locale", "zh-CN", "--user", "mei", "--pin", "2468")
    assert "error" not in seen, seen
    splash, _consent, welcome, _site = seen["steps"]
    assert "使用钱包登录" in splash["text"]
    assert "王美" in welcome["text"]
