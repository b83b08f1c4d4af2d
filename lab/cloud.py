"""The Plaza cloud in the lab: served over HTTPS on the fake internet, with a demo merchant.

    internet lo: 192.0.2.40  https://cloud.test  (plaza-cloud run, SQLite, lab CA certificate)

The router reaches it over its WAN like any cloud; the phones never need it. The merchant,
venue and claim code are made with the operator CLI on the instance's SQLite file (nothing on
the network), then the router enrols with the claim code as a technician would, and its
daemon's uplink starts on the next (re)start.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import plaza_seed

CLOUD_HOST = "cloud.test"
CLOUD_IP = "192.0.2.40"
CLOUD_URL = f"https://{CLOUD_HOST}"
MERCHANT_EMAIL = "owner@plaza.test"
MERCHANT_PASSWORD = "plaza-demo-password"  # lab only; the dashboard's sign-in in the demo
DEMO_NAME_ZH = "广场示范咖啡"  # the demo venue's Chinese name, as in the lab router's TOML
BIN = Path(sys.executable).parent
# The lab's push services live on the fake internet's documentation and benchmark ranges,
# which the cloud refuses as push endpoints by default (cloud/push/endpoints.py): allowed here,
# explicitly, in the environment of the web instance and of the push worker.
PUSH_ALLOWED_NETWORKS = "192.0.2.0/24 198.18.0.0/15 2001:db8::/32"
ENV = {"PLAZA_CLOUD_PUSH_ALLOWED_NETWORKS": PUSH_ALLOWED_NETWORKS}
TRANSIT_FEED = Path(__file__).resolve().parent / "transit_feed"  # two buses, a transfer fee


class CloudLabError(RuntimeError):
    pass


@dataclass
class CloudAccount:
    merchant_id: str
    venue_id: str


def instance_dir(run_dir: Path) -> Path:
    return run_dir / "cloud"


def cli(run_dir: Path, *args: str, stdin: str | None = None) -> str:
    """`plaza-cloud --instance <lab instance> ARGS` in the host namespace (a file, no network)."""
    proc = subprocess.run(
        [str(BIN / "plaza-cloud"), "--instance", str(instance_dir(run_dir)), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise CloudLabError(f"plaza-cloud {args[0]}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout.strip()


def serve_command(run_dir: Path, cert: Path, key: Path) -> list[str]:
    return [
        str(BIN / "plaza-cloud"), "--instance", str(instance_dir(run_dir)), "run",
        "--host", CLOUD_IP, "--port", "443", "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip


def push_command(run_dir: Path) -> list[str]:
    return [str(BIN / "plaza-cloud"), "--instance", str(instance_dir(run_dir)), "push-worker"]


def bootstrap(run_dir: Path, venue_name: str, portal_host: str) -> CloudAccount:
    """The demo merchant and its venue, registered with the router's portal host name
    (idempotent: kept in `account.json`)."""
    saved = instance_dir(run_dir) / "account.json"
    if saved.exists():
        return CloudAccount(**json.loads(saved.read_text()))
    instance_dir(run_dir).mkdir(parents=True, exist_ok=True)
    cli(run_dir, "migrate")
    merchant = cli(
        run_dir, "create-merchant", "Plaza Demo Café", MERCHANT_EMAIL,
        "--password", MERCHANT_PASSWORD,
    ).split()[-1]  # fmt: skip
    venue = cli(
        run_dir, "create-venue", merchant, venue_name, "--portal-host", portal_host
    ).split()[-1]
    _demo_offers(run_dir, venue, venue_name)
    cli(run_dir, "hospital", "seed", venue)  # clinics, schedules, free slots (issue 17)
    cli(run_dir, "transit", "load-feed", str(TRANSIT_FEED), "--venue", venue)  # the bus agency
    plaza_seed.seed(instance_dir(run_dir) / "cloud.db", venue, merchant)  # the shop
    account = CloudAccount(merchant_id=merchant, venue_id=venue)
    saved.write_text(json.dumps(account.__dict__))
    return account


def _demo_offers(run_dir: Path, venue_id: str, venue_name: str) -> None:
    """The demo venue's branding and offers in English and Chinese, as a merchant would set
    them in the dashboard (the same texts as the lab router's own TOML)."""

    def change(config: dict) -> None:
        config["branding"]["name"] = {"en": venue_name, "zh-CN": DEMO_NAME_ZH}
        config["offers"] = [
            {"id": "flat-white",
             "title": {"en": "Flat white ¥12 until noon", "zh-CN": "中午前馥芮白 12 元"},
             "body": {"en": "Show this screen at the counter.", "zh-CN": "在柜台出示此页面即可。"},
             "url": f"{CLOUD_URL}/plaza/vouchers/offers/{venue_id}"},  # the shop's voucher
            {"id": "pastry",
             "title": {"en": "Free pastry with any large drink", "zh-CN": "大杯饮品送糕点"},
             "body": "", "url": ""},
        ]  # fmt: skip

    edit_venue(run_dir, venue_id, change)


def edit_venue(run_dir: Path, venue_id: str, change: Callable[[dict], None]) -> int:
    """Change the venue's config as the dashboard's editor saves it (validated, versioned);
    the new version. Routers see it at their next heartbeat, or at once after
    `cli(run_dir, "command", device, "refresh-config")`."""
    from sqlalchemy.orm import Session

    from cloud.db import make_engine
    from cloud.models import Venue
    from cloud.venue_config import set_venue_config

    engine = make_engine(f"sqlite:///{instance_dir(run_dir) / 'cloud.db'}")
    try:
        with Session(engine) as db:
            config = copy.deepcopy(db.get(Venue, venue_id).config)
            change(config)
            version = set_venue_config(db, venue_id, config)
            db.commit()
            return version
    finally:
        engine.dispose()


def claim_code(run_dir: Path, venue_id: str) -> str:
    return cli(run_dir, "create-claim", venue_id).split()[-1]
