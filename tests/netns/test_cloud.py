"""The router and the Plaza cloud in the lab: enrolment, heartbeat, config reaching the
portal, a command reaching the router, usage with zero loss through a cloud outage and a
killed gateway, and presence push: a returning shopper gets the venue's offer in the wallet
and one tap on it logs the phone in.

The cloud runs on the lab's fake internet (lab/cloud.py) over HTTPS; the router enrolled with
a claim code before its daemon started. The cloud's SQLite file is read directly here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab import cloud as labcloud
from lab import shopper
from lab.phone import Phone
from lab.topology import Lab, nsexec
from lab.wallet.app import WalletAppError, messages, tap
from tests.netns.conftest import running_lab, wait_for
from tests.promtext import parse

pytestmark = pytest.mark.netns

BIN = Path(sys.executable).parent
SITE = "http://www.example.test/"
METRICS_URL = "http://127.0.0.1:9100/metrics"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("c", phones=2, cloud=True) as lab:
        yield lab


def cloud_db(lab: Lab) -> sqlite3.Connection:
    path = labcloud.instance_dir(lab.run_dir) / "cloud.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def query(lab: Lab, sql: str, *args: object) -> list[sqlite3.Row]:
    conn = cloud_db(lab)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def gateway_db(lab: Lab) -> sqlite3.Connection:
    path = Path(lab.gateway_config().gateway.state_dir) / "plaza.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def cloud_cli(lab: Lab, *args: str) -> str:
    return labcloud.cli(lab.run_dir, *args)


def phone(lab: Lab, name: str) -> dict:
    return next(p for p in lab.status()["phones"] if p["name"] == name)


def test_router_is_enrolled_and_heartbeats(lab: Lab) -> None:
    device = lab.status()["cloud"]["device_id"]
    assert device and device.startswith("dev_")
    key = (Path(lab.gateway_config().gateway.state_dir) / "device.key").stat()
    assert key.st_mode & 0o777 == 0o600

    def beat() -> sqlite3.Row | None:
        """A recent heartbeat that counts both phones (the first one came before they
        joined)."""
        rows = query(lab, "SELECT * FROM devices WHERE id = ?", device)
        if not rows or not rows[0]["last_heartbeat_at"]:
            return None
        clients = json.loads(rows[0]["health"])["clients"]
        recent = time.time() - rows[0]["last_heartbeat_at"] < 10
        return rows[0] if recent and clients["captive"] + clients["authorized"] >= 2 else None

    row = wait_for(beat, 15, "a heartbeat counting both phones")
    assert row["venue_id"] == lab.status()["cloud"]["venue_id"]


def test_a_zh_cn_phone_reads_the_venues_chinese_texts_from_the_cloud(lab: Lab) -> None:
    """The demo venue carries both languages; the merchant's Chinese name and offers (not
    the router's own TOML translations) reach a phone asking for zh-CN, English ones an
    English phone."""
    status = lab.status()
    venue_id, device = status["cloud"]["venue_id"], status["cloud"]["device_id"]
    [row] = query(lab, "SELECT config FROM venues WHERE id = ?", venue_id)
    demo = json.loads(row["config"])
    assert demo["branding"]["name"] == {"en": "Plaza Demo Café", "zh-CN": "广场示范咖啡"}
    assert [o["title"]["zh-CN"] for o in demo["offers"]] == ["中午前馥芮白 12 元", "大杯饮品送糕点"]

    def bilingual(config: dict) -> None:
        config["branding"]["name"] = {"en": "Cloud Harbour Café", "zh-CN": "云港咖啡"}
        title = {"en": "Two lattes for one", "zh-CN": "拿铁买一送一"}
        config["offers"] = [{"id": "zh1", "title": title, "url": ""}]

    def restore(config: dict) -> None:
        config["branding"]["name"], config["offers"] = demo["branding"]["name"], demo["offers"]

    labcloud.edit_venue(lab.run_dir, venue_id, bilingual)
    cloud_cli(lab, "command", device, "refresh-config")
    browser = Phone(lab.netns_of("phone2"))
    chinese = ("-H", "Accept-Language: zh-CN,zh;q=0.9")
    try:

        def shown() -> bool:
            page = browser.get(status["portal_url"] + "venue", extra=chinese)
            return page.status == 200 and "拿铁买一送一" in page.body

        wait_for(shown, 20, "the cloud's Chinese offer on the portal")
        splash = browser.get(status["portal_url"], extra=chinese)
        assert splash.status == 200 and "云港咖啡" in splash.body
        assert "Cloud Harbour Café" not in splash.body and "广场示范咖啡" not in splash.body
        english = browser.get(status["portal_url"] + "venue", extra=("-H", "Accept-Language: en"))
        assert "Two lattes for one" in english.body and "拿铁买一送一" not in english.body
        assert "Cloud Harbour Café" in english.body
    finally:
        browser.close()
        labcloud.edit_venue(lab.run_dir, venue_id, restore)
        cloud_cli(lab, "command", device, "refresh-config")


def test_venue_config_from_the_cloud_reaches_the_portal(lab: Lab) -> None:
    status = lab.status()
    venue_id, device = status["cloud"]["venue_id"], status["cloud"]["device_id"]

    def change(config: dict) -> None:
        config["offers"] = [{"id": "o1", "title": "Cloud offer: two coffees for one",
                             "body": "Today only.", "url": ""}]  # fmt: skip
        config["policy"].update(session_minutes=45, idle_minutes=0)

    labcloud.edit_venue(lab.run_dir, venue_id, change)
    cloud_cli(lab, "command", device, "refresh-config")
    browser = Phone(lab.netns_of("phone2"))
    try:

        def shown() -> bool:
            page = browser.get(status["portal_url"] + "venue")
            return page.status == 200 and "two coffees for one" in page.body

        wait_for(shown, 20, "the cloud's offer on the portal")
    finally:
        browser.close()
    # The venue's policy from the cloud: sessions opened from now on get 45 minutes.
    mac = phone(lab, "phone2")["mac"]
    control = lab.control()

    def cloud_policy() -> dict | None:
        session = control.auth(mac)
        control.deauth(mac)
        return session if session["policy"]["session_minutes"] == 45 else None

    session = wait_for(cloud_policy, 10, "the cloud's session time on a new session")
    assert session["seconds_remaining"] <= 2700


def set_garden(lab: Lab, domains: list[str]) -> None:
    """The merchant edits the venue's walled garden; the cloud tells the router at once."""
    cloud = lab.status()["cloud"]
    labcloud.edit_venue(
        lab.run_dir, cloud["venue_id"], lambda config: config["garden"].update(domains=domains)
    )
    cloud_cli(lab, "command", cloud["device_id"], "refresh-config")


