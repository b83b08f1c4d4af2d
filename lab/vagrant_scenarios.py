"""The VM lab's scenarios (`plaza-lab vm demo|outage|crash|roam|browser`), run from the host
through the VMs: each step says what happened and whether it matched what a working venue must
do.

The steps are the namespace lab's (lab/demo.py): the same shopper (lab/shopper.py), OS probe
(lab/probes.py), wallet app (lab/wallet/app.py) and checks (lab/demo.py's expect and wait),
with lab/phone.py's curl client run on a phone VM over SSH (lab/vagrant_lab.py VMPhone).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab import probes, shopper
from lab.browser import wallet_approve
from lab.demo import StepFailed, expect, wait
from lab.shopper import ShopperError
from lab.topology import PORTAL_HOST
from lab.vagrant_lab import (
    API_URL,
    LEASE,
    PORTAL_URL,
    VMLab,
    VMLabError,
    VMPhone,
    decode_opt114,
    ssh,
)
from lab.vm_internet import ONLINE_MARK, SITE
from lab.wallet.app import WALLET, WalletAppError, messages, tap

SCENARIOS = ("demo", "outage", "crash", "roam", "browser")
SHOTS = Path("/var/tmp/plaza-demo/vm")  # the browser scenario's screenshots, kept after down
LAN_ROUTER = "198.19.0.1"  # the router's LAN address (the venue config)
ROAM_MAC = "02:50:4c:aa:00:01"  # a locally administered MAC, as phones randomize
# The power goes this long after the login: grants commit with synchronous=FULL (6ab8c60), so
# the session is on disk when the login answers; no wait for the guest's dirty-page writeback.
CUT_AFTER_LOGIN_SECONDS = 2


class Narrator:
    """Numbered steps, each with what happened and "matched"; a failure names its step."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.step = 0

    def say(self, title: str, detail: str) -> None:
        self.step += 1
        self.out(f"[{self.step}] {title}\n    {detail}\n    matched")


def android(phone: VMPhone) -> str:
    """What Android's captive-portal probe concludes on this phone."""
    check = next(x for x in probes.PROBES if x.os == "Android")
    r = phone.get(check.url)
    return check.rule(probes.Answer(r.status or None, r.body, r.location))


def login(lab: VMLab, phone: VMPhone, mac: str) -> float:
    """Alice logs in with the sandbox wallet; milliseconds it took."""
    t0 = time.monotonic()
    authorize_url = shopper.start_login(phone, PORTAL_URL)
    callback = shopper.approve_login(phone, authorize_url, PORTAL_URL, "alice", "1234")
    welcome = shopper.finish_login(phone, PORTAL_URL, callback)
    state = lab.gateway_state(mac)
    expect(state == "authorized" and "Alice Wang" in welcome.body, f"gateway says {state}")
    return (time.monotonic() - t0) * 1000


def browse(phone: VMPhone, seconds: float = 5) -> bool:
    r = phone.get(SITE, timeout=seconds)
    return r.status == 200 and ONLINE_MARK in r.body


