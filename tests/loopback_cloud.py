"""The real cloud app (cloud/) served by cheroot on 127.0.0.1 in a thread, with helpers that
reach into its database: what the uplink's tests talk to instead of a fake.

Kept out of the test modules so the uplink tests (test_uplink, test_uplink_limits) share it
without importing each other (tests/unit/test_test_modules.py).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from sqlalchemy import func, select

from tests.consent_wallet import PORTAL_HOST


@dataclass
class Cloud:
    app: Any
    port: int
    server: Any = None
    thread: threading.Thread | None = None
    tls: tuple[Path, Path] | None = None  # (certificate chain, key): serve HTTPS

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on `port` (a fixed one, so a restarted cloud is where the router looks;
        cheroot sets SO_REUSEADDR only for a port asked for by number)."""
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        self.server = wsgi.Server(("127.0.0.1", self.port), self.app, numthreads=6)
        if self.tls:
            self.server.ssl_adapter = BuiltinSSLAdapter(str(self.tls[0]), str(self.tls[1]))
        self.server.prepare()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def db(self) -> Any:
        from cloud import db

        return db.session(self.app)

    def claim(self, venue_name: str = "Harbour Café") -> tuple[str, str]:
        """A fresh merchant + venue; returns (claim code, venue id)."""
        from cloud import accounts, enrol

        with self.db() as db:
            n = db.scalar(select(func.count()).select_from(_models().Merchant))
            merchant = accounts.create_merchant(
                db, "M", f"m{n}@shop.test", "password-123", time.time()
            )
            venue = accounts.create_venue(db, merchant.id, venue_name, time.time(), PORTAL_HOST)
            code = enrol.create_claim(db, venue.id, time.time())
            db.commit()
            return code, venue.id

    def issue(self, device_id: str, op: str, args: dict[str, Any]) -> str:
        from cloud import commands

        with self.db() as db:
            command = commands.issue(
                db, self.app.config["CLOUD_KEY"], device_id, op, args, time.time()
            )
            db.commit()
            return command.id

    def inject(self, device_id: str, signed: dict[str, Any]) -> str:
        """Put an arbitrary command (forged, tampered) in the delivery queue as if issued."""
        models = _models()
        with self.db() as db:
            row = models.Command(
                id=signed["id"],
                device_id=device_id, op=str(signed.get("op")), args={},
                issued_at=time.time(), expires_at=time.time() + 300, signed=signed,
            )  # fmt: skip
            db.add(row)
            db.commit()
            return row.id

    def command(self, command_id: str) -> Any:
        with self.db() as db:
            return db.get(_models().Command, command_id)

    def usage_count(self, device_id: str) -> int:
        models = _models()
        with self.db() as db:
            return db.scalar(
                select(func.count())
                .select_from(models.UsageRecord)
                .where(models.UsageRecord.device_id == device_id)
            )

    def usage_total(self, device_id: str) -> int:
        models = _models()
        with self.db() as db:
            return db.scalar(
                select(func.coalesce(func.sum(models.UsageRecord.bytes_down), 0)).where(
                    models.UsageRecord.device_id == device_id
                )
            )

    def set_config(self, venue_id: str, **changes: Any) -> int:
        from cloud import venue_config

        with self.db() as db:
            venue = db.get(_models().Venue, venue_id)
            version = venue_config.set_venue_config(db, venue_id, {**venue.config, **changes})
            db.commit()
            return version

    def device(self, device_id: str) -> Any:
        with self.db() as db:
            return db.get(_models().Device, device_id)


def _models() -> Any:
    from cloud import models

    return models
