"""What the browser tests share: headless Chromium (Debian's, driven by Playwright), where
screenshots go, axe-core's audit of a loaded page, and the merchant dashboard served by
cheroot on 127.0.0.1 with a day of usage seeded around the real clock, so a page shows what
a merchant would see.

Here rather than in a test module, so the dashboard, accessibility and push tests share them
without importing each other (tests/unit/test_test_modules.py).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi
from flask import Flask

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.enrol import create_claim
from cloud.models import PresenceEvent, UsageRecord
from tests.cloud.conftest import Router, enrol
from tests.conftest import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
EMAIL, PASSWORD = "owner@cafe.example", "flat white please"
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def audit(page: Any, name: str) -> list[str]:
    """Run axe on the loaded page; print what it finds and return the serious or critical."""
    assert AXE.exists(), f"{AXE} missing: run `make test` (npm install axe-core)"
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("rules => axe.run(document, {runOnly: rules})", RULES)
    bad = []
    for v in result["violations"]:
        targets = [" ".join(n["target"]) for n in v["nodes"]][:4]
        line = f"{name}: {v['impact']} {v['id']}: {v['help']} at {targets}"
        print(line)
        if v["impact"] in ("serious", "critical"):
            bad.append(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"a11y-{name}.png"), full_page=True)
    return bad


def seed_day(app: Flask, router: Router, now: float) -> int:
    """About 400 sessions over the last 24 h, busier at lunch and in the evening, each
    reporting every 5 minutes, with join/leave events; a quarter of the shoppers are regulars
    who were also here a week ago. Returns the number of usage records."""
    rng = random.Random(5)
    macs = [f"02:5a:{i >> 8:02x}:{i & 255:02x}:{rng.randrange(256):02x}:{i % 97:02x}"
            for i in range(300)]  # fmt: skip
    regulars = macs[:75]
    rows: list[Any] = []
    weights = [1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 9, 12, 10, 6, 5, 6, 8, 10, 9, 6, 4, 2, 1]
    hour_now = int(now) // 3600 * 3600
    for n in range(400):
        hours_ago = rng.choices(range(24), weights=[weights[(hour_now // 3600 - h) % 24]
                                                    for h in range(24)])[0]  # fmt: skip
        start = hour_now - hours_ago * 3600 + rng.randrange(3600)
        start = min(start, now - rng.randrange(60, 1800))  # the current hour: not in the future
        length = min(rng.choice([3, 8, 12, 20, 25, 40, 55, 75, 130]) * 60, now - start)
        mac = rng.choice(macs)
        session = f"s{n}"
        rows.append(_event(router, f"j{n}", "join", mac, start))
        t, seq = start, 0
        while t + 300 <= start + length:
            up, down = rng.randrange(20_000, 400_000), rng.randrange(200_000, 6_000_000)
            rows.append(_usage(router, f"{session}-{seq}", session, seq, mac, start, t, t + 300,
                               up, down))  # fmt: skip
            t, seq = t + 300, seq + 1
        if start + length < now - 300:
            rows.append(_event(router, f"l{n}", "leave", mac, start + length))
    for n, mac in enumerate(regulars):  # a visit a week ago
        then = now - 7 * 86400 + n * 60
        rows.append(_usage(router, f"old-{n}", f"old{n}", 0, mac, then, then, then + 300, 1, 1))
    with cloud_db.session(app) as db:
        db.add_all(rows)
        db.commit()
    return sum(isinstance(r, UsageRecord) for r in rows)


def _usage(router: Router, key: str, session: str, seq: int, mac: str, started: float,
           start: float, end: float, up: int, down: int) -> UsageRecord:  # fmt: skip
    return UsageRecord(
        device_id=router.device_id, venue_id=router.venue_id, received_at=end, key=key,
        session_id=session, seq=seq, mac=mac, ip="10.0.0.9", started_at=started,
        period_start=start, period_end=end, final=False, reason=None, bytes_up=up,
        packets_up=up // 1200, bytes_down=down, packets_down=down // 1200,
        total_bytes_up=up, total_bytes_down=down,
    )  # fmt: skip


def _event(router: Router, key: str, kind: str, mac: str, at: float) -> PresenceEvent:
    return PresenceEvent(device_id=router.device_id, venue_id=router.venue_id, key=key,
                         kind=kind, mac=mac, at=at)  # fmt: skip


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    url = f"sqlite:///{tmp / 'cloud.db'}"
    migrations.upgrade(url)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance")})
    now = time.time()
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Cafe Uno", EMAIL, PASSWORD, now)
        venue = create_venue(db, merchant.id, "Cafe Uno Main St", now)
        code = create_claim(db, venue.id, now)
        db.commit()
        venue_id = venue.id
    router = enrol(app.test_client(), time.time, code, hostname="cafe-uno-router")  # type: ignore[arg-type]
    health = {"uptime": 3 * 86400 + 5000, "load": [0.18, 0.22, 0.2], "mem_used_bytes": 48 << 20,
              "mem_total_bytes": 128 << 20, "clients": {"captive": 2, "authorized": 11},
              "version": "0.4.1", "config_version": 1, "outbox_backlog": 0}  # fmt: skip
    assert router.post("/api/v1/device/heartbeat", health).status_code == 200
    records = seed_day(app, router, now)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=8, server_name="plaza-test")
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    try:
        yield {"base": f"http://{host}:{port}", "venue_id": venue_id, "router": router,
               "records": records}  # fmt: skip
    finally:
        server.stop()
        thread.join(10)
        cloud_db.engine(app).dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
