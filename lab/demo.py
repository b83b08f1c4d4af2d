"""`plaza-lab demo`: one shopper's journey through the gateway, narrated step by step.

Each step says what it did and what it observed; the demo exits non-zero at the first step
whose observation is not what a working gateway must produce.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from lab.phone import Phone
from lab.topology import Lab


class StepFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def run(lab: Lab, out: Callable[[str], None] = print) -> bool:
    status = lab.status()
    p = status["phones"][0]
    portal = status["portal_url"]
    site = status["internet"]["web_url"]
    phone = Phone(p["netns"])
    step = 0

    def say(title: str, detail: str) -> None:
        nonlocal step
        step += 1
        out(f"[{step}] {title}\n    {detail}")

    try:
        clients = {c["mac"]: c for c in lab.control().clients()}
        me = clients.get(p["mac"])
        expect(me is not None, f"the gateway does not know {p['mac']}")
        say(
            "Phone joins the Wi-Fi",
            f"{p['name']} ({p['mac']}) got {p['ipv4']} from dnsmasq; "
            f"the gateway sees it as {me['state']}.",
        )
        expect(me["state"] == "captive", "a new phone must start captive")

        r = phone.get(site)
        expect(r.ok and r.status == 302, f"expected a 302, got {r.status or r.error}")
        expect(r.location.startswith(portal), f"302 goes to {r.location!r}, not the portal")
        say(
            "It opens a web page and is held captive",
            f"GET {site} -> {r.status} Location: {r.location} "
            f"(Cache-Control: {r.headers.get('cache-control')}) in {r.seconds * 1000:.1f} ms",
        )

        r = phone.get("https://" + site.split("//", 1)[1], timeout=3)
        expect(not r.ok and r.seconds < 1.0, "HTTPS must fail at once while captive")
        say("HTTPS fails fast while captive", f"curl: {r.error} after {r.seconds * 1000:.1f} ms")

        r = phone.get(portal)
        expect(r.ok and r.status == 200, f"splash page: {r.status or r.error}")
        title = r.body.split("<title>", 1)[-1].split("</title>", 1)[0].strip()
        say("The portal's splash page opens", f"GET {portal} -> 200 ({title!r})")

        t0 = time.monotonic()
        r = phone.accept_terms(portal)
        expect(r.status == 303, f"continue answered {r.status or r.error}")
        landing = r.location
        r = phone.get(portal.rstrip("/") + landing if landing.startswith("/") else landing)
        state = lab.control().client(p["mac"])["state"]
        expect(r.ok and r.status == 200, f"{landing}: {r.status or r.error}")
        expect(state == "authorized", f"the gateway says {state}")
        say(
            "Shopper taps Continue and is let through",
            f"POST /continue -> 303 {landing} (200); the gateway says authorized "
            f"({(time.monotonic() - t0) * 1000:.0f} ms round trip)",
        )

        r = phone.get(site)
        expect(r.ok and r.status == 200 and "FAKE-INTERNET-OK" in r.body, "no internet after auth")
        say("Browsing works", f"GET {site} -> 200 from the fake internet: {r.body[-60:].strip()!r}")

        r = phone.logout(portal)
        expect(r.status == 303, f"logout answered {r.status or r.error}")
        say("Shopper logs out", f"POST /logout -> 303 {r.location}")

        r = phone.get(site)
        expect(r.ok and r.status == 302, f"after logout expected 302, got {r.status or r.error}")
        say("Blocked again", f"GET {site} -> {r.status} to the portal; the session is over.")
        out("Demo passed: join -> captive -> continue -> online -> logout -> captive.")
        return True
    except StepFailed as exc:
        out(f"[{step + 1}] FAILED: {exc}")
        return False
    finally:
        phone.close()


def main(name: str) -> int:
    lab = Lab(name)
    print(f"Bringing the lab {name!r} up: router, fake internet, one phone ...", flush=True)
    t0 = time.monotonic()
    lab.up(phones=1)
    print(f"Lab up in {time.monotonic() - t0:.1f} s.\n", flush=True)
    try:
        ok = run(lab, lambda s: print(s, flush=True))
    finally:
        lab.down()
        print("\nLab torn down.", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "plaza"))
