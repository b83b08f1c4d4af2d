"""Cards, their QR, top-ups and balances; the feed in force; reader claim codes.

A card is a token bound to the rider's account (the shopper, cloud/o2o/shoppers.py): it
holds no value. Its balance is the ledger account `transit-card:<card>` (credits are what
the agency owes the rider), so a top-up and a fare are postings, each under a key naming
its event, and nothing can be counted twice.

The QR a reader scans is signed by the cloud's key (Ed25519, the key routers and readers
already trust from enrolment) and carries an expiry: a reader checks it offline, with no
secret of its own, and a screenshot stops working after QR_SECONDS. Not a static number
(copied once, ridden on forever) nor a per-minute rotating code (the page has no script to
rotate it, and a phone without signal on the bus must still show a valid one).

Negative balance policy: a reader lets a card on unless it is on the deny-list, which holds
the lost cards and those below zero. A fare is always charged in full (the ride happened),
so one trip may take a card below zero, by at most that fare (the floor is the feed's
dearest product); after that the card is refused until it is topped up.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.enrol import create_claim
from cloud.models import ClaimCode, Device, Venue
from cloud.o2o import ledger
from cloud.o2o.payments import Payment
from cloud.transit.fares import FareEngine
from cloud.transit.feed import parse_feed, read_files
from cloud.transit.models import ACTIVE, LOST, TransitCard, TransitFeed, TransitReader, TransitTopUp
from cloud.transit.names import parse_names

QR_PREFIX = "PT1"
QR_SECONDS = 6 * 3600
TOPUP_MIN, TOPUP_MAX = 100, 100_000  # 1 to 1,000 yuan
_ENGINES: dict[str, FareEngine] = {}  # by the feed's digest (its files), not its row id


class TransitError(ValueError):
    """A transit action refused; `code` is a short word (a page's message key)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def card_account(card_id: str) -> str:
    return f"transit-card:{card_id}"


# -- the feed in force ----------------------------------------------------------------------


def store_feed(db: Session, venue_id: str, directory: str | Path, at: float) -> TransitFeed:
    """Check a feed and keep it as the one that prices taps from now on."""
    if db.get(Venue, venue_id) is None:
        raise TransitError("no_venue", f"no venue {venue_id}")
    files = read_files(directory)
    summary = parse_feed(files).summary()
    parse_names(files)  # a translation of a route or stop the feed lacks: refused now
    digest = hashlib.sha256(
        b"".join(name.encode() + b"\0" + text.encode() for name, text in sorted(files.items()))
    ).hexdigest()
    feed = TransitFeed(venue_id=venue_id, digest=digest, files=files, summary=summary, loaded_at=at)
    db.add(feed)
    db.flush()
    return feed


def current_feed(db: Session) -> TransitFeed | None:
    return db.scalars(select(TransitFeed).order_by(TransitFeed.id.desc()).limit(1)).first()


def engine_for(feed: TransitFeed) -> FareEngine:
    """The engine of a stored feed, built once per process for each feed content: keyed by
    the digest of its files, since one process may open several databases whose feed rows
    share an id (tests, tools), and a feed row never changes."""
    found = _ENGINES.get(feed.digest)
    if found is None:
        found = _ENGINES[feed.digest] = FareEngine(parse_feed(feed.files))
    return found


# -- readers --------------------------------------------------------------------------------


def reader_claim(db: Session, venue_id: str, route_id: str, label: str, at: float) -> str:
    """A claim code that enrols a bus reader (the routers' enrolment, another device kind)."""
    feed = current_feed(db)
    if feed is not None and route_id not in engine_for(feed).feed.route_network:
        raise TransitError("no_route", f"the feed in force has no route {route_id!r}")
    code = create_claim(db, venue_id, at)
    claim = db.scalars(select(ClaimCode).order_by(ClaimCode.id.desc()).limit(1)).one()
    db.add(TransitReader(claim_id=claim.id, route_id=route_id, label=label[:64], created_at=at))
    db.flush()
    return code


def reader_of(db: Session, device: Device) -> TransitReader | None:
    """The reader this device is, or None for a router."""
    return db.scalars(
        select(TransitReader)
        .join(ClaimCode, ClaimCode.id == TransitReader.claim_id)
        .where(ClaimCode.device_id == device.id)
    ).first()


# -- cards ----------------------------------------------------------------------------------


def card_of(db: Session, shopper_id: str) -> TransitCard | None:
    return db.scalars(
        select(TransitCard).where(TransitCard.shopper_id == shopper_id, TransitCard.state == ACTIVE)
    ).first()


def open_card(db: Session, shopper_id: str, at: float) -> TransitCard:
    """The rider's active card, made if they have none (a lost card is replaced)."""
    card = card_of(db, shopper_id)
    if card is None:
        card = TransitCard(shopper_id=shopper_id, state=ACTIVE, created_at=at)
        db.add(card)
        db.flush()
    return card


def report_lost(db: Session, card: TransitCard, at: float) -> None:
    """On the deny-list from the readers' next pull; the balance moves to a new card."""
    if card.state == LOST:
        return
    card.state, card.lost_at = LOST, at
    db.flush()
    left = balance(db, card.id)
    replacement = open_card(db, card.shopper_id, at)
    if left:
        ledger.post(
            db,
            f"transit-card:{card.id}:replaced",
            "transit-move",
            [(card_account(card.id), left), (card_account(replacement.id), -left)],
            at,
            memo="balance moved to the replacement card",
        )


def balance(db: Session, card_id: str) -> int:
    """Fen the rider has on the card (negative: owed)."""
    return -ledger.balance(db, card_account(card_id))


def deny_list(db: Session) -> list[str]:
    """Cards readers must refuse: reported lost, or below zero."""
    lost = db.scalars(select(TransitCard.id).where(TransitCard.state == LOST)).all()
    owing = db.scalars(
        select(ledger.LedgerEntry.account)
        .where(ledger.LedgerEntry.account.startswith("transit-card:"))
        .group_by(ledger.LedgerEntry.account)
        .having(func.sum(ledger.LedgerEntry.amount) > 0)
    ).all()
    return sorted({*lost, *(account.split(":", 1)[1] for account in owing)})


# -- the QR ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def qr_text(key: Ed25519PrivateKey, card_id: str, at: float) -> str:
    """`PT1.<card>.<expiry>.<signature>`: what the card's QR holds."""
    body = f"{QR_PREFIX}.{card_id}.{int(at) + QR_SECONDS}"
    return f"{body}.{_b64(key.sign(body.encode()))}"


def check_qr(public: Ed25519PublicKey, text: str, at: float | None = None) -> str:
    """The card id in a QR, as a reader checks it offline; TransitError if forged or old."""
    parts = text.split(".")
    if len(parts) != 4 or parts[0] != QR_PREFIX or not parts[2].isdigit():
        raise TransitError("bad_qr", "not a transit card code")
    try:
        public.verify(base64.urlsafe_b64decode(parts[3] + "=="), ".".join(parts[:3]).encode())
    except (InvalidSignature, ValueError):
        raise TransitError("bad_qr", "the card code's signature does not verify") from None
    if int(parts[2]) < (time.time() if at is None else at):
        raise TransitError("expired_qr", "the card code has expired: refresh the card page")
    return parts[1]


# -- top-ups --------------------------------------------------------------------------------


def credit_topup(db: Session, payment: Payment, at: float) -> bool:
    """Credit a confirmed top-up to its card, once (the posting's key is the payment's).
    True if it was credited now. The caller commits."""
    topup = db.get(TransitTopUp, payment.id, with_for_update=True)
    if topup is None or payment.paid_at is None:
        return False
    if topup.credited_at is not None:
        return False
    merchant = db.get(Venue, payment.venue_id)
    assert merchant is not None
    _, made = ledger.post(
        db,
        f"transit-topup:{payment.id}",
        "transit-topup",
        [
            (ledger.merchant_receivable(merchant.merchant_id), payment.amount),
            (card_account(topup.card_id), -payment.amount),
        ],
        at,
        memo="transit card top-up",
    )
    topup.credited_at = at
    return made


def credit_paid_topups(db: Session, card_id: str, at: float) -> int:
    """Credit every confirmed top-up of a card not yet credited (a notify that reached the
    shop's notify URL, or a query, confirmed the payment). Committed."""
    pending = db.scalars(
        select(Payment)
        .join(TransitTopUp, TransitTopUp.payment_id == Payment.id)
        .where(TransitTopUp.card_id == card_id, TransitTopUp.credited_at.is_(None))
        .where(Payment.paid_at.is_not(None))
    ).all()
    done = sum(credit_topup(db, payment, at) for payment in pending)
    db.commit()
    return done