def test_the_clouds_walled_garden_reaches_dnsmasq_and_the_sni_check(lab: Lab) -> None:
    """shop.example.test and www.example.test share one address: once the merchant puts
    shop in the garden, a captive phone reaches it (dnsmasq, restarted, puts the address in
    the garden set), while www on the same address is still refused by name; taken out again,
    shop is refused at the next connection."""
    mac, control = phone(lab, "phone1")["mac"], lab.control()
    if control.client(mac)["state"] == "authorized":  # captive, whatever earlier tests did
        control.deauth(mac)
    browser = Phone(lab.netns_of("phone1"))
    shop, www = "https://shop.example.test/", "https://www.example.test/"
    first_dnsmasq = int(lab.dnsmasq_pid_file.read_text())
    try:
        assert not browser.get(shop, timeout=3, extra=("-4",)).ok
        set_garden(lab, ["shop.example.test"])

        def reached() -> bool:
            r = browser.get(shop, timeout=3, extra=("-4",))
            return r.ok and "FAKE-INTERNET-OK" in r.body

        wait_for(reached, 30, "the cloud's garden name reachable from a captive phone")
        assert int(lab.dnsmasq_pid_file.read_text()) != first_dnsmasq  # restarted to read it
        fragment = Path(lab.gateway_config().gateway.state_dir) / "dnsmasq.d/cloud-garden.conf"
        assert "nftset=/shop.example.test/" in fragment.read_text()
        metrics = parse(nsexec(lab.state.router, "curl", "-sS", "--fail", METRICS_URL))
        assert metrics["plaza_garden_names"].value(source="cloud") == 1
        assert metrics["plaza_dnsmasq_restarts_total"].value(result="ok") >= 1
        neighbour = browser.get(www, timeout=3, extra=("-4",))
        assert not neighbour.ok and "FAKE-INTERNET-OK" not in neighbour.body
        assert control.client(mac)["state"] == "captive"

        set_garden(lab, [])

        def refused() -> bool:
            return not browser.get(shop, timeout=3, extra=("-4",)).ok

        wait_for(refused, 30, "the name taken out of the garden refused again")
        assert "shop.example.test" not in fragment.read_text()
    finally:
        browser.close()
        set_garden(lab, [])


