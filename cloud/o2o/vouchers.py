"""Vouchers: templates and their states, claims that never over-issue, redemption, reversal.

A template is DRAFT (editable, not claimable) -> ACTIVATED (claimable) <-> PAUSED (no new
claims) -> CLOSED (final). Every change writes a `voucher_audit` row in its own transaction.
Vouchers already claimed stay good until they expire whatever the template's state: pausing
or closing an offer stops new claims, it does not take back what shoppers hold.

Why a conditional UPDATE for the budget (docs/decisions.md, "vouchers"): `UPDATE
voucher_templates SET issued = issued + 1 WHERE id = :id AND state = 'ACTIVATED' AND issued <
budget RETURNING issued` is one statement that checks and counts. On PostgreSQL it takes the
template's row lock only from that statement to the commit (it is the claim's last write), so
claims queue for microseconds; `SELECT ... FOR UPDATE` holds the same lock across the whole
claim (limit checks, the insert) and measured slower (bench/voucher_claims.py --for-update).
On SQLite the database's single writer serializes claims anyway.

Every function here takes the session and commits (or rolls back) itself: a claim's retry
after a lost race needs a fresh transaction, so the transaction cannot be the caller's.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.models import Venue, new_id
from cloud.o2o import payments, voucher_claim_pg
from cloud.o2o.voucher_models import (
    KINDS,
    Voucher,
    VoucherAudit,
    VoucherRedemption,
    VoucherTemplate,
)

DAY = 86400.0
TRANSITIONS = {
    "activate": ({"DRAFT", "PAUSED"}, "ACTIVATED"),
    "pause": ({"ACTIVATED"}, "PAUSED"),
    "close": ({"DRAFT", "ACTIVATED", "PAUSED"}, "CLOSED"),
}
CLAIM_ATTEMPTS = 4  # a claim that lost a race on a unique row re-reads and tries again
SHORT_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud, typed
MAX_BUDGET = 10_000_000
MAX_AMOUNT = 100_000_000  # minor units: a million in the major unit
TEMPLATE_COLUMNS = ("venue_id", "state", "issued", "budget", "per_user_limit", "per_day_limit",
                    "valid_from", "valid_until", "valid_days")  # fmt: skip


class VoucherError(Exception):
    """Any refusal in the voucher domain. `code` is stable for programs (and tests); the
    message is what a shopper, a merchant or the staff is shown."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TemplateSpec:
    """What a merchant fills in; `check()` refuses nonsense before anything is stored."""

    title: str
    kind: str
    amount_off: int = 0
    percent_off: int = 0
    min_spend: int = 0
    budget: int = 100
    per_user_limit: int = 1
    per_day_limit: int | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    valid_days: int | None = None

    def check(self) -> None:
        def bad(message: str) -> VoucherError:
            return VoucherError("invalid_template", message)

        if not self.title.strip() or len(self.title) > 80:
            raise bad("the title must be 1 to 80 characters")
        if self.kind not in KINDS:
            raise bad("the kind must be an amount or a percentage")
        if self.kind == "amount" and not 0 < self.amount_off <= MAX_AMOUNT:
            raise bad("the amount off must be more than 0")
        if self.kind == "percent" and not 0 < self.percent_off < 100:
            raise bad("the percentage must be between 1 and 99")
        if not 0 <= self.min_spend <= MAX_AMOUNT:
            raise bad("the minimum spend cannot be negative")
        if not 0 < self.budget <= MAX_BUDGET:
            raise bad(f"the budget must be between 1 and {MAX_BUDGET}")
        if not 0 < self.per_user_limit <= self.budget:
            raise bad("the per-shopper limit must be between 1 and the budget")
        if self.per_day_limit is not None and not 0 < self.per_day_limit <= self.per_user_limit:
            raise bad("the per-day limit must be between 1 and the per-shopper limit")
        if self.valid_days is None and self.valid_until is None:
            raise bad("give an end date or a number of days a voucher stays valid")
        if self.valid_days is not None and not 0 < self.valid_days <= 3660:
            raise bad("a voucher stays valid between 1 and 3660 days")
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise bad("the end date must be after the start date")

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _audit(
    db: Session,
    template_id: str,
    actor: str,
    action: str,
    now: float,
    before: str | None,
    after: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    db.add(
        VoucherAudit(
            template_id=template_id,
            at=now,
            actor=actor,
            action=action,
            from_state=before,
            to_state=after,
            detail=detail,
        )
    )


def create_template(
    db: Session, venue: Venue, spec: TemplateSpec, actor: str, now: float
) -> VoucherTemplate:
    """A DRAFT template for `venue` (the caller has checked the venue is the actor's)."""
    spec.check()
    template = VoucherTemplate(
        venue_id=venue.id, issued=0, state="DRAFT", created_at=now, updated_at=now, **spec.columns()
    )
    db.add(template)
    db.flush()
    _audit(db, template.id, actor, "create", now, None, "DRAFT", spec.columns())
    db.commit()
    return template


def edit_template(
    db: Session, template: VoucherTemplate, spec: TemplateSpec, actor: str, now: float
) -> VoucherTemplate:
    """Change a DRAFT's terms; an offer shoppers can already see is never edited under them."""
    spec.check()
    values = spec.columns()
    done = db.execute(
        update(VoucherTemplate)
        .where(VoucherTemplate.id == template.id, VoucherTemplate.state == "DRAFT")
        .values(updated_at=now, **values)
    )
    if done.rowcount != 1:
        db.rollback()
        raise VoucherError("not_draft", "only a draft can be edited: pause or close this one")
    _audit(db, template.id, actor, "edit", now, "DRAFT", "DRAFT", values)
    db.commit()
    db.refresh(template)
    return template


def change_state(
    db: Session, template: VoucherTemplate, action: str, actor: str, now: float
) -> VoucherTemplate:
    """activate / pause / close, by a conditional UPDATE from each allowed state, so two
    merchants clicking at once cannot, say, re-activate a template the other just closed."""
    if action not in TRANSITIONS:
        raise VoucherError("bad_action", f"unknown action: {action}")
    sources, target = TRANSITIONS[action]
    db.refresh(template)
    before = template.state
    done = db.execute(
        update(VoucherTemplate)
        .where(VoucherTemplate.id == template.id, VoucherTemplate.state == before)
        .where(VoucherTemplate.state.in_(sources))
        .values(state=target, updated_at=now)
    )
    if done.rowcount != 1:
        db.rollback()
        raise VoucherError("bad_transition", f"a {before.lower()} offer cannot {action}")
    _audit(db, template.id, actor, action, now, before, target)
    db.commit()
    db.refresh(template)
    return template


def utc_day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def new_short_code() -> str:
    """10 characters from a 32-letter alphabet: 50 random bits, typed in under ten seconds."""
    return "".join(secrets.choice(SHORT_CODE_ALPHABET) for _ in range(10))


def _window(template: Any, now: float) -> tuple[float, float]:
    start = template.valid_from if template.valid_from is not None else now
    if template.valid_days is not None:
        start = max(start, now)
        end = start + template.valid_days * DAY
        if template.valid_until is not None:
            end = min(end, template.valid_until)
        return start, end
    assert template.valid_until is not None  # TemplateSpec.check
    return start, template.valid_until


def claim(
    db: Session, template_id: str, shopper: str, now: float, idempotency_key: str | None = None
) -> Voucher:
    """The shopper's voucher from the template, or VoucherError saying why not.

    With an idempotency key, a retried request gets the voucher its first attempt made
    (even if the offer has since run out). Without one, each call is a new claim, up to the
    per-shopper limit. The budget holds under any concurrency: see the module docstring."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 64:
        raise VoucherError("bad_idempotency_key", "the idempotency key must be 1-64 characters")
    for _attempt in range(CLAIM_ATTEMPTS):
        try:
            return _claim_once(db, template_id, shopper, now, idempotency_key)
        except IntegrityError:
            db.rollback()  # a racing claim took our seq or our key: read again
    raise VoucherError("busy", "too many claims at once: please try again")


def _claim_once(
    db: Session, template_id: str, shopper: str, now: float, key: str | None
) -> Voucher:
    if key is not None:
        existing = db.scalar(
            select(Voucher).where(
                Voucher.template_id == template_id,
                Voucher.shopper == shopper,
                Voucher.idempotency_key == key,
            )
        )
        if existing is not None:
            db.commit()  # ends the read; unlike a rollback, keeps `existing` loaded
            return existing
    day = utc_day(now)
    templates, issued = VoucherTemplate.__table__, Voucher.__table__
    mine = (
        select(func.count())
        .select_from(issued)
        .where(issued.c.template_id == template_id, issued.c.shopper == shopper)
    )
    # One round trip for the template and both of the shopper's counts (Core, not the ORM:
    # the claim is the hot path, bench/voucher_claims.py).
    template = db.execute(
        select(
            *(templates.c[name] for name in TEMPLATE_COLUMNS),
            mine.scalar_subquery().label("held"),
            mine.where(issued.c.day == day).scalar_subquery().label("today"),
        ).where(templates.c.id == template_id)
    ).first()
    if template is None:
        db.rollback()
        raise VoucherError("not_found", "no such offer")
    if template.state != "ACTIVATED" or (
        template.valid_until is not None and now >= template.valid_until
    ):
        db.rollback()
        raise VoucherError("not_open", "this offer is not open for claims")
    if template.issued >= template.budget:
        db.rollback()
        raise VoucherError("exhausted", "this offer has run out: every voucher was claimed")
    held, today = template.held, template.today
    if held >= template.per_user_limit:
        db.rollback()
        raise VoucherError(
            "limit",
            f"you already have {held} of this voucher "
            f"(at most {template.per_user_limit} per shopper)",
        )
    if template.per_day_limit is not None and today >= template.per_day_limit:
        db.rollback()
        raise VoucherError(
            "day_limit",
            f"you claimed {today} of this voucher today "
            f"(at most {template.per_day_limit} a day): come back tomorrow",
        )
    start, end = _window(template, now)
    values = {
        "id": new_id("vch"),
        "template_id": template_id,
        "venue_id": template.venue_id,
        "shopper": shopper,
        "seq": held + 1,
        "day": day,
        "day_seq": today + 1,
        "idempotency_key": key,
        "short_code": new_short_code(),
        "state": "ISSUED",
        "code_gen": 1,
        "claimed_at": now,
        "valid_from": start,
        "expires_at": end,
        "redeemed_at": None,
    }
    if db.get_bind().dialect.name == "postgresql":  # one round trip: voucher_claim_pg.py
        if not voucher_claim_pg.count_and_insert(db, template_id, values):
            raise VoucherError("exhausted", "this offer has run out: every voucher was claimed")
        return Voucher(**values)
    # The unique rows first: a lost race fails here, before the template's row lock.
    db.execute(insert(issued).values(values))
    counted = db.execute(
        update(VoucherTemplate)
        .where(
            VoucherTemplate.id == template_id,
            VoucherTemplate.state == "ACTIVATED",
            VoucherTemplate.issued < VoucherTemplate.budget,
        )
        .values(issued=VoucherTemplate.issued + 1)
        .returning(VoucherTemplate.issued)
    ).first()
    if counted is None:
        db.rollback()
        raise VoucherError("exhausted", "this offer has run out: every voucher was claimed")
    db.commit()
    return Voucher(**values)


def discount_for(template: VoucherTemplate, order_amount: int) -> int:
    """What the voucher takes off an order of `order_amount` (minor units): never more than
    the order, a percentage rounded down to the minor unit."""
    if order_amount < template.min_spend:
        raise VoucherError(
            "min_spend", f"this voucher needs a spend of at least {template.min_spend / 100:.2f}"
        )
    if template.kind == "amount":
        return min(template.amount_off, order_amount)
    return order_amount * template.percent_off // 100


def redeem(
    db: Session,
    voucher_id: str,
    venue_id: str,
    code_gen: int,
    staff: str,
    now: float,
    order_amount: int | None = None,
    payment_ref: str | None = None,
) -> VoucherRedemption:
    """Use the voucher once at `venue_id`'s counter. The signature (or the short code's lookup)
    was checked by the caller; this is the online confirmation that makes it single-use."""
    voucher = db.get(Voucher, voucher_id, populate_existing=True)
    if voucher is None or voucher.venue_id != venue_id:
        db.rollback()
        raise VoucherError("other_venue", "this voucher is not for this venue")
    template = db.get(VoucherTemplate, voucher.template_id)
    assert template is not None
    if voucher.state == "REDEEMED" or code_gen != voucher.code_gen:
        db.rollback()
        raise VoucherError("used", "this voucher was already used")
    if now >= voucher.expires_at:
        db.rollback()
        raise VoucherError("expired", "this voucher has expired")
    if now < voucher.valid_from:
        db.rollback()
        raise VoucherError("not_yet", "this voucher is not valid yet")
    discount = None if order_amount is None else discount_for(template, order_amount)
    done = db.execute(
        update(Voucher)
        .where(Voucher.id == voucher_id, Voucher.state == "ISSUED", Voucher.code_gen == code_gen)
        .values(state="REDEEMED", redeemed_at=now)
    )
    if done.rowcount != 1:  # the same code scanned at two tills at once: one wins
        db.rollback()
        raise VoucherError("used", "this voucher was already used")
    redemption = VoucherRedemption(
        voucher_id=voucher_id,
        venue_id=venue_id,
        at=now,
        staff=staff,
        code_gen=code_gen,
        order_amount=order_amount,
        discount=discount,
        payment_ref=payment_ref,
    )
    db.add(redemption)
    db.commit()
    return redemption


def reverse_redemption(
    db: Session,
    now: float,
    *,
    redemption_id: str | None = None,
    payment_ref: str | None = None,
    reason: str = "refund",
) -> bool:
    """Give the voucher back after the payment it discounted was refunded. Name the redemption
    by its id or by the `payment_ref` given to `redeem`. True if this call reversed it; False
    if it was reversed before (a refund notify delivered twice changes nothing twice).
    The voucher becomes ISSUED with a new code generation: the scanned code stays spent."""
    if (redemption_id is None) == (payment_ref is None):
        raise VoucherError("bad_reverse", "name the redemption by its id or its payment")
    query = select(VoucherRedemption.id)
    if redemption_id is not None:
        query = query.where(VoucherRedemption.id == redemption_id)
    else:
        query = query.where(VoucherRedemption.payment_ref == payment_ref)
    rid = db.scalar(query.order_by(VoucherRedemption.at.desc()).limit(1))
    if rid is None:
        db.rollback()
        raise VoucherError("not_found", "no such redemption")
    done = _reverse(db, rid, now, reason)
    (db.commit if done else db.rollback)()
    return done


def _reverse(db: Session, redemption_id: str, now: float, reason: str) -> bool:
    """The reversal's writes in the caller's transaction (no commit)."""
    row = db.execute(
        update(VoucherRedemption)
        .where(VoucherRedemption.id == redemption_id, VoucherRedemption.reversed_at.is_(None))
        .values(reversed_at=now, reverse_reason=reason[:200])
        .returning(VoucherRedemption.voucher_id, VoucherRedemption.code_gen)
    ).first()
    if row is None:
        return False
    db.execute(
        update(Voucher)
        .where(
            Voucher.id == row.voucher_id,
            Voucher.state == "REDEEMED",
            Voucher.code_gen == row.code_gen,
        )
        .values(state="ISSUED", redeemed_at=None, code_gen=Voucher.code_gen + 1)
    )
    return True


def on_refund(db: Session, payment: Any, refund: Any, at: float) -> None:
    """payments.REFUND_HOOKS: once a payment is refunded in full, the vouchers redeemed on it
    (`redeem(..., payment_ref=payment.id)`) go back, in the refund's own transaction (the hook
    must not commit). A partial refund leaves the voucher used: it discounted the order."""
    if payment.refunded < payment.amount:
        return
    query = select(VoucherRedemption.id).where(
        VoucherRedemption.payment_ref == payment.id, VoucherRedemption.reversed_at.is_(None)
    )
    for rid in list(db.scalars(query)):
        _reverse(db, rid, at, f"refund {refund.id}")


if on_refund not in payments.REFUND_HOOKS:
    payments.REFUND_HOOKS.append(on_refund)


def find_by_short_code(db: Session, short_code: str) -> Voucher | None:
    code = "".join(short_code.split()).upper().replace("-", "")
    if not 0 < len(code) <= 16:
        return None
    return db.scalar(select(Voucher).where(Voucher.short_code == code))
