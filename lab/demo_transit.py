"""The demo's transit chapter: a rider tops up the wallet's transit card and rides two buses.

In Chromium on the lab phone (lab/browser.py's phone_browser: the phone's namespace, the lab
CA trusted) the rider signs in to the cloud's shop with the wallet, opens a transit card and
tops it up at the wallet's cashier (pending until the wallet confirms), and shows the card's
QR. The lab's two bus readers (lab/transit_reader.py, enrolled with reader claim codes, on the
fake internet as a bus's LTE) read the QR's payload from the page as a camera would (its
text alternative, the same string the QR encodes), check it offline, and upload their taps:
bus 1, then bus 2 within the feed's 60-minute transfer window (each tap carries its own time,
a realistic 18 minutes apart, so the demo need not wait). The cloud charges ¥2.00 for the
first boarding and the ¥0.50 transfer product for the second (lab/transit_feed/); the rider's
page shows both trips and ¥17.50 of ¥20.00 left; a replayed batch adds nothing; the ledger
balances. The browser steps are functions the Chromium test (tests/browser/
test_transit_rider.py) walks too, on loopback.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from lab import cloud as labcloud
from lab.browser import shop_sign_in, wallet_approve
from lab.shopper import ShopperError, check
from lab.transit_reader import TIMEZONE, ReaderError, boarding_times, run_in

Say = Callable[[str, str], None]
CARD = "/plaza/transit/"
TOPUP = 2000  # fen: the ¥20 button
RIDE, TRANSFER = 200, 50  # fen: the lab feed's bus_ride and bus_transfer products
SHOTS = Path("/var/tmp/plaza-demo/transit")  # the chapter's screenshots, kept after down
BUSES = (("b1", "bus 1", "s_plaza"), ("b2", "bus 2", "s_station"))  # route, label, stop
# What the rider's page calls them (lab/transit_feed/: route_short_name, stop_name).
NAMES = {"b1": "1", "b2": "2", "s_plaza": "Plaza", "s_station": "Station"}


@dataclass(frozen=True)
class CardView:
    """What the rider's card page shows: balance (fen), the QR's payload, the trips (route
    and stop as the feed names them, time of day, fare text, state) newest first."""

    balance: int
    qr: str
    trips: list[tuple[str, str, str, str, str]]


def open_card(page: Any) -> None:
    page.click("form[action$='/transit/open'] button")
    page.wait_for_selector("#qr-text")


def to_cashier(page: Any, base: str, amount: int = TOPUP) -> str:
    """Choose the amount and go to the wallet's cashier; the cashier page's text."""
    page.check(f"input[name=amount][value='{amount}']")
    page.click("form[action$='/transit/topup'] button")
    page.wait_for_selector("button[name=decision][value=approve]")
    check(not page.url.startswith(base), f"the top-up did not reach the wallet: {page.url}")
    return str(page.inner_text("body"))


def pay(page: Any, base: str, user: str = "alice", pin: str = "1234") -> None:
    wallet_approve(page, user, pin)
    page.wait_for_url(re.compile(re.escape(base + CARD) + r".*"))


def card(page: Any) -> CardView:
    balance = page.get_attribute("[data-balance]", "data-balance")
    trips = []
    for item in page.locator("li[data-seq]").all():
        parts = ("route", "stop", "when", "amount", "state")
        route, stop, when, fare, state = (item.locator(f".{p}").inner_text().strip() for p in parts)
        trips.append((route, stop, when, fare, state))
    qr = (page.text_content("#qr-text") or "").strip()
    check(page.locator(".qr svg").count() == 1, "the card page shows no QR")
    return CardView(int(balance or 0), qr, trips)


def yuan(fen: int) -> str:
    return f"¥{fen / 100:.2f}"


# -- the lab chapter ----------------------------------------------------------------------


def _cloud_db(lab: Any) -> Any:
    from sqlalchemy.orm import Session

    from cloud.db import make_engine

    engine = make_engine(f"sqlite:///{labcloud.instance_dir(lab.run_dir) / 'cloud.db'}")
    return engine, Session(engine)


def _topup_state(lab: Any) -> tuple[str, str, int]:
    """The newest top-up: its payment's state, the card, the card's balance (fen)."""
    from sqlalchemy import select

    from cloud.o2o.payments import Payment
    from cloud.transit import cards
    from cloud.transit.models import TransitTopUp

    engine, db = _cloud_db(lab)
    try:
        topup = db.scalars(select(TransitTopUp).order_by(TransitTopUp.payment_id.desc())).first()
        check(topup is not None, "no top-up was made")
        assert topup is not None
        payment = db.get(Payment, topup.payment_id)
        assert payment is not None
        return payment.state, topup.card_id, cards.balance(db, topup.card_id)
    finally:
        db.close()
        engine.dispose()


def _books(lab: Any) -> tuple[bool, int]:
    """Whether the ledger balances, and how many top-up postings the card got."""
    from sqlalchemy import func, select

    from cloud.o2o import ledger

    engine, db = _cloud_db(lab)
    try:
        postings = db.scalar(
            select(func.count()).select_from(ledger.LedgerEntry)
            .where(ledger.LedgerEntry.account.startswith("transit-card:"))
            .where(ledger.LedgerEntry.amount < 0)
        )  # fmt: skip
        return ledger.check_balanced(db), int(postings or 0)
    finally:
        db.close()
        engine.dispose()


def _enrol_readers(lab: Any, venue_id: str) -> dict[str, Path]:
    """Bus 1 and bus 2's readers: a claim code each, enrolled from the fake internet."""
    ca = str(lab.ca.cert_path)
    readers = {}
    for route, label, _ in BUSES:
        code = labcloud.cli(lab.run_dir, "transit", "reader-claim", venue_id, "--route", route,
                            "--label", label)  # fmt: skip
        state = lab.run_dir / "transit" / route
        state.mkdir(parents=True, exist_ok=True)
        host = f"reader-{label.replace(' ', '')}"
        run_in(lab.state.internet, state, ca, "enrol", "--hostname", host, stdin=code + "\n")
        run_in(lab.state.internet, state, ca, "denylist")
        readers[route] = state
    return readers


