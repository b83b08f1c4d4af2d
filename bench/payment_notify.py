"""Payment notify handling: notifies/s through the real HTTP path, on PostgreSQL.

A private PostgreSQL cluster (lab/postgres.py, fsync on), migrated; PAYMENTS payments waiting
for their notify; `plaza-cloud run` as its own process on 127.0.0.1 (cheroot: its own
interpreter and GIL) configured with a wallet key pair made for the run. Every notify is built
and signed RSA2 beforehand, as the wallet signs it (the wallet's cost is not measured), then
CLIENTS threads POST them as form bodies to /plaza/notify/alipay. Each must answer `success`:
the cloud verifies the signature, checks app, seller, amount and trade number against the
stored payment, moves it to TRADE_SUCCESS and books the capture in the ledger, in one
transaction. A second pass delivers every notify again (the wallet retrying): it must book
nothing. A third sends forged ones (a changed amount under the old signature): each must be
refused. Afterwards the database is checked: one posting per payment, the books balanced.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from benchlib import Check, Result, bench_postgres, bench_venue, log, main
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from cloud import create_app
from cloud import db as cloud_db
from cloud.o2o import ledger
from cloud.o2o.payments import SUCCESS, Payment, create_payment
from cloud.o2o.shoppers import find_or_create
from plaza.wallet import rsa2
from plaza.wallet.alipay import timestamp

NAME = "payment_notify"
NOTIFY = "/plaza/notify/alipay"
APP_ID = "2021000000000001"
SELLER = "2088123412341234"
WARM = 50


def keys(directory: Path) -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    """The wallet's key (signs notifies) and the app's, as files the cloud reads."""
    wallet = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "wallet.pub").write_bytes(rsa2.public_pem(wallet.public_key()))
    (directory / "app.key").write_bytes(rsa2.private_pem(app))
    (directory / "app.key").chmod(0o600)
    env = {
        "PLAZA_CLOUD_WALLET_URL": "https://wallet.invalid",  # never called: notifies come in
        "PLAZA_CLOUD_WALLET_APP_ID": APP_ID,
        "PLAZA_CLOUD_WALLET_APP_PRIVATE_KEY_FILE": str(directory / "app.key"),
        "PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE": str(directory / "wallet.pub"),
        "PLAZA_CLOUD_WALLET_SELLER_ID": SELLER,
    }
    return wallet, env


def notify_for(payment_id: str, amount: int, key: rsa.RSAPrivateKey) -> dict[str, str]:
    now = timestamp(time.time())
    params = {
        "notify_time": now, "notify_type": "trade_status_sync", "notify_id": secrets.token_hex(16),
        "app_id": APP_ID, "charset": "utf-8", "version": "1.0", "sign_type": "RSA2",
        "trade_no": "2026" + secrets.token_hex(12), "out_trade_no": payment_id,
        "buyer_id": "2088000000000001", "seller_id": SELLER, "trade_status": SUCCESS,
        "total_amount": f"{amount // 100}.{amount % 100:02d}", "subject": "Bench lunch",
        "gmt_create": now, "gmt_payment": now,
    }  # fmt: skip
    params["sign"] = rsa2.sign_notify(params, key)
    return params


@contextmanager
def cloud_server(url: str, instance: Path, env: dict[str, str]) -> Iterator[str]:
    cmd = [sys.executable, "-m", "cloud.cli", "--database-url", url, "--instance", str(instance),
           "run", "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"plaza-cloud run did not start: {line}{proc.stdout.read(2000)}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def deliver(base: str, notifies: list[dict[str, str]], clients: int, expect: int,
            errors: list[str]) -> float:  # fmt: skip
    """POST every notify, `clients` at a time; seconds taken. Answers other than `expect`
    (200 `success`, or 403 for forged ones) are errors."""
    shares = [notifies[n::clients] for n in range(clients)]

    def worker(share: list[dict[str, str]]) -> None:
        with requests.Session() as http:
            for params in share:
                answer = http.post(base + NOTIFY, data=params, timeout=60)
                ok = answer.status_code == expect
                if ok and expect == 200:
                    ok = answer.text == "success"
                if not ok:
                    errors.append(f"{answer.status_code} {answer.text[:100]}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def run(payments: int = 2000, clients: int = 8) -> Result:
    result = Result(NAME)
    errors: list[str] = []
    with bench_postgres() as url, tempfile.TemporaryDirectory(prefix="plaza-pay-bench-") as tmp:
        wallet_key, env = keys(Path(tmp))
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": f"{tmp}/instance"})
        made: list[tuple[str, int]] = []
        with cloud_db.session(app) as db:
            venue = bench_venue(db, time.time())
            shopper = find_or_create(db, "alipay", "2088000000000001", "Bench", time.time())
            for n in range(payments + WARM):
                amount = 100 + n % 5000
                payment, _ = create_payment(
                    db, shopper_id=shopper.id, venue_id=venue.id, amount=amount,
                    subject="Bench lunch", purpose="order", idempotency_key=f"bench-key-{n:06d}",
                    app_id=APP_ID, seller_id=SELLER, at=time.time(),
                )  # fmt: skip
                made.append((payment.id, amount))
        signed = [notify_for(pid, amount, wallet_key) for pid, amount in made]
        warm, timed = signed[:WARM], signed[WARM:]
        forged = [{**n, "total_amount": "0.01"} for n in timed[: max(1, payments // 10)]]
        with cloud_server(url, Path(tmp) / "instance", env) as base:
            deliver(base, warm, clients, 200, errors)
            first = deliver(base, timed, clients, 200, errors)
            again = deliver(base, timed, clients, 200, errors)
            bad = deliver(base, forged, clients, 403, errors)
        with cloud_db.session(app) as db:
            paid = db.scalar(select(func.count()).where(Payment.state == SUCCESS)) or 0
            postings = db.scalar(select(func.count()).select_from(ledger.LedgerPosting)) or 0
            balanced = ledger.check_balanced(db)
        cloud_db.engine(app).dispose()
    total = payments + WARM
    if paid != total or postings != total:
        errors.append(f"{paid} paid and {postings} postings, expected {total} and {total}")
    if not balanced:
        errors.append("the ledger does not balance")
    result.errors.extend(errors[:10])
    figures = {
        "payments": payments,
        "clients": clients,
        "notifies_per_s": round(payments / first),
        "duplicate_notifies_per_s": round(payments / again),
        "forged_notifies_per_s": round(len(forged) / bad),
        "postings": postings,
        "balanced": balanced,
    }
    result.figures = figures
    log(f"\n{payments} payments, {clients} clients, signed notifies over HTTP (PostgreSQL)\n")
    log(f"{'first notifies/s':<34}{figures['notifies_per_s']:>10,}")
    log(f"{'duplicate notifies/s (no-ops)':<34}{figures['duplicate_notifies_per_s']:>10,}")
    log(f"{'forged notifies/s (refused)':<34}{figures['forged_notifies_per_s']:>10,}")
    log(f"{'ledger postings / balanced':<34}{postings:>10,} / {balanced}")
    result.checks = [
        Check("notifies/s (PostgreSQL)", figures["notifies_per_s"], "/s", higher_is_better=True),
        Check("postings booked twice", postings - total, "", 0),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=2000, help="notifies to deliver")
    parser.add_argument("--clients", type=int, default=8, help="notifies in flight at once")
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.payments, args.clients)))
