"""Plaza funnel data as the steps record it (presence joins and logins, shopper links, offer
pushes delivered, voucher claims and redemptions), for the funnel's cloud and browser tests
(a helper module: test modules import no other test module)."""

from __future__ import annotations

from flask import Flask

from cloud import db as cloud_db
from cloud.dashboard.privacy import DAY
from cloud.models import Device, PresenceEvent, PushJob, ShopperLink, Venue
from cloud.o2o.shoppers import Shopper
from cloud.o2o.voucher_models import Voucher, VoucherRedemption, VoucherTemplate


def seed(app: Flask, venue: Venue, at: float, joins: int, logins: int, pushes: int,
         coffee: int, redeemed: int, cake: int) -> None:  # fmt: skip
    """`joins` phones join; the first `logins` sign in with the wallet (linked to their MAC),
    the first `pushes` get the offer push, the first `coffee` claim the coffee voucher (the
    first `redeemed` of them redeem it) and the first `cake` the cake one."""
    with cloud_db.session(app) as db:
        device = Device(venue_id=venue.id, public_key="x" * 43, enrolled_at=at)
        db.add(device)
        templates = {}
        for title in ("Coffee", "Cake"):
            templates[title] = VoucherTemplate(
                venue_id=venue.id, title=f"{title} {venue.id[-4:]}", kind="amount",
                amount_off=500, budget=100, issued=0, state="ACTIVATED", created_at=at,
                updated_at=at,
            )  # fmt: skip
        db.add_all(templates.values())
        db.flush()
        for i in range(joins):
            mac = f"02:00:00:{venue.id[-2:].encode().hex()[:2]}:00:{i:02x}"
            user = f"{venue.id}-user{i}"
            db.add(PresenceEvent(device_id=device.id, venue_id=venue.id, key=f"j{i}",
                                 kind="join", mac=mac, at=at))  # fmt: skip
            if i >= logins:
                continue
            db.add(
                PresenceEvent(
                    device_id=device.id,
                    venue_id=venue.id,
                    key=f"l{i}",
                    kind="login",
                    mac=mac,
                    at=at,
                    wallet_user=user,
                    opt_in=True,
                )
            )
            db.add(ShopperLink(venue_id=venue.id, mac=mac, wallet_user=user, updated_at=at))
            shopper = Shopper(provider="oidc", subject=user, created_at=at, last_seen_at=at)
            db.add(shopper)
            db.flush()
            if i < pushes:
                db.add(
                    PushJob(
                        venue_id=venue.id,
                        kind="wallet",
                        target=user,
                        shopper=user,
                        payload={},
                        created_at=at,
                        attempts=1,
                        sent_at=at,
                    )
                )
            for title, n in (("Coffee", coffee), ("Cake", cake)):
                if i >= n:
                    continue
                voucher = Voucher(
                    template_id=templates[title].id, venue_id=venue.id, shopper=shopper.id,
                    seq=1, day="2026-01-01", day_seq=1,
                    short_code=f"{title[:2]}{venue.id[-6:]}{i:02d}".upper(), claimed_at=at,
                    valid_from=at, expires_at=at + DAY,
                )  # fmt: skip
                db.add(voucher)
                db.flush()
                if title == "Coffee" and i < redeemed:
                    db.add(VoucherRedemption(voucher_id=voucher.id, venue_id=venue.id, at=at,
                                             staff="counter", code_gen=1))  # fmt: skip
        db.add(
            PushJob(
                venue_id=venue.id,
                kind="wallet",
                target="x",
                shopper="shp_queue",
                payload={},
                created_at=at,
                attempts=1,
                sent_at=at,
            )
        )  # not an offer
        db.commit()
