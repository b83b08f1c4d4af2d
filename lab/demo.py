"""`plaza-lab demo`: one shopper's journey through the gateway, narrated step by step.

Each step says what it did and what it observed; the demo exits non-zero at the first step
whose observation is not what a working gateway must produce.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from lab import cloud as labcloud
from lab import demo_hospital, demo_plaza, demo_transit, probes, shopper
from lab.phone import CSRF_RE, Phone
from lab.shopper import ShopperError, wallet_saved
from lab.topology import Lab
from lab.wallet.app import WalletAppError, messages, passes, save_pass, sign_in, tap


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


def cloud_rows(lab: Lab, sql: str, *args: object) -> list[tuple]:
    """Rows from the lab cloud's database (SQLite file; read-only)."""
    import sqlite3

    path = labcloud.instance_dir(lab.run_dir) / "cloud.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute(sql, args).fetchall()


def wait(predicate: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    return None


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

        cloud = status["cloud"]
        if cloud:
            beat = wait(lambda: cloud_rows(lab, "SELECT last_heartbeat_at FROM devices WHERE "
                                           "id = ? AND last_heartbeat_at > ?",
                                           cloud["device_id"], time.time() - 10), 15)  # fmt: skip
            expect(bool(beat), "the router sent no heartbeat to the cloud")
            say(
                "The router is enrolled with the Plaza cloud",
                f"claim code -> device {cloud['device_id']} (its own Ed25519 key), heartbeating "
                f"to {cloud['url']}; merchant dashboard at {cloud['dashboard_url']} "
                f"({cloud['merchant_email']} / {cloud['merchant_password']})",
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
        authorize_url = shopper.start_login(phone, portal)
        callback = shopper.approve_login(phone, authorize_url, portal, user="alice", pin="1234")
        welcome = shopper.finish_login(phone, portal, callback)
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

        if cloud:
            phone.get(site + "bytes/2000000")
            sql = "SELECT count(*), coalesce(sum(bytes_down), 0) FROM usage_records WHERE mac = ?"
            got = wait(lambda: (row := cloud_rows(lab, sql, p["mac"])[0])[1] > 2_000_000 and row,
                       20)  # fmt: skip
            expect(bool(got), "no usage reached the cloud")
            say(
                "Usage arrives in the cloud",
                f"{got[0]} signed, idempotent usage record(s) for this phone so far, "
                f"{got[1] / 1e6:.1f} MB down (from the router's on-disk outbox)",
            )

        token = CSRF_RE.search(phone.get(portal + "welcome").body)
        expect(token is not None, "the welcome page has no reconnect form")
        r = phone.post(portal + "reconnect", {"csrf_token": token.group(1), "remember": "yes"})
        expect(r.status == 303 and r.location.startswith(status["wallet_url"]), "no wallet pass")
        saved = wallet_saved(phone, portal, save_pass(phone, r.location))
        [(title, link)] = passes(phone)
        say(
            "Shopper opts in to one-tap reconnect",
            f"the portal hands a signed, revocable link to the wallet ({saved.status}); "
            f"the wallet app now holds the pass {title!r}"
            + (
                "; the wallet's signed consent to the venue's offers goes to the cloud"
                if cloud
                else ""
            ),
        )

        if cloud:
            lab.stop(f"{p['name']}-dhcp")  # walks out: the lease is released
            gone = wait(lambda: lab.control().client(p["mac"])["ip"] is None, 15)
            expect(bool(gone), "the gateway did not see the phone leave")
            lab.start_dhcp(next(x for x in lab.state.phones if x.name == p["name"]))
            lab.wait_leases()

            def inbox() -> list:
                try:
                    return messages(phone)
                except WalletAppError:
                    return []

            found = wait(inbox, 40)
            expect(bool(found), "no offer reached the wallet")
            message = found[0]
            t0 = time.monotonic()
            r = phone.get(tap(phone, message))
            online = lab.control().client(p["mac"])["state"]
            expect(r.status == 303 and online == "authorized", f"tap: {r.status}, {online}")
            say(
                "She walks out and comes back: the cloud pushes the offer to her wallet",
                f"join -> cloud -> wallet message {message.title!r} ({message.body[:60]}...); "
                f"one tap on it -> online in {(time.monotonic() - t0) * 1000:.0f} ms",
            )

        r = phone.logout(portal)
        expect(r.status == 303, f"logout answered {r.status or r.error}")
        r = phone.get(site)
        expect(r.ok and r.status == 302, f"after logout expected 302, got {r.status or r.error}")
        say("Shopper logs out and is captive again", f"GET {site} -> {r.status} to the portal")

        if cloud:
            shop, www = "https://shop.example.test/", "https://www.example.test/"
            expect(not phone.get(shop, timeout=3).ok, "the shop site is open before it is listed")
            t0 = time.monotonic()
            version = labcloud.edit_venue(
                lab.run_dir, status["cloud"]["venue_id"],
                lambda config: config["garden"].update(domains=["shop.example.test"]),
            )  # fmt: skip
            labcloud.cli(lab.run_dir, "command", status["cloud"]["device_id"], "refresh-config")
            reached = wait(lambda: phone.get(shop, timeout=3).ok, 30)
            expect(bool(reached), "the merchant's garden name did not open for a captive phone")
            expect(not phone.get(www, timeout=3).ok, "a neighbour on the same address opened")
            say(
                "The merchant adds the venue's shop to the walled garden in the dashboard",
                f"config v{version} -> router (dnsmasq restarted, SNI check updated): the captive "
                f"phone reaches {shop} after {time.monotonic() - t0:.1f} s; {www}, on the same "
                "address, is still refused",
            )

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
        if cloud:  # the plaza chapter: the venue's shop, bookings, service desk, counter
            demo_plaza.run(phone, portal, cloud["venue_id"], say)
            demo_hospital.run(lab, p["netns"], cloud["venue_id"], say)  # book, arrive, report
            demo_transit.run(lab, p["netns"], cloud["venue_id"], say)  # the bus card, two buses
        out(
            "Demo passed: join -> captive -> wallet login -> online -> usage in the cloud -> "
            "one-tap opt-in -> leave and return -> offer pushed to the wallet -> one tap -> "
            "online -> logout -> the merchant's garden reaches the router -> new MAC -> one tap -> "
            "online."
        )
        return True
    except (StepFailed, ShopperError) as exc:  # a shopper step says what came instead
        out(f"[{step + 1}] FAILED: {exc}")
        return False
    finally:
        phone.close()


def main(name: str, wallet_dialect: str = "oidc") -> int:
    lab = Lab(name)
    print(
        f"Bringing the lab {name!r} up: router, fake internet, sandbox wallet, Plaza cloud, "
        "one phone ..."
    )
    t0 = time.monotonic()
    lab.up(phones=1, wallet_dialect=wallet_dialect, cloud=True)
    print(f"Lab up in {time.monotonic() - t0:.1f} s.\n", flush=True)
    try:
        ok = run(lab, lambda s: print(s, flush=True))
    finally:
        lab.down()
        print("\nLab torn down.", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "plaza"))
