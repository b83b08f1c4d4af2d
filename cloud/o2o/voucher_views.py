"""Voucher pages: the shopper's (claim, list, show the QR, save to a wallet) and the counter
staff's (scan or type a code, check it, confirm it once) under /plaza, in the shop's cookie
and CSP (cloud/o2o/shop.py); the merchant's template pages live in voucher_admin.py.

Staff reach their page by a link the merchant copies from the dashboard:
`/plaza/staff/<venue>/<key>/vouchers`, where the key is an HMAC of the venue id under the
app's secret. No staff accounts: whoever holds the link can redeem at that venue only, the
way a till's PIN works; it never reaches any other venue, template or shopper data beyond
the voucher being checked. The page works without script; a camera scanner is optional
(the QR holds the same text the staff can type, and every voucher has a 10-letter short
code for when a camera is not at hand). `/voucher-key` gives the venue's public key for
checking codes offline (cloud/o2o/voucher_codes.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
from decimal import Decimal, InvalidOperation

import segno
from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import passes, settings, shop, voucher_codes, vouchers
from cloud.o2o.shop_texts import language
from cloud.o2o.shoppers import current_shopper, shopper_required
from cloud.o2o.voucher_models import Voucher, VoucherRedemption, VoucherTemplate
from cloud.o2o.vouchers import VoucherError
from plaza.csrf import require_csrf

bp = Blueprint("vouchers", __name__, url_prefix="/plaza", template_folder="templates")
bp.after_request(shop._headers)
bp.context_processor(shop._globals)

TEXTS = {
    "zh-CN": {"my": "我的券", "offers": "可领取的券", "claim": "领取", "none": "暂无",
              "show": "向店员出示此码", "short": "或告诉店员:", "until": "有效期至",
              "used": "已使用", "expired": "已过期", "apple": "添加到 Apple 钱包",
              "wallet": "保存到钱包", "min": "满 {min} 可用"},
    "en": {"my": "My vouchers", "offers": "Vouchers to claim", "claim": "Claim", "none": "None yet",
           "show": "Show this code at the counter", "short": "or tell the staff:",
           "until": "Valid until", "used": "Used", "expired": "Expired",
           "apple": "Add to Apple Wallet", "wallet": "Save to the wallet", "min": "spend {min}+"},
}  # fmt: skip


def vt(key: str, **values: object) -> str:
    text = TEXTS.get(language(), TEXTS["en"]).get(key) or TEXTS["en"][key]
    return text.format(**values) if values else text


@bp.context_processor
def _texts() -> dict[str, object]:
    return {"vt": vt, "describe": describe, "utc": utc}


def utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe(template: VoucherTemplate) -> str:
    if template.kind == "amount":
        return f"¥{template.amount_off / 100:g} off"
    return f"{template.percent_off} % off"


def cloud_key_for(venue_id: str) -> voucher_codes.Ed25519PrivateKey:
    return voucher_codes.venue_key(current_app.config["CLOUD_KEY"], venue_id)


def staff_key(venue_id: str) -> str:
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, b"voucher-staff:" + venue_id.encode(), hashlib.sha256).hexdigest()[:32]


def code_of(voucher: Voucher) -> str:
    key = cloud_key_for(voucher.venue_id)
    return voucher_codes.issue(key, voucher.id, voucher.venue_id, voucher.code_gen,
                               voucher.expires_at)  # fmt: skip


# -- the shopper ------------------------------------------------------------------------------


@bp.get("/vouchers")
@shopper_required
def mine() -> ResponseReturnValue:
    shopper = current_shopper()
    assert shopper is not None
    rows = (
        get_db()
        .execute(
            select(Voucher, VoucherTemplate)
            .join(VoucherTemplate, VoucherTemplate.id == Voucher.template_id)
            .where(Voucher.shopper == shopper.id)
            .order_by(Voucher.claimed_at.desc())
            .limit(100)
        )
        .all()
    )
    return render_template("vouchers/mine.html", rows=rows, now=now())


def _offers(venue: Venue, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    templates = get_db().scalars(
        select(VoucherTemplate)
        .where(VoucherTemplate.venue_id == venue.id, VoucherTemplate.state == "ACTIVATED")
        .order_by(VoucherTemplate.created_at)
    )
    offers = [(t, secrets.token_urlsafe(16)) for t in templates]  # an idempotency key each
    return render_template("vouchers/offers.html", venue=venue, offers=offers,
                           error=error), status  # fmt: skip


@bp.get("/vouchers/offers/<venue_id>")
@shopper_required
def offers(venue_id: str) -> ResponseReturnValue:
    return _offers(shop._venue(venue_id))


@bp.post("/vouchers/claim/<template_id>")
@shopper_required
def claim(template_id: str) -> ResponseReturnValue:
    require_csrf()
    shopper = current_shopper()
    assert shopper is not None
    db = get_db()
    template = db.get(VoucherTemplate, template_id) if template_id.startswith("vtp_") else None
    if template is None:
        abort(404)
    key = request.form.get("idempotency_key") or None
    try:
        voucher = vouchers.claim(db, template.id, shopper.id, now(), key)
    except VoucherError as exc:
        venue = db.get(Venue, template.venue_id)
        assert venue is not None
        return _offers(venue, str(exc), 409)
    return redirect(f"/plaza/vouchers/{voucher.id}", code=303)


def _own_voucher(voucher_id: str) -> tuple[Voucher, VoucherTemplate, Venue]:
    shopper = current_shopper()
    db = get_db()
    voucher = db.get(Voucher, voucher_id) if voucher_id.startswith("vch_") else None
    if voucher is None or shopper is None or voucher.shopper != shopper.id:
        abort(404)  # another shopper's voucher does not exist for you
    template, venue = db.get(VoucherTemplate, voucher.template_id), db.get(Venue, voucher.venue_id)
    assert template is not None and venue is not None
    return voucher, template, venue


def _pass_of(voucher: Voucher, template: VoucherTemplate, venue: Venue) -> passes.VoucherPass:
    terms = f"Minimum spend ¥{template.min_spend / 100:g}." if template.min_spend else ""
    link = f"{settings.public_url(current_app)}/plaza/vouchers/{voucher.id}"
    return passes.VoucherPass(voucher.id, venue.name, template.title, describe(template), terms,
                              code_of(voucher), voucher.expires_at, link)  # fmt: skip


@bp.get("/vouchers/<voucher_id>")
@shopper_required
def show(voucher_id: str) -> ResponseReturnValue:
    voucher, template, venue = _own_voucher(voucher_id)
    code = code_of(voucher)
    qr = segno.make(code, error="m").svg_inline(scale=4, omitsize=False)
    wallet_link = None
    with contextlib.suppress(settings.NotConfigured):
        wallet_link = passes.sandbox_wallet_link(
            settings.wallet_url(current_app),
            settings.setting(current_app, "WALLET_CLIENT_ID"),
            f"{venue.name}: {template.title}",
            _pass_of(voucher, template, venue).link,
        )
    signer = passes.PassSigner.from_config(current_app.config)
    return render_template("vouchers/show.html", voucher=voucher, template=template, venue=venue,
                           code=code, qr=qr, wallet_link=wallet_link, now=now(),
                           pkpass=signer is not None)  # fmt: skip


@bp.get("/vouchers/<voucher_id>.pkpass")
@shopper_required
def pkpass(voucher_id: str) -> ResponseReturnValue:
    voucher, template, venue = _own_voucher(voucher_id)
    signer = passes.PassSigner.from_config(current_app.config)
    if signer is None:
        abort(404)
    body = passes.build_pkpass(_pass_of(voucher, template, venue), signer)
    return Response(body, mimetype=passes.MIME_TYPE, headers={
        "Content-Disposition": f'attachment; filename="{voucher.id}.pkpass"'})  # fmt: skip


# -- the counter ------------------------------------------------------------------------------


def _staff_venue(venue_id: str, key: str) -> Venue:
    venue = get_db().get(Venue, venue_id) if venue_id.startswith("ven_") else None
    if venue is None or not hmac.compare_digest(key.encode(), staff_key(venue.id).encode()):
        abort(404)
    return venue


@bp.get("/staff/<venue_id>/<key>/voucher-key")
def staff_public_key(venue_id: str, key: str) -> ResponseReturnValue:
    venue = _staff_venue(venue_id, key)
    public = voucher_codes.public_b64(cloud_key_for(venue.id))
    return {"venue_id": venue.id, "alg": "Ed25519", "public_key": public, "format": "PV1"}


def parse_amount(text: str) -> int | None:
    """`12.5` (yuan) as 1250 fen; empty is None; anything else a VoucherError."""
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise VoucherError("bad_amount", "the amount must be a number like 12.50") from None
    if (
        not value.is_finite()
        or not 0 <= value < 1_000_000
        or value != value.quantize(Decimal("0.01"))
    ):
        raise VoucherError("bad_amount", "the amount must be a number like 12.50")
    return int(value * 100)


def _identify(venue: Venue, code: str) -> tuple[Voucher, int]:
    """The voucher a scanned (signed) or typed (short) code names, and its code generation;
    VoucherError when the code is refused."""
    db = get_db()
    if code.strip().startswith(voucher_codes.PREFIX + "."):
        public = cloud_key_for(venue.id).public_key()
        try:
            claims = voucher_codes.verify(code, public, venue.id, now())
        except voucher_codes.CodeError as exc:
            raise VoucherError(exc.reason, str(exc)) from None
        voucher = db.get(Voucher, claims.voucher_id)
        if voucher is None:
            raise VoucherError("forged", "no such voucher")
        return voucher, claims.gen
    voucher = vouchers.find_by_short_code(db, code)
    if voucher is None:
        raise VoucherError("unknown", "no voucher has this code")
    if voucher.venue_id != venue.id:
        raise VoucherError("other_venue", "this voucher is for another venue")
    return voucher, voucher.code_gen


@bp.route("/staff/<venue_id>/<key>/vouchers", methods=["GET", "POST"])
def counter(venue_id: str, key: str) -> ResponseReturnValue:
    venue = _staff_venue(venue_id, key)
    context: dict[str, object] = {"venue": venue, "code": "", "amount": ""}
    status = 200
    if request.method == "POST":
        require_csrf()
        code, action = request.form.get("code", "")[:500], request.form.get("action", "check")
        context.update(code=code, amount=request.form.get("amount", "")[:20])
        db = get_db()
        try:
            voucher, gen = _identify(venue, code)
            template = db.get(VoucherTemplate, voucher.template_id)
            context.update(voucher=voucher, template=template)
            amount = parse_amount(str(context["amount"]))
            if action == "redeem":
                done: VoucherRedemption = vouchers.redeem(db, voucher.id, venue.id, gen,
                                                          "staff-link", now(), amount)  # fmt: skip
                context["redeemed"] = done
            elif voucher.state == "REDEEMED" or gen != voucher.code_gen:
                raise VoucherError("used", "this voucher was already used")
            elif now() >= voucher.expires_at:
                raise VoucherError("expired", "this voucher has expired")
        except VoucherError as exc:
            context["error"] = str(exc)
            status = 422
    return render_template("vouchers/counter.html", **context), status
