"""`plaza-lab demo`: one shopper's journey through the gateway, narrated step by step.

Each step says what it did and what it observed; the demo exits non-zero at the first step
whose observation is not what a working gateway must produce.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from lab import probes
from lab.phone import CSRF_RE, Phone
from lab.topology import Lab
from lab.wallet.app import approve, passes, save_pass, sign_in


class StepFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def option_114(lab: Lab, phone: str) -> str:
    """The captive-portal API URI the phone's DHCP client got (busybox writes it as hex)."""
    raw = (lab.run_dir / f"{phone}.lease.opt114").read_text().strip()
    try:
        return bytes.fromhex(raw).decode()
    except ValueError:
        return raw


def run(lab: Lab, out: Callable[[str], None] = print) -> bool:
    status = lab.status()
    p = status["phones"][0]
    portal = status["portal_url"]
    api = status["captive_api_url"]
    site = status["internet"]["web_url"]
    phone = Phone(p["netns"])
    android = next(x for x in probes.PROBES if x.os == "Android")
    step = 0

    def say(title: str, detail: str) -> None:
        nonlocal step
        step += 1
        out(f"[{step}] {title}\n    {detail}")

    def probe() -> str:
        r = phone.get(android.url)
        return android.rule(probes.Answer(r.status or None, r.body, r.location))

    try:
        me = {c["mac"]: c for c in lab.control().clients()}.get(p["mac"])
        expect(me is not None, f"the gateway does not know {p['mac']}")
        expect(me["state"] == "captive", "a new phone must start captive")
        url114 = option_114(lab, p["name"])
        expect(url114 == api, f"DHCP option 114 carried {url114!r}, expected {api!r}")
        say(
            "Phone joins the Wi-Fi",
            f"{p['name']} ({p['mac']}) got {p['ipv4']} from dnsmasq with option 114 = {url114};"
            f" the gateway sees it as {me['state']}.",
        )

        r = phone.get(api)
        doc = json.loads(r.body) if r.ok else {}
        expect(r.status == 200 and doc.get("captive") is True, f"API answered {r.status}")
        say(
            "The phone asks the RFC 8908 API over HTTPS",
            f"{r.headers.get('content-type')}: {r.body}",
        )

        verdict = probe()
        expect(verdict == probes.CAPTIVE, f"Android's probe says {verdict}")
        r = phone.get(site)
        expect(r.status == 302 and r.location == portal, f"GET {site} -> {r.status}")
        say(
            "Its OS probe and any web page are sent to the portal",
            f"{android.url} -> captive (sign-in sheet opens); GET {site} -> 302 {r.location} "
            f"in {r.seconds * 1000:.1f} ms",
        )

        tls = phone.get("https://" + urlsplit(site).hostname + "/", timeout=3)
        wallet = phone.get(status["wallet_url"] + ".well-known/openid-configuration")
        expect(not tls.ok and tls.seconds < 1.0, "HTTPS must fail at once while captive")
        expect(wallet.status == 200, f"the wallet (walled garden) answered {wallet.status}")
        say(
            "Walled garden: only the wallet is reachable before login",
            f"https://{urlsplit(site).hostname}/ refused in {tls.seconds * 1000:.1f} ms; "
            f"{status['wallet_url']} answers 200.",
        )

        t0 = time.monotonic()
        r = phone.get(portal + "login/wallet")
        expect(r.status == 302, f"/login/wallet answered {r.status or r.error}")
        authorize_url = r.location
        r = approve(phone, authorize_url, user="alice", pin="1234")
        expect(r.status == 302 and r.location.startswith(portal), "the wallet did not send back")
        r = phone.get(r.location)
        expect(r.status == 303 and r.location == "/welcome", f"callback -> {r.status}")
        welcome = phone.get(urljoin(portal, r.location))
        state = lab.control().client(p["mac"])["state"]
        expect(state == "authorized" and "Alice Wang" in welcome.body, f"gateway says {state}")
        say(
            f"Shopper logs in with the {lab.state.wallet_dialect} wallet",
            f"portal -> {urlsplit(authorize_url).netloc}{urlsplit(authorize_url).path} "
            f"(Alice approves in her wallet app) -> callback -> /welcome: "
            f"online as Alice Wang in {(time.monotonic() - t0) * 1000:.0f} ms",
        )

        doc = json.loads(phone.get(api).body)
        verdict = probe()
        expect(doc["captive"] is False and verdict == probes.ONLINE, f"probe says {verdict}")
        say(
            "The OS sees the internet",
            f"API: captive=false, seconds-remaining={doc.get('seconds-remaining')}; "
            f"Android's probe -> 204 (online)",
        )

        r = phone.get(site)
        expect(r.ok and r.status == 200 and "FAKE-INTERNET-OK" in r.body, "no internet after auth")
        say("Browsing works", f"GET {site} -> 200 from the fake internet")

        token = CSRF_RE.search(phone.get(portal + "welcome").body)
        expect(token is not None, "the welcome page has no reconnect form")
        r = phone.post(portal + "reconnect", {"csrf_token": token.group(1), "remember": "yes"})
        expect(r.status == 303 and r.location.startswith(status["wallet_url"]), "no wallet pass")
        saved = save_pass(phone, r.location)
        [(title, link)] = passes(phone)
        say(
            "Shopper opts in to one-tap reconnect",
            f"the portal hands a signed, revocable link to the wallet ({saved.status}); "
            f"the wallet app now holds the pass {title!r}",
        )

        r = phone.logout(portal)
        expect(r.status == 303, f"logout answered {r.status or r.error}")
        r = phone.get(site)
        expect(r.ok and r.status == 302, f"after logout expected 302, got {r.status or r.error}")
        say("Shopper logs out and is captive again", f"GET {site} -> {r.status} to the portal")

        new_mac = "02:50:4c:aa:00:01"
        again = lab.rejoin_with_new_mac(p["name"], new_mac)
        phone.close()
        phone = Phone(p["netns"])  # a browser that remembers nothing of the portal
        expect(lab.control().client(new_mac)["state"] == "captive", "a new MAC must be captive")
        sign_in(phone)
        [(title, link)] = passes(phone)
        t0 = time.monotonic()
        r = phone.get(link)
        online = lab.control().client(new_mac)["state"]
        expect(r.status == 303 and online == "authorized", f"one tap: {r.status}, {online}")
        expect(phone.get(site).status == 200, "no internet after the one tap")
        say(
            "Another day, a new random MAC: one tap in the wallet",
            f"{p['name']} rejoins as {new_mac} with {again.ipv4} (a stranger to the gateway); "
            f"tapping {title!r} in the wallet app -> online in "
            f"{(time.monotonic() - t0) * 1000:.0f} ms",
        )
        out(
            "Demo passed: join -> captive -> wallet login -> online -> one-tap opt-in -> "
            "logout -> new MAC -> one tap -> online."
        )
        return True
    except StepFailed as exc:
        out(f"[{step + 1}] FAILED: {exc}")
        return False
    finally:
        phone.close()


def main(name: str, wallet_dialect: str = "oidc") -> int:
    lab = Lab(name)
    print(f"Bringing the lab {name!r} up: router, fake internet, sandbox wallet, one phone ...")
    t0 = time.monotonic()
    lab.up(phones=1, wallet_dialect=wallet_dialect)
    print(f"Lab up in {time.monotonic() - t0:.1f} s.\n", flush=True)
    try:
        ok = run(lab, lambda s: print(s, flush=True))
    finally:
        lab.down()
        print("\nLab torn down.", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "plaza"))
