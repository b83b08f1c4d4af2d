"""A phone's real browser: headless Chromium driven by Playwright inside a phone namespace.

Run as `ip netns exec <phone> python -m lab.browser ...`: Chromium then has exactly the phone's
network (its DHCP address, the router's DNS, the gateway in the path). It trusts the lab CA
through an NSS database in a private HOME, as a phone with the venue's CA installed would; the
host's trust stores are untouched. Prints one JSON object describing what the shopper saw.

`phone_browser(...)` is the same phone for a caller that drives the pages itself, step by
step (the demo's chapters): Python stays in the host namespace and only Chromium runs in the
phone's, through a wrapper that is `ip netns exec <phone> chromium "$@"` (Playwright talks to
Chromium over pipes, which `ip netns exec` hands on, so no socket crosses namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Flags from the machine's notes: no background connections to the closed network, no QUIC.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def trust_lab_ca(home: Path, ca_cert: str) -> None:
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-d", f"sql:{nssdb}", "-A", "-n", "plaza-lab-ca", "-t", "C,,", "-i", ca_cert],
        check=True,
    )


@dataclass
class PhoneBrowser:
    """One phone's Chromium tab: `page` (Playwright's), `snap(name)` saves the full page as
    `<shots_dir>/<name>.png` and returns the path; `shots` lists what was saved."""

    page: Any
    shots_dir: Path
    shots: list[Path] = field(default_factory=list)

    def snap(self, name: str) -> Path:
        path = self.shots_dir / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


def netns_wrapper(home: Path, netns: str) -> Path:
    """An executable that starts Chromium inside `netns` with the arguments it is given."""
    wrapper = home / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {shlex.quote(netns)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@contextlib.contextmanager
def phone_browser(
    netns: str | None,
    ca_cert: str | Path | None,
    shots_dir: str | Path,
    locale: str = "en-US",
    proxy: str | None = None,
) -> Iterator[PhoneBrowser]:
    """A phone-sized headless Chromium with the network of `netns` (None: this namespace's)
    that trusts `ca_cert` (None: only the system's roots), through `proxy` if given (the VM
    lab's SOCKS tunnel into a phone VM). Closed, with its private HOME removed, on leaving
    the block."""
    from playwright.sync_api import sync_playwright

    shots = Path(shots_dir)
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plaza-browser-") as home:
        if ca_cert is not None:
            trust_lab_ca(Path(home), str(ca_cert))
        executable = netns_wrapper(Path(home), netns) if netns else Path(CHROMIUM)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(executable), headless=True, args=ARGS,
                env={**os.environ, "HOME": home}, proxy={"server": proxy} if proxy else None,
            )  # fmt: skip
            try:
                context = browser.new_context(
                    viewport={"width": 390, "height": 844}, locale=locale, is_mobile=True
                )
                page = context.new_page()
                page.set_default_timeout(20000)
                yield PhoneBrowser(page, shots)
            finally:
                browser.close()


def wallet_approve(page: Any, user: str = "alice", pin: str = "1234") -> None:
    """On a sandbox wallet page (sign-in consent or cashier): log in if it asks, approve."""
    if page.locator("input[name=login]").count():
        page.fill("input[name=login]", user)
    if page.locator("input[name=pin]").count():
        page.fill("input[name=pin]", pin)
    page.click("button[name=decision][value=approve]")


def shop_sign_in(page: Any, base: str, next_path: str, user: str = "alice",
                 pin: str = "1234") -> None:  # fmt: skip
    """The cloud shop's wallet sign-in (OIDC + PKCE, the wallet's own pages), ending back on
    `next_path`."""
    page.goto(f"{base}/plaza/signin?next={next_path}")
    page.click("a[href='/plaza/login/wallet']")
    page.wait_for_selector("button[name=decision][value=approve]")
    wallet_approve(page, user, pin)
    page.wait_for_url(f"{base}{next_path}")


def journey(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    seen: dict = {"steps": []}

    def snap(page, name: str) -> None:
        path = shots / f"{len(seen['steps']) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        seen["steps"].append({"name": name, "url": page.url, "screenshot": str(path),
                              "text": page.inner_text("body")[:2000]})  # fmt: skip

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, locale=args.locale, is_mobile=True
        )
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(args.site)  # a captive phone opens any page ...
        snap(page, "splash")  # ... and lands on the portal
        page.click('a[href="/login/wallet"]')
        page.wait_for_selector('button[value="approve"]')
        snap(page, "wallet-consent")
        if page.query_selector('input[name="login"]'):
            page.fill('input[name="login"]', args.user)
            page.fill('input[name="pin"]', args.pin)
        page.click('button[value="approve"]')
        page.wait_for_url("**/welcome")
        snap(page, "welcome")
        page.goto(args.site)
        snap(page, "site")
        browser.close()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="a page the shopper opens first")
    parser.add_argument("--ca", required=True, help="the lab CA certificate (PEM)")
    parser.add_argument("--shots", required=True, help="directory for screenshots")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--pin", default="1234")
    parser.add_argument("--locale", default="en-US")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plaza-browser-") as home:
        os.environ["HOME"] = home
        trust_lab_ca(Path(home), args.ca)
        try:
            result = journey(args)
        except Exception as exc:  # report what the shopper saw, not a traceback
            result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