def run(lab: Any, netns: str, venue_id: str, say: Say, shots: Path = SHOTS) -> None:
    """The chapter; the phone in `netns` is online. Screenshots to `shots`."""
    from playwright.sync_api import Error as PlaywrightError

    from lab.browser import phone_browser

    base = labcloud.CLOUD_URL
    try:
        readers = _enrol_readers(lab, venue_id)
        with phone_browser(netns, lab.ca.cert_path, shots) as phone:
            _ride(lab, phone, base, readers, say)
    except ReaderError as exc:
        raise ShopperError(f"bus reader: {exc}") from None
    except PlaywrightError as exc:
        raise ShopperError(f"the phone's browser: {str(exc).splitlines()[0]}") from None


def _ride(lab: Any, phone: Any, base: str, readers: dict[str, Path], say: Say) -> None:
    page, ca = phone.page, str(lab.ca.cert_path)
    shop_sign_in(page, base, CARD)
    open_card(page)
    opened = card(page)
    check(opened.balance == 0 and opened.trips == [], f"a new card shows {opened}")
    say(
        "Transit: the rider opens a card in her wallet account",
        f"Chromium on the phone: {base}{CARD}, signed in with the wallet, 'Get a transit card'"
        f" -> balance ¥0.00, a QR; matched ({phone.snap('transit-01-card')})",
    )

    cashier = to_cashier(page, base)
    state, card_id, before = _topup_state(lab)
    check("20.00" in cashier, "the cashier does not ask for ¥20.00")
    check(state == "WAIT_BUYER_PAY" and before == 0, f"top-up before paying: {state}, {before}")
    shot = phone.snap("transit-02-cashier")
    pay(page, base)
    paid = card(page)
    state, _, after = _topup_state(lab)
    check(paid.balance == TOPUP == after, f"after paying the card shows {yuan(paid.balance)}")
    check(state == "TRADE_SUCCESS", f"the top-up's payment is {state}")
    say(
        "She tops it up with ¥20 at the wallet's cashier",
        f"pending (payment WAIT_BUYER_PAY, card {card_id} at ¥0.00; {shot}) -> she approves "
        f"with her PIN -> confirmed (TRADE_SUCCESS, by the wallet's notify or the page's query "
        f"to the wallet, whichever came first): balance {yuan(paid.balance)}; matched "
        f"({phone.snap('transit-03-topped-up')})",
    )

    first, second = boarding_times(time.time())
    answers = []
    for (route, label, stop), at in zip(BUSES, (first, second), strict=True):
        tap = run_in(lab.state.internet, readers[route], ca, "tap", paid.qr, "--stop", stop,
                     "--at", str(at))  # fmt: skip
        check(tap["card"] == card_id, f"{label}'s reader read {tap['card']}, not {card_id}")
        answers.append(run_in(lab.state.internet, readers[route], ca, "upload"))
    stored = [a["stored"] for a in answers]
    check(stored == [1, 1], f"the readers' batches stored {stored}")
    charged = labcloud.cli(lab.run_dir, "transit", "charge")  # anything the upload left
    say(
        "Two buses 18 minutes apart: each reader reads the QR and uploads a signed batch",
        f"the page's QR payload ({paid.qr[:16]}..., checked offline with the cloud's key and "
        f"the deny-list) -> bus 1 at {clock(first)} at Plaza, bus 2 at {clock(second)} at "
        f"Station (tap times are the taps' own); uploads stored {stored}, charged on upload "
        f"{[a.get('fen') for a in answers]} fen; the charge pass after: {charged}; matched",
    )

    replay = run_in(lab.state.internet, readers["b2"], ca, "resend")
    check((replay["stored"], replay["duplicates"]) == (0, 1), f"a replayed batch: {replay}")
    page.reload()
    rode = card(page)
    want = [(NAMES["b2"], NAMES["s_station"], clock(second), yuan(TRANSFER), "Charged"),
            (NAMES["b1"], NAMES["s_plaza"], clock(first), yuan(RIDE), "Charged")]  # fmt: skip
    check(rode.trips == want, f"the trips read {rode.trips}, expected {want}")
    left = TOPUP - RIDE - TRANSFER
    check(rode.balance == left, f"the balance reads {yuan(rode.balance)}, expected {yuan(left)}")
    balanced, topups = _books(lab)
    check(balanced and topups == 1, f"ledger balanced: {balanced}, top-up postings: {topups}")
    say(
        "Her card shows two trips, one fare plus the transfer rule",
        f"named as the feed names them: {rode.trips[1][0]} · {rode.trips[1][1]} {yuan(RIDE)} "
        f"(a boarding), {rode.trips[0][0]} · {rode.trips[0][1]} {yuan(TRANSFER)} (the transfer "
        f"product, within 60 minutes), balance {yuan(left)}; bus 2's batch sent again stored 0 "
        f"(1 duplicate); the ledger balances with one top-up posting; matched "
        f"({phone.snap('transit-04-trips')})",
    )


def clock(at: float) -> str:
    """A tap's time of day as the rider's page shows it (the feed's zone)."""
    return dt.datetime.fromtimestamp(at, ZoneInfo(TIMEZONE)).strftime("%H:%M")
