"""What a shopper does on the portal, step by step, for tests, the demo and benchmarks: log in
through the wallet, opt in to one-tap reconnect and save the pass. Each step checks the answer
it expects and raises ShopperError with what came instead, so a caller that is a test, the
narrated demo or a benchmark reports the same failure the same way.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

from lab.phone import CSRF_RE, Phone, Response
from lab.wallet.app import approve, save_pass


class ShopperError(AssertionError):
    """A step of the shopper's journey did not answer as a working venue would."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ShopperError(message)


def wallet_login(phone: Phone, portal: str, user: str = "alice", pin: str = "1234") -> Response:
    """Portal -> wallet (the user approves in the wallet app) -> callback -> /welcome; returns
    the welcome page. The three steps are also callable alone, for a caller that times them
    (lab/demo.py) or looks at the callback on the way (tests/netns/test_metrics.py)."""
    callback = approve_login(phone, start_login(phone, portal), portal, user, pin)
    return finish_login(phone, portal, callback)


def start_login(phone: Phone, portal: str) -> str:
    """The shopper taps "Log in with the wallet": the portal's 302 to the wallet's authorize
    page; returns that page's URL."""
    r = phone.get(portal + "login/wallet")
    answer = r.status or getattr(r, "error", "")  # lab.phone: curl's error, if any
    check(r.status == 302 and bool(r.location), f"/login/wallet answered {answer}")
    return r.location


def approve_login(
    phone: Phone, authorize_url: str, portal: str, user: str = "alice", pin: str = "1234"
) -> str:
    """The shopper signs in and approves in the wallet app; returns the portal's callback URL
    that the wallet sends the phone back to (not yet followed)."""
    r = approve(phone, authorize_url, user=user, pin=pin)
    check(r.status == 302 and r.location.startswith(portal), f"wallet -> {r.status} {r.location}")
    return r.location


def finish_login(phone: Phone, portal: str, callback: str) -> Response:
    """Follow the wallet's redirect to the portal's callback (303 to /welcome: the phone is
    online) and open the welcome page; returns it."""
    r = phone.get(callback)
    check(r.status == 303 and r.location == "/welcome", f"callback -> {r.status} {r.location}")
    return phone.get(urljoin(portal, r.location))


def csrf(phone: Phone, url: str) -> str:
    page = phone.get(url)
    match = CSRF_RE.search(page.body)
    check(page.status == 200 and match is not None, f"no form at {url}: {page.status}")
    assert match is not None
    return match.group(1)


def opt_in_and_save(
    phone: Phone, portal: str, wallet: str, user: str = "alice", pin: str = "1234"
) -> str:
    """Tick "remember me" on /welcome, follow the portal's 303 to the wallet's add-a-pass page
    and confirm there; returns the saved one-tap link."""
    token = csrf(phone, portal + "welcome")
    r = phone.post(portal + "reconnect", {"csrf_token": token, "remember": "yes"})
    wallet = wallet.rstrip("/")
    check(r.status == 303 and r.location.startswith(wallet + "/passes/add?"), r.location)
    [link] = parse_qs(urlsplit(r.location).query)["link"]
    check(link.startswith(portal + "reconnect/"), f"not a reconnect link: {link}")
    saved = wallet_saved(phone, portal, save_pass(phone, r.location, user=user, pin=pin))
    back = (f'href="{portal}welcome"', 'href="/welcome"')  # from the wallet, or on the portal
    check(any(b in saved.body for b in back), "no way back to the portal's offers")
    return link


def wallet_saved(phone: Phone, portal: str, saved: Response) -> Response:
    """The page after "Add to wallet": the wallet's own (a router without a cloud asks for the
    pass alone), or, when the portal also asked consent to the venue's offers, the portal's
    `/reconnect/saved` that the wallet returns to with its signed consent proof."""
    if saved.status == 303:
        check(saved.location.startswith(portal + "reconnect/saved?proof="), saved.location)
        saved = phone.get(saved.location)
        check(saved.status == 200, f"portal after the wallet's consent: {saved.status}")
        return saved
    check(saved.status == 200 and "Saved to your wallet" in saved.body, f"save: {saved.status}")
    return saved