def delivered_once(lab: VMLab, mac: str, session: str | None = None, seconds: float = 0) -> str:
    """`_delivered_once`, asked again for up to `seconds` while it does not hold: the router and
    the cloud are read one after the other (the internet VM's cloud over SSH, seconds under
    emulation), so a record the router makes in between is in one view and not yet the other.
    A record lost, doubled or not adding up stays so and still fails."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return _delivered_once(lab, mac, session)
        except StepFailed:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2)


def _delivered_once(lab: VMLab, mac: str, session: str | None = None) -> str:
    """Every record the router wrote for `mac` (or one session) is in the cloud once, none is
    left waiting, and the deltas add up to each session's total: nobody counted twice."""
    router = [r for r in lab.router_usage(mac) if session in (None, r["session_id"])]
    cloud = [r for r in lab.cloud_usage(mac) if session in (None, r["session_id"])]
    expect(bool(router), "the router wrote no usage record")
    waiting = [r["key"] for r in router if r["sent_at"] is None]
    expect(not waiting, f"records still waiting on the router: {waiting}")
    keys = [r["key"] for r in cloud]
    expect(len(keys) == len(set(keys)), f"a record stored twice in the cloud: {keys}")
    # The cloud is read after the router: an interim record the router made in between (one
    # every 3 s here) is in the cloud only; those past the router's newest of their session
    # are not compared. A session the router does not know stays in and fails.
    newest: dict[str, int] = {}
    for r in router:
        newest[r["session_id"]] = max(newest.get(r["session_id"], 0), r["seq"])
    cloud = [r for r in cloud if r["seq"] <= newest.get(r["session_id"], r["seq"])]
    keys = [r["key"] for r in cloud]
    expect(set(keys) == {r["key"] for r in router}, "the cloud's records are not the router's")
    sessions = {r["session_id"] for r in cloud}
    for sid in sessions:
        mine = [r for r in cloud if r["session_id"] == sid]
        seqs = sorted(r["seq"] for r in mine)
        expect(seqs == list(range(1, len(seqs) + 1)), f"session {sid}: sequence {seqs}")
        total = max(r["total_bytes_down"] for r in mine)
        added = sum(r["bytes_down"] for r in mine)
        expect(added == total, f"session {sid}: records add to {added}, its total is {total}")
    down = sum(r["bytes_down"] for r in cloud)
    return f"{len(cloud)} record(s) of {len(sessions)} session(s), {down / 1e6:.2f} MB down"


def wait_delivered(lab: VMLab, mac: str, seconds: float = 60) -> None:
    """Until the router has nothing waiting for `mac` (its uploads every second)."""
    done = wait(lambda: all(r["sent_at"] for r in lab.router_usage(mac)), seconds)
    expect(bool(done), f"usage still waiting on the router after {seconds:.0f} s")


