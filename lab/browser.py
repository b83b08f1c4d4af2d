"""A phone's real browser: headless Chromium driven by Playwright inside a phone namespace.

Run as `ip netns exec <phone> python -m lab.browser ...`: Chromium then has exactly the phone's
network (its DHCP address, the router's DNS, the gateway in the path). It trusts the lab CA
through an NSS database in a private HOME, as a phone with the venue's CA installed would; the
host's trust stores are untouched. Prints one JSON object describing what the shopper saw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