def test_a_command_from_the_cloud_authorizes_and_kicks_a_phone(lab: Lab) -> None:
    device = lab.status()["cloud"]["device_id"]
    mac = phone(lab, "phone2")["mac"]
    control = lab.control()
    assert control.client(mac)["state"] == "captive"
    cloud_cli(lab, "command", device, "authorize", "--client", mac, "--minutes", "5")
    wait_for(lambda: control.client(mac)["state"] == "authorized", 15, "the authorize command")
    cloud_cli(lab, "command", device, "kick", "--client", mac)
    wait_for(lambda: control.client(mac)["state"] == "captive", 15, "the kick command")
    kicked = "SELECT ok FROM commands WHERE device_id = ? AND op = 'kick' AND done_at NOT NULL"
    done = wait_for(lambda: query(lab, kicked, device), 10, "the kick's result in the cloud")
    assert done[-1]["ok"] == 1


def download(lab: Lab, name: str, n: int) -> None:
    """A stream of `n` bytes at 1 MB/s (paced by the server), so interim usage records are
    written meanwhile."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.netns_of(name), "curl", "-4", "-sS", "-o", "/dev/null",
         "-m", "20", "-w", "%{http_code} %{size_download}", f"{SITE}bytes/{n}?per_second=1000000"],
        check=True, timeout=30, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert out.split()[:2] == ["200", str(n)], out


def test_usage_survives_a_cloud_outage_and_a_killed_gateway(lab: Lab) -> None:
    """Cut the cloud off while the phone streams, kill -9 the gateway mid-upload, restore
    both: the cloud's records equal the gateway's outbox exactly, none twice, none lost."""
    device = lab.status()["cloud"]["device_id"]
    mac = phone(lab, "phone1")["mac"]
    control = lab.control()
    session = control.auth(mac)["session_id"]
    download(lab, "phone1", 2_000_000)
    lab.stop("internet-cloud")  # the cloud goes away
    for _ in range(3):
        download(lab, "phone1", 3_000_000)  # interim records keep being written meanwhile
    pid = lab.state.pids["router-gateway"]
    os.kill(pid, signal.SIGKILL)  # the gateway dies too, records in its outbox unsent
    lab.start_gateway()
    download(lab, "phone1", 1_000_000)
    control = lab.control()
    control.deauth(mac)  # the final record
    with gateway_db(lab) as db:
        held = db.execute(
            "SELECT count(*) FROM usage_outbox WHERE session_id = ? AND sent_at IS NULL",
            (session,),
        ).fetchone()[0]
        rows = [dict(r) for r in db.execute(
            "SELECT key, seq, final, sent_at, period_start, period_end, bytes_down"
            " FROM usage_outbox WHERE session_id = ?", (session,))]  # fmt: skip
    assert held >= 2, rows  # records written while the cloud was away, across the kill
    lab.serve_cloud()

    def drained() -> bool:
        with gateway_db(lab) as db:
            unsent = db.execute(
                "SELECT count(*) FROM usage_outbox WHERE session_id = ? AND sent_at IS NULL",
                (session,),
            ).fetchone()[0]
            final = db.execute(
                "SELECT count(*) FROM usage_outbox WHERE session_id = ? AND final = 1",
                (session,),
            ).fetchone()[0]
        return unsent == 0 and final == 1

    wait_for(drained, 60, "the outbox to drain into the cloud")
    with gateway_db(lab) as db:
        mine = {r["key"]: dict(r) for r in db.execute(
            "SELECT * FROM usage_outbox WHERE session_id = ?", (session,))}  # fmt: skip
    theirs = {r["key"]: dict(r) for r in query(
        lab, "SELECT * FROM usage_records WHERE device_id = ? AND session_id = ?", device,
        session)}  # fmt: skip
    assert set(theirs) == set(mine) and len(mine) >= held
    for key, record in mine.items():
        for field in ("bytes_up", "bytes_down", "packets_up", "packets_down", "seq"):
            assert theirs[key][field] == record[field], (key, field)
    total_down = sum(r["bytes_down"] for r in theirs.values())
    final = next(r for r in mine.values() if r["final"])
    assert total_down == final["total_bytes_down"] > 9_000_000


def test_returning_shopper_gets_the_offer_in_the_wallet_and_one_tap_logs_in(lab: Lab) -> None:
    status = lab.status()
    portal, wallet = status["portal_url"], status["wallet_url"]
    name = "phone1"
    info = phone(lab, name)
    browser = Phone(lab.netns_of(name))
    try:
        shopper.wallet_login(browser, portal, user="mei", pin="2468")
        shopper.opt_in_and_save(browser, portal, wallet, user="mei", pin="2468")
        assert browser.logout(portal).status == 303
        linked = "SELECT * FROM shopper_links WHERE mac = ? AND opted_in"
        wait_for(lambda: query(lab, linked, info["mac"]), 20, "the opt-in to reach the cloud")
        # The shopper walks out (the lease is released) and comes back later.
        lab.stop(f"{name}-dhcp")
        wait_for(lambda: lab.control().client(info["mac"])["ip"] is None, 15, "the leave")
        lab.start_dhcp(next(p for p in lab.state.phones if p.name == name))
        lab.wait_leases()

        def inbox() -> list:
            try:
                return messages(browser, wallet)
            except WalletAppError:  # the phone is still rejoining
                return []

        found = wait_for(inbox, 40, "the offer in the wallet")
        assert lab.control().client(info["mac"])["state"] == "captive"
        message = found[0]
        assert "Plaza Demo Café" in message.title + message.sender
        link = tap(browser, message)
        assert link.startswith(portal + "reconnect/")
        r = browser.get(link)  # the one tap
        assert r.status == 303 and r.location == "/welcome"
        assert lab.control().client(info["mac"])["state"] == "authorized"
        subscribe_this_browser(lab, browser, portal, link, info["mac"])
    finally:
        browser.close()


def subscribe_this_browser(lab: Lab, browser: Phone, portal: str, link: str, mac: str) -> None:
    """After the tap, the welcome page offers the venue's offers as browser notifications
    (portal/push.py): the card names this router's cloud and venue and carries the token the
    browser tapped in with, the page's CSP lets it reach that cloud, and what push.js then
    sends from the phone is stored by the cloud for this shopper (the browser's own part is
    tests/browser/test_push_browser.py)."""
    cloud = lab.status()["cloud"]
    welcome = browser.get(portal + "welcome")
    card = re.search(r'<section class="card" id="push"(.*?)>', welcome.body, re.S)
    assert card, "no push card on the welcome page"
    data = dict(re.findall(r'data-(\w+)="([^"]*)"', card.group(1)))
    assert (data["cloud"], data["venue"]) == (cloud["url"], cloud["venue_id"])
    assert data["token"] == link.rsplit("/", 1)[1]
    parts = urlsplit(cloud["url"])
    csp = welcome.headers["content-security-policy"]
    assert f"connect-src 'self' {parts.scheme}://{parts.netloc}" in csp
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    # A name the fake internet's DNS answers, on a range the lab allows (lab/cloud.py): the
    # cloud resolves and checks a push endpoint before it stores it.
    subscription = {"endpoint": "https://www.example.test/s/1", "expirationTime": None,
                    "keys": {"p256dh": b64(point), "auth": b64(os.urandom(16))}}  # fmt: skip
    body = {"venue_id": data["venue"], "subscription": subscription,
            "connect_token": data["token"]}  # fmt: skip
    origin = portal.rstrip("/")
    r = browser.request(data["cloud"] + "/api/v1/push/subscribe", method="POST", extra=(
        "-H", f"Origin: {origin}", "-H", "Content-Type: application/json",
        "--data-binary", json.dumps(body),
    ))  # fmt: skip
    assert r.status == 201, r.body
    assert r.headers["access-control-allow-origin"] == origin
    [link_row] = query(lab, "SELECT wallet_user FROM shopper_links WHERE mac = ?", mac)
    rows = query(lab, "SELECT wallet_user, endpoint FROM push_subscriptions WHERE venue_id = ?",
                 cloud["venue_id"])  # fmt: skip
    assert [tuple(row) for row in rows] == [(link_row["wallet_user"], subscription["endpoint"])]
