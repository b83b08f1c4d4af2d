"""The cloud's shop and the sandbox wallet on loopback, both over HTTPS with a throwaway lab
CA: what the Chromium walks of the demo's chapters (the plaza shopper, the transit rider)
sign in and pay against. The cloud is cheroot on 127.0.0.1 with SQLite, a merchant and venue
made; the wallet is lab/wallet's server with fresh keys. Here rather than in a test module so
those tests share it without importing each other (tests/unit/test_test_modules.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from lab.pki import LabCA
from lab.wallet.https import make_server
from lab.wallet.keys import provision
from lab.wallet.server import create_app as wallet_server
from tests.browser.conftest import EMAIL, PASSWORD


@dataclass(frozen=True)
class ShopCloud:
    base: str  # https://127.0.0.1:<port>, the cloud
    wallet: str  # https://127.0.0.1:<port>, the sandbox wallet
    app: Any
    database: Path  # the cloud's SQLite file
    ca_cert: Path
    venue_id: str
    merchant_id: str


@contextlib.contextmanager
def serve_shop_cloud(tmp: Path) -> Iterator[ShopCloud]:
    pki = LabCA(tmp / "ca")
    cert, key = pki.issue("wallet", ["wallet.test", "127.0.0.1"])
    wallet = make_server("127.0.0.1", 0, None, str(cert), str(key))
    wallet_url = f"https://127.0.0.1:{wallet.server_port}"
    url = f"sqlite:///{tmp / 'cloud.db'}"
    migrations.upgrade(url)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance")})
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4, server_name="plaza-test")
    cloud_cert, cloud_key = pki.issue("cloud", ["127.0.0.1"])
    server.ssl_adapter = BuiltinSSLAdapter(str(cloud_cert), str(cloud_key))
    server.prepare()
    base = "https://{}:{}".format(*server.bind_addr[:2])
    made = provision(tmp / "keys", "https://portal.plaza.test", issuer=wallet_url, cloud_base=base)
    wallet.app = wallet_server(json.loads(Path(made["settings"]).read_text()), clock=time.time)
    oidc, trade = made["push"]["oidc"], made["trade"]
    app.config.update(
        PUBLIC_URL=base, WALLET_URL=wallet_url, WALLET_DIALECT="oidc",
        WALLET_CLIENT_ID=oidc["client_id"], WALLET_CLIENT_SECRET_FILE=oidc["client_secret_file"],
        WALLET_APP_ID=trade["app_id"], WALLET_APP_PRIVATE_KEY_FILE=trade["app_private_key_file"],
        WALLET_PUBLIC_KEY_FILE=trade["wallet_public_key_file"],
        WALLET_SELLER_ID=trade["seller_id"], WALLET_CA_BUNDLE=str(pki.cert_path),
    )  # fmt: skip
    now = time.time()
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Cafe Uno", EMAIL, PASSWORD, now)
        venue = create_venue(db, merchant.id, "Cafe Uno Main St", now)
        db.commit()
        venue_id, merchant_id = venue.id, merchant.id
    for serve in (server.serve, wallet.serve_forever):
        threading.Thread(target=serve, daemon=True).start()
    try:
        yield ShopCloud(base, wallet_url, app, tmp / "cloud.db", pki.cert_path, venue_id,
                        merchant_id)  # fmt: skip
    finally:
        server.stop()
        wallet.shutdown()
        wallet.server_close()
        cloud_db.engine(app).dispose()
