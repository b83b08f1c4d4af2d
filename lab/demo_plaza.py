"""The demo's plaza chapter: the shopper uses the venue's shop, the staff serve her.

After the Wi-Fi chapters the phone is online. The shopper (the lab phone, curl in its
namespace, and the sandbox wallet on the fake internet) follows the pushed offer's link from
the portal to the cloud's shop, signs in with the wallet, claims the voucher, books a table and
pays its deposit at the wallet's cashier, takes a number at the service desk; the staff (a
second browser on the venue's Wi-Fi, signed in to the dashboard) call her number, redeem her
voucher at the counter, and see the offer in the funnel. What the shop holds is seeded by
lab/plaza_seed.py. Each step checks what it must see (ShopperError otherwise), so the demo
stops at the first step that did not match.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urljoin

from lab import plaza_seed
from lab.cloud import CLOUD_URL, MERCHANT_EMAIL, MERCHANT_PASSWORD
from lab.phone import CSRF_RE, Phone, Response
from lab.shopper import check
from lab.wallet.app import approve, pay

Say = Callable[[str, str], None]
KEY_RE = r'name="idempotency_key" value="([^"]+)"'
BOOK_RE = re.compile(r'action="(/plaza/book/[^"]+)".*?' + KEY_RE, re.S)
TAKE_RE = r'<strong>{name}</strong>[^<]*<form[^>]*action="(/plaza/queues/[^"]+/take/[^"]+)"'
LABEL_RE = re.compile(r'id="label">([^<]+)<')
CODE_RE = re.compile(r'<p class="code">([^<]+)</p>')
STAFF_LINK_RE = re.compile(r'<code id="staff-link">([^<]+)</code>')


def token(page: Response) -> str:
    found = CSRF_RE.search(page.body)
    check(page.status == 200 and found is not None, f"no form on the page ({page.status})")
    assert found is not None
    return found.group(1)


def shop_sign_in(phone: Phone, next_path: str, user: str, pin: str) -> Response:
    """The shop's wallet sign-in (OIDC + PKCE with the sandbox wallet); the page it returns
    the shopper to."""
    phone.get(f"{CLOUD_URL}/plaza/signin?next={next_path}")
    start = phone.get(f"{CLOUD_URL}/plaza/login/wallet")
    check(start.status == 302 and bool(start.location), f"/plaza/login/wallet: {start.status}")
    back = approve(phone, start.location, user=user, pin=pin)
    check(back.status == 302 and back.location.startswith(CLOUD_URL), f"wallet: {back.status}")
    done = phone.get(back.location)
    check(done.status == 303 and done.location == next_path, f"callback: {done.status}")
    return phone.get(CLOUD_URL + next_path)


def merchant(netns: str) -> Phone:
    """The staff's browser on the venue's Wi-Fi, signed in to the dashboard."""
    staff = Phone(netns)
    login = f"{CLOUD_URL}/dashboard/login"
    form = {"email": MERCHANT_EMAIL, "password": MERCHANT_PASSWORD}
    r = staff.post(login, {**form, "csrf_token": token(staff.get(login))})
    check(r.status == 303, f"dashboard sign-in: {r.status}")
    return staff


def run(phone: Phone, portal: str, venue_id: str, say: Say) -> None:
    """The chapter; `phone` is online (authorized by the gateway) and signed in to the wallet."""
    welcome = phone.get(portal + "welcome")
    offers_url = f"{CLOUD_URL}/plaza/vouchers/offers/{venue_id}"
    check(f'href="{offers_url}"' in welcome.body, "the portal shows no link to the shop's offer")
    offers_path = offers_url.removeprefix(CLOUD_URL)
    page = shop_sign_in(phone, offers_path, "alice", "1234")
    title = html.escape(plaza_seed.VOUCHER_TITLE, quote=False)
    check(title in page.body, "the shop lists no voucher offer")
    form = re.search(r'action="(/plaza/vouchers/claim/[^"]+)".*?' + KEY_RE, page.body, re.S)
    check(form is not None, "no claim button")
    assert form is not None
    claimed = phone.post(CLOUD_URL + form.group(1),
                         {"csrf_token": token(page), "idempotency_key": form.group(2)})  # fmt: skip
    check(claimed.status == 303, f"claim: {claimed.status} {claimed.body[:200]}")
    voucher = phone.get(urljoin(CLOUD_URL, claimed.location))
    code = CODE_RE.search(voucher.body)
    check(voucher.status == 200 and code is not None and "<svg" in voucher.body, "no QR code")
    assert code is not None
    say(
        "From the pushed offer to a voucher in the venue's shop",
        f"the portal's offer links to {offers_url}; Alice signs in with the wallet (OIDC + "
        f"PKCE) and claims {plaza_seed.VOUCHER_TITLE!r}: a signed QR ({code.group(1)[:12]}...)",
    )

    times = phone.get(f"{CLOUD_URL}/plaza/v/{venue_id}/book")
    slot = BOOK_RE.search(times.body)
    check(times.status == 200 and slot is not None, f"no free table time ({times.status})")
    assert slot is not None
    held = phone.post(CLOUD_URL + slot.group(1),
                      {"csrf_token": token(times), "idempotency_key": slot.group(2)})  # fmt: skip
    check(held.status == 303, f"hold: {held.status} {held.body[:200]}")
    booking_url = urljoin(CLOUD_URL, held.location)
    cashier = phone.post(booking_url + "/deposit", {"csrf_token": token(phone.get(booking_url))})
    to_wallet = cashier.status == 303 and not cashier.location.startswith(CLOUD_URL)
    check(to_wallet, f"deposit: {cashier.status} {cashier.location}")
    paid = pay(phone, cashier.location, user="alice", pin="1234")
    check(paid.status == 302 and paid.location.startswith(booking_url), f"cashier: {paid.status}")
    shown = phone.get(paid.location)
    state = re.search(r'id="state">([^<]+)<', shown.body)
    check(state is not None and state.group(1) in ("Confirmed", "已确认"), f"booking: {state}")
    deposit = plaza_seed.TABLE_DEPOSIT / 100
    say(
        "She books a table and pays the deposit in the wallet",
        f"{plaza_seed.TABLE_NAME}: held -> the wallet's cashier (¥{deposit:.2f}, Alice approves "
        f"with her PIN) -> back to the shop: {state.group(1) if state else ''}",
    )

    desk = phone.get(f"{CLOUD_URL}/plaza/queues/{venue_id}")
    take = re.search(TAKE_RE.format(name=re.escape(plaza_seed.QUEUE_NAME)), desk.body)
    check(desk.status == 200 and take is not None, "no service desk to take a number at")
    assert take is not None
    taken = phone.post(CLOUD_URL + take.group(1), {"csrf_token": token(desk), "notify": "on"})
    check(taken.status == 303, f"take a number: {taken.status}")
    ticket_url = urljoin(CLOUD_URL, taken.location)
    number = LABEL_RE.search(phone.get(ticket_url).body)
    check(number is not None and number.group(1).startswith(plaza_seed.QUEUE_PREFIX), "no number")
    assert number is not None
    label = number.group(1)
    staff = merchant(phone.netns)
    try:
        queue_id = take.group(1).rsplit("/", 1)[1]
        base = f"{CLOUD_URL}/dashboard/queues/{venue_id}/{queue_id}"
        panel = staff.get(f"{base}?counter=1")
        called = staff.post(f"{base}/next", {"csrf_token": token(panel), "counter": "1"})
        check(called.status == 303, f"call next: {called.status}")
        mine = phone.get(ticket_url).body
        check(any(s in mine for s in ("Please come to window 1", "请到 1 号窗口")), "not called")
        say(
            "She takes a number at the service desk and the staff call it",
            f"{label} on her phone; the desk (dashboard, window 1) presses Next: her page says "
            "'Please come to window 1' (and the cloud queues a wallet message)",
        )

        admin = staff.get(f"{CLOUD_URL}/dashboard/vouchers/{venue_id}")
        link = STAFF_LINK_RE.search(admin.body)
        check(link is not None, "the dashboard shows no counter link")
        assert link is not None
        counter_url = html.unescape(link.group(1))
        form = {"csrf_token": token(staff.get(counter_url)), "code": code.group(1),
                "action": "redeem", "amount": "25"}  # fmt: skip
        redeemed = staff.post(counter_url, form)
        check(redeemed.status == 200 and "discount 5.00" in redeemed.body, "not redeemed")
        again = staff.post(counter_url, {**form, "csrf_token": token(staff.get(counter_url))})
        check(again.status == 422 and "already used" in again.body, "redeemed twice")
        funnel = staff.get(f"{CLOUD_URL}/dashboard/plaza/{venue_id}")
        row = re.search(r'id="funnel-by-offer".*?</table>', funnel.body, re.S)
        check(row is not None and title in row.group(0), "the offer is not in the funnel")
        say(
            "The counter redeems her voucher; the merchant sees it in the funnel",
            "the code on a ¥25.00 order -> discount ¥5.00, once (again: already "
            "used); the Funnel tab lists the offer with its claims and redemptions (under 5 "
            "people reads '<5')",
        )
    finally:
        staff.close()