def fresh_phone(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> str:
    """The phone joins afresh and is captive (a session a former scenario left is ended on
    the router first); its MAC."""
    lab.deauth(ssh(phone.ip, "cat /sys/class/net/eth0/address").strip())
    mac, ip = lab.join(phone)
    url114 = decode_opt114(ssh(phone.ip, f"cat {LEASE}.opt114 2>/dev/null || true").strip())
    expect(url114 == API_URL, f"DHCP option 114 carried {url114!r}, expected {API_URL!r}")
    state = wait(lambda: lab.gateway_state(mac), 30)
    expect(state == "captive", f"a new phone must start captive, the gateway says {state}")
    say(
        "Phone VM joins the LAN",
        f"{phone.netns} ({mac}) got {ip} from the router VM's dnsmasq with option 114 = "
        f"{url114}; the gateway sees it as {state}",
    )
    return mac


def online_phone(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> str:
    """A fresh phone logged in and browsing; its MAC."""
    mac = fresh_phone(lab, phone, say)
    ms = login(lab, phone, mac)
    expect(browse(phone), "no internet after the wallet login")
    say(
        "Shopper logs in with the sandbox wallet and browses",
        f"online as Alice Wang in {ms:.0f} ms; GET {SITE} -> 200",
    )
    return mac


# -- the scenarios ----------------------------------------------------------------------------


def demo(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> None:
    """join -> captive -> wallet login -> online -> usage -> one-tap opt-in -> walks out and
    back: the cloud pushes the venue's offer to her wallet -> one tap -> online -> logout."""
    mac = fresh_phone(lab, phone, say)
    r = phone.get(API_URL)
    doc = json.loads(r.body) if r.ok and r.status == 200 else {}
    expect(doc.get("captive") is True, f"API answered {r.status or r.error}")
    verdict = android(phone)
    expect(verdict == probes.CAPTIVE, f"Android's probe says {verdict}")
    r = phone.get(SITE)
    expect(r.status == 302 and r.location == PORTAL_URL, f"GET {SITE} -> {r.status}")
    say(
        "Captive: the API, the OS probe and any page lead to the portal",
        f"API captive=true; Android's probe -> captive; GET {SITE} -> 302 {r.location}",
    )

    ms = login(lab, phone, mac)
    say(
        "Shopper logs in with the sandbox wallet",
        f"portal -> wallet.test (Alice approves) -> callback -> /welcome: online as Alice "
        f"Wang in {ms:.0f} ms",
    )

    verdict = android(phone)
    expect(verdict == probes.ONLINE, f"after login Android's probe says {verdict}")
    expect(browse(phone), f"GET {SITE} did not reach the fake internet")
    say("Online through the router VM", f"probe -> online; GET {SITE} -> 200")

    phone.get(SITE + "bytes/2000000", timeout=60)
    got = wait(lambda: sum(r["bytes_down"] for r in lab.cloud_usage(mac)) > 2_000_000, 40)
    expect(bool(got), "no usage reached the cloud in 40 s")
    say("Usage arrives in the cloud", delivered_once(lab, mac, seconds=30) + ", from the router VM")

    link = shopper.opt_in_and_save(phone, PORTAL_URL, WALLET)
    say(
        "Shopper opts in to one-tap reconnect",
        f"the portal's signed link {link[:48]}... is a pass in her wallet; her signed consent "
        "to the venue's offers went to the cloud",
    )

    lab.leave(phone)
    gone = wait(lambda: lab.clients().get(mac, {}).get("ip") is None, 60)
    expect(bool(gone), "the gateway did not see the phone leave")
    lab.join(phone)

    def inbox() -> list:
        try:
            return messages(phone)
        except WalletAppError:
            return []

    found = wait(inbox, 60)
    expect(bool(found), "no offer reached the wallet in 60 s")
    message = found[0]
    t0 = time.monotonic()
    r = phone.get(tap(phone, message))
    state = lab.gateway_state(mac)
    expect(r.status == 303 and state == "authorized", f"tap: {r.status}, gateway: {state}")
    say(
        "She walks out and comes back: the cloud pushes the offer to her wallet",
        f"join -> cloud -> wallet message {message.title!r}; one tap on it -> online in "
        f"{(time.monotonic() - t0) * 1000:.0f} ms",
    )

    r = phone.logout(PORTAL_URL)
    expect(r.status == 303, f"logout answered {r.status or r.error}")
    r = phone.get(SITE)
    expect(r.status == 302, f"after logout expected 302, got {r.status or r.error}")
    say("Shopper logs out and is captive again", f"GET {SITE} -> 302 to the portal")


def outage(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> None:
    """The internet goes away: the phone keeps its session and the local portal, the router
    keeps the usage; the internet comes back: the usage reaches the cloud exactly once."""
    mac = online_phone(lab, phone, say)
    phone.get(SITE + "bytes/1000000", timeout=60)
    wait_delivered(lab, mac)
    before = len(lab.cloud_usage(mac))
    away = lab.wan_link(up=False)
    try:
        t0 = time.monotonic()
        expect(not browse(phone, 3), "the fake internet still answers with the WAN cut")
        by_name = phone.get(API_URL)
        # The portal's name should resolve with no internet: the router's dnsmasq is its
        # authority (`local=/<portal host>/`, 6ab8c60; before it the AAAA query went upstream
        # and curl gave up after 5 s, docs/decisions.md 2026-12-06). If it does not, the step
        # says so and reaches the portal at its LAN address.
        extra = () if by_name.ok else ("--resolve", f"{PORTAL_HOST}:443:{LAN_ROUTER}")
        how = "by name" if by_name.ok else f"at {LAN_ROUTER} (its name: {by_name.error})"
        r = phone.get(API_URL, extra=extra)
        doc = json.loads(r.body) if r.ok and r.status == 200 else {}
        expect(doc.get("captive") is False, f"the portal's API answered {r.status or r.error}")
        welcome = phone.get(PORTAL_URL + "welcome", extra=extra)
        expect(welcome.status == 200, f"the portal's welcome page answered {welcome.status}")
        say(
            f"The internet goes down ({lab.cut_name}, {away:.0f} s)",
            f"GET {SITE} fails; the router's portal still answers {how}: API captive=false, "
            "/welcome 200; her session stays",
        )
        time.sleep(8)  # interim records every 3 s, uploads every 1 s: all of them must fail
        waiting = [r for r in lab.router_usage(mac) if r["sent_at"] is None]
        state = lab.gateway_state(mac)
        expect(state == "authorized", f"the gateway says {state} during the outage")
        expect(bool(waiting), "the router holds no usage during the outage")
        if not lab.internet_vm:  # a halted internet VM's cloud cannot be asked (nor reached)
            expect(len(lab.cloud_usage(mac)) == before, "the cloud got records through a cut")
        say(
            "The router keeps the usage while the cloud is unreachable",
            f"{len(waiting)} record(s) waiting in the router's outbox after "
            f"{time.monotonic() - t0:.0f} s; the session is still {state}",
        )
    finally:
        back = lab.wan_link(up=True)
    t0 = time.monotonic()
    wait_delivered(lab, mac, 120)
    emptied = time.monotonic() - t0
    said = delivered_once(lab, mac, seconds=30)
    say(
        f"The internet comes back ({back:.0f} s until its services listen): the usage is "
        "delivered exactly once",
        f"outbox empty {emptied:.0f} s later; {said}; "
        "each key stored once, each session's records add up to its total",
    )
    expect(browse(phone, 10), "no internet after the outage")
    r = phone.logout(PORTAL_URL)
    expect(r.status == 303, f"logout answered {r.status or r.error}")
    wait_delivered(lab, mac)
    say("Browsing again, then logout", f"GET {SITE} -> 200; logout -> 303; usage delivered")


def crash(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> None:
    """A hard power-off of the router VM and a start: the phone's session survives (the kernel
    table is rebuilt from the state database) and nobody is counted twice."""
    mac = online_phone(lab, phone, say)
    t_login = time.monotonic()
    session = lab.clients()[mac]["session_id"]
    time.sleep(CUT_AFTER_LOGIN_SECONDS)
    after = time.monotonic() - t_login
    seconds = lab.power_cycle_router()
    say(
        "The router VM loses power (virsh destroy) and starts again",
        f"{after:.0f} s after the login; SSH on its WAN again after {seconds:.0f} s",
    )
    state = wait(lambda: _state_or_none(lab, mac) == "authorized" and "authorized", 240)
    expect(bool(state), f"after the restart the gateway says {_state_or_none(lab, mac)}")
    online = wait(lambda: browse(phone), 180)
    expect(bool(online), "the phone has no internet after the router's restart")
    r = phone.get(SITE)
    expect(r.status == 200, f"GET {SITE} -> {r.status}: the phone had to log in again")
    again = lab.clients()[mac]["session_id"]
    expect(again == session, f"session {again} after the restart, {session} before it")
    say(
        "Her session survived: the kernel table rebuilt from the state database",
        f"{mac} is authorized again without a login, session {session}; GET {SITE} -> 200",
    )
    phone.get(SITE + "bytes/1000000", timeout=60)
    wait_delivered(lab, mac, 90)
    said = delivered_once(lab, mac, session, seconds=30)
    say("Nobody counted twice", f"{said} for session {session}")
    r = phone.logout(PORTAL_URL)
    expect(r.status == 303, f"logout answered {r.status or r.error}")


def _state_or_none(lab: VMLab, mac: str) -> str | None:
    try:
        return lab.gateway_state(mac)
    except (VMLabError, subprocess.TimeoutExpired, ValueError):
        return None  # the daemon is not up yet


def roam(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> None:
    """The phone's MAC changes: a new station that must log in again; the old session is not
    reused by the new MAC."""
    old = online_phone(lab, phone, say)
    lab.leave(phone)
    lab.set_mac(phone, ROAM_MAC)
    try:
        new, ip = lab.join(phone)
        expect(new == ROAM_MAC, f"the phone's MAC is {new}")
        state = wait(lambda: lab.gateway_state(new), 30)
        expect(state == "captive", f"the new MAC is {state}, not captive")
        r = phone.get(SITE)  # the browser still holds the old session's portal cookie
        expect(r.status == 302, f"GET {SITE} -> {r.status}: the old session was reused")
        old_client = lab.clients().get(old) or {}
        say(
            "The phone comes back with another MAC: a stranger to the gateway",
            f"{new} got {ip} and is captive (GET {SITE} -> 302, with the old cookie); "
            f"the old {old} is {old_client.get('state')} with address {old_client.get('ip')}",
        )
        ms = login(lab, phone, new)
        expect(browse(phone), "no internet after the second login")
        say("She logs in again", f"{new} online in {ms:.0f} ms; GET {SITE} -> 200")
        phone.logout(PORTAL_URL)
    finally:
        lab.leave(phone)
        lab.set_mac(phone, old)  # the VM as it was, for the next scenario
        lab.join(phone)


def browser(lab: VMLab, phone: VMPhone, say: Callable[[str, str], None]) -> None:
    """a real browser on the phone: Chromium whose every connection the phone VM makes (an SSH
    SOCKS tunnel) opens a page -> the portal -> the wallet -> welcome -> the page; screenshots."""
    mac = fresh_phone(lab, phone, say)
    with lab.phone_browser(phone, SHOTS) as chromium:
        page = chromium.page
        page.goto(SITE)
        expect(page.url.startswith(PORTAL_URL), f"Chromium through the phone is at {page.url}")
        shot = chromium.snap("vm-portal")
        say(
            "Chromium through the phone VM opens a page and lands on the portal",
            f"GET {SITE} -> {page.url} (the router sees {mac}); {shot}",
        )
        page.click('a[href="/login/wallet"]')
        page.wait_for_selector('button[value="approve"]')
        wallet_approve(page)
        page.wait_for_url("**/welcome")
        state = lab.gateway_state(mac)
        expect(state == "authorized", f"after the wallet's approval the gateway says {state}")
        shot = chromium.snap("vm-welcome")
        say("She approves in the wallet's page: online", f"the gateway says {state}; {shot}")
        page.goto(SITE)
        expect(ONLINE_MARK in page.content(), f"{SITE} in Chromium: {page.inner_text('body')[:80]}")
        say("The page she asked for, through the router VM", f"{SITE}: {chromium.snap('vm-site')}")
    lab.deauth(mac)


def diagnose(lab: VMLab, phone: VMPhone) -> str:
    """What a tester looks at first when a step did not match: the router's stations and
    journals, the phone's DHCP client and address."""
    parts = []
    for where, command, run_on in (
        ("router: plaza-ctl clients", "plaza-ctl clients", lab.router),
        ("router: journal", "journalctl --no-pager -n 40 -u plaza-gateway -u plaza-dnsmasq",
         lab.router),
        (f"{phone.netns}: DHCP client and eth0",
         "journalctl --no-pager -n 15 -u plaza-phone-dhcp; ip -4 addr show dev eth0",
         lambda c: ssh(phone.ip, c)),
    ):  # fmt: skip
        try:
            parts.append(f"--- {where}\n{run_on(command).strip()[-2500:]}")
        except (VMLabError, subprocess.TimeoutExpired) as exc:
            parts.append(f"--- {where}: {exc}")
    return "\n".join(parts)


def run(name: str, lab: VMLab, machine: str = "phone1") -> bool:
    """One scenario on `machine`; prints each step and the verdict, True when all matched."""
    narrator = Narrator(lab.out)
    phone = lab.phone(machine)
    scenarios = {"demo": demo, "outage": outage, "crash": crash, "roam": roam, "browser": browser}
    scenario = scenarios[name]
    summary = " ".join((scenario.__doc__ or "").split())
    lab.out(f"== plaza-lab vm {name}: {summary}")
    try:
        scenario(lab, phone, narrator.say)
        lab.out(f"vm {name}: passed, every step matched")
        return True
    except (StepFailed, ShopperError, WalletAppError, VMLabError, subprocess.TimeoutExpired,
            KeyError, ValueError) as e:  # fmt: skip
        lab.out(f"[{narrator.step + 1}] did NOT match: {e}")
        lab.out(diagnose(lab, phone))
        lab.out(f"vm {name}: FAILED")
        return False
    finally:
        phone.close()
