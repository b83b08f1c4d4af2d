"""Passes: links a merchant saves in the shopper's wallet, like "Add to Apple Wallet".

The merchant's page sends the browser to `GET /passes/add?client_id=&title=&link=[&offers=1]`;
the wallet shows what would be saved and the shopper confirms on the wallet's own page (signing
in there if needed), so no secret of the wallet ever passes through the merchant or its
JavaScript. With `offers=1` the page also asks whether the merchant may send its offers when
the shopper is back; if they agree, the wallet sends the browser back to the merchant's
`/reconnect/saved` with a consent proof it signed (plaza/wallet/consent.py), the only evidence
the Plaza cloud accepts before it messages anyone. The
wallet only keeps links to the merchant's own site: the link's origin must be the origin of one
of the client's registered redirect URIs, and every way back to the merchant is built from that
registered origin, never from a request parameter, so /passes/add cannot be used as an open
redirect or to plant a link to someone else's site under a trusted merchant's name.

`GET /passes` is the wallet app's list: each pass is a plain `<a class="pass">` the phone's
browser opens. Passes live in memory, like everything in the sandbox. The text and link checks
and the wallet app's sign-in here are shared with pushed messages (lab.wallet.messages).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template_string,
    session,
)
from flask import request as flask_request

from lab.wallet import consent
from lab.wallet.settings import WalletAccount, WalletSettings
from lab.wallet.store import PassBook, PassLimitError, WalletPass
from plaza.wallet import consent as consent_jwt

MAX_TITLE = 80
MAX_LINK = 1024
MAX_PASSES = 20
PARAMS = ("client_id", "title", "link")
OPTIONAL_PARAMS = ("offers",)
SAVED_PATH = "/reconnect/saved"  # where a pass with consent returns, on the registered origin
DEFAULT_PORTS = {"https": 443, "http": 80}
PLAIN_URL = re.compile(r"[!-~]+")  # printable ASCII, no spaces: what a merchant link needs

bp = Blueprint("passes", __name__)

CONFIRM_PAGE = (
    consent.HEAD
    + consent.ERROR
    + """<p><strong>{{ app_name }}</strong> wants to add a pass to your wallet:</p>
<p class="pass-title">{{ title }}</p>
<p class="hint">It opens {{ origin }}.</p>
{% if offers %}<p class="consent">{{ app_name }} may also send its offers to your wallet when
you are back there. You can take this back with "Forget me" on its page.</p>{% endif %}
"""
    + consent.FORM
    + consent.ACCOUNT
    + """<button class="approve" name="decision" value="approve">Add to wallet</button>
<button class="deny" name="decision" value="deny">Cancel</button>
"""
    + consent.SWITCH
    + """</form></div></main></body></html>
"""
)

SAVED_PAGE = (
    consent.HEAD
    + """<p role="status"><strong>Saved to your wallet</strong></p>
<p><span class="pass-title">{{ title }}</span> from {{ app_name }} is in your passes.
Next time, open it from your wallet.</p>
<p><a href="{{ back }}">Back to {{ app_name }}</a></p>
<p class="hint"><a href="/passes">Your passes</a></p>
</div></main></body></html>
"""
)

# Signing in on one of the wallet app's own pages (passes, messages), not on a merchant's behalf.
SIGN_IN = (
    consent.FORM
    + consent.ACCOUNT
    + """<button class="approve" name="decision" value="approve">Sign in</button>
</form>
"""
)

PASSES_PAGE = (
    consent.HEAD
    + consent.ERROR
    + """{% if account %}
<p>Signed in as <strong>{{ account.name }}</strong></p>
<h2>Your passes</h2>
{% if items %}<ul class="passes">
{% for p in items %}<li><a class="pass" href="{{ p.link }}">{{ p.title }}</a>
<div class="hint">{{ p.client }}, added {{ added(p) }}</div>
<form method="post" action="/passes/remove">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<input type="hidden" name="link" value="{{ p.link }}">
<button class="link">Remove</button></form></li>
{% endfor %}</ul>
{% else %}<p class="hint">No passes yet. Merchants can offer to add one.</p>{% endif %}
<form method="post" action="/passes/signout">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<button class="link">Sign out</button></form>
{% else %}
<p>Sign in to see your passes.</p>
"""
    + SIGN_IN
    + """{% endif %}
</div></main></body></html>
"""
)


@dataclass(frozen=True)
class PassesState:
    settings: WalletSettings
    clock: Callable[[], float]
    book: PassBook


@dataclass(frozen=True)
class Merchant:
    """A registered OIDC client or Alipay app, as far as passes are concerned."""

    client_id: str
    name: str
    origins: tuple[str, ...]  # of its registered redirect URIs: where its links may point


@dataclass(frozen=True)
class PassRequest:
    merchant: Merchant
    title: str
    link: str
    origin: str  # the registered origin the link belongs to
    offers: bool = False  # the merchant also asks to send its offers (a consent proof)

    @property
    def welcome(self) -> str:
        """The merchant's landing page, from its registered origin (never from a parameter)."""
        return self.origin + "/welcome"


class Refused(ValueError):
    """A pass request the wallet will not show; str() is the message for the page."""


def state() -> PassesState:
    return current_app.extensions["wallet_passes"]


def init(app: Flask, settings: WalletSettings, clock: Callable[[], float] = time.time) -> None:
    app.extensions["wallet_passes"] = PassesState(settings, clock, PassBook(MAX_PASSES))
    app.register_blueprint(bp)


def origin(url: str) -> str | None:
    """`scheme://host[:port]`, lower-cased and without a default port; None if not a plain
    absolute http(s) URL (credentials in it, bad port), so two spellings of one origin agree."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS[scheme]) else f":{port}")


def merchant(settings: WalletSettings, client_id: str) -> Merchant | None:
    """The OIDC client or Alipay app with this id, with the origins it may save links to."""
    client = settings.oidc_client(client_id)
    if client is not None:
        name, uris = client.name, client.redirect_uris
    else:
        app = settings.alipay_app(client_id)
        if app is None:
            return None
        name, uris = app.name, (app.redirect_uri,)
    origins = tuple(dict.fromkeys(o for o in map(origin, uris) if o))
    return Merchant(client_id, name, origins)


def check_text(
    text: str,
    owner: str = "pass",
    field: str = "title",
    limit: int = MAX_TITLE,
    *,
    lines: bool = False,
) -> str:
    """`text` without surrounding space, if a wallet can show it as the `owner`'s `field`.

    Control and format characters (bidi overrides included) could disguise what is shown, so
    they are refused; only a message body (`lines`) may keep line breaks, as "\\n".
    """
    text = text.strip()
    if lines:
        text = text.replace("\r\n", "\n")
    if not text:
        raise Refused(f"The {owner} has no {field}.")
    if len(text) > limit:
        raise Refused(f"The {owner} {field} is too long (at most {limit} characters).")
    if any(unicodedata.category(ch).startswith("C") and not (lines and ch == "\n") for ch in text):
        raise Refused(f"The {owner} {field} contains characters a wallet cannot show.")
    return text


def https_origin(link: str) -> str | None:
    """The origin of `link` if it is a plain https:// URL, None if it is another kind of URL.

    Refused outright if it is too long or not plain printable ASCII (spaces, backslashes): no
    merchant needs those, and browsers would each read them their own way.
    """
    if len(link) > MAX_LINK:
        raise Refused(f"The link is too long (at most {MAX_LINK} characters).")
    if not PLAIN_URL.fullmatch(link) or "\\" in link:
        raise Refused("The link is not a plain https:// address.")
    found = origin(link)
    return found if found is not None and link.lower().startswith("https://") else None


def check_link(link: str, shop: Merchant) -> str:
    """The registered origin `link` belongs to; Refused if it is not the merchant's own."""
    found = https_origin(link)
    if found is None or found not in shop.origins:
        raise Refused(
            f"This link does not lead to {shop.name}'s own site: "
            "a merchant may only save links to itself."
        )
    return found


def parse(settings: WalletSettings, args: Mapping[str, list[str]]) -> PassRequest:
    """Check a /passes/add request: the same checks on every GET and POST."""
    for name in PARAMS + OPTIONAL_PARAMS:
        if len(args.get(name, [])) > 1:
            raise Refused(f"{name} is given more than once.")
    client_id, title, link = (args.get(name, [""])[0] for name in PARAMS)
    offers = args.get("offers", [""])[0]
    if offers not in ("", "1"):
        raise Refused("offers must be 1 or absent.")
    shop = merchant(settings, client_id) if client_id else None
    if shop is None:
        raise Refused("Unknown merchant (client_id): this wallet has no such app registered.")
    title = check_text(title)
    return PassRequest(shop, title, link, check_link(link, shop), offers == "1")


def confirm_page(
    wanted: PassRequest, account: WalletAccount | None, error: str | None = None, status: int = 200
) -> Response:
    """The confirmation for `wanted`, posting back to its own URL (re-checked on post)."""
    body = render_template_string(
        CONFIRM_PAGE,
        app_name=wanted.merchant.name,
        title=wanted.title,
        origin=wanted.origin,
        offers=wanted.offers,
        account=account,
        error=error,
        action=flask_request.full_path,
        csrf=consent.csrf_token(),
        csrf_field=consent.CSRF_FIELD,
    )
    return _html(body, status)


def app_page(
    template: str,
    settings: WalletSettings,
    items: Callable[[str], list],
    action: str,
    error: str | None,
    status: int,
    **context: Any,
) -> Response:
    """One of the wallet app's own pages (passes, messages): the signed-in user's `items(login)`,
    or a sign-in form posting to `action`."""
    account = consent.current_account(settings)
    body = render_template_string(
        template,
        account=account,
        items=items(account.login) if account else [],
        error=error,
        action=action,
        csrf=consent.csrf_token(),
        csrf_field=consent.CSRF_FIELD,
        **context,
    )
    return _html(body, status)


def passes_page(
    settings: WalletSettings, book: PassBook, error: str | None = None, status: int = 200
) -> Response:
    def added(item: WalletPass) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(item.added_at))

    return app_page(
        PASSES_PAGE, settings, book.for_user, "/passes/signin", error, status, added=added
    )


def _html(body: str, status: int) -> Response:
    return consent.secure(Response(body, status=status, content_type="text/html; charset=utf-8"))


def _see_other(location: str) -> Response:
    return consent.secure(redirect(location, code=303))


@bp.route("/passes/add", methods=["GET", "POST"])
def add() -> Response:
    st = state()
    try:
        wanted = parse(st.settings, flask_request.args.to_dict(flat=False))
    except Refused as refusal:
        return consent.error_page(f"This pass cannot be added: {refusal}")

    def render(
        account: WalletAccount | None, error: str | None = None, status: int = 200
    ) -> Response:
        return confirm_page(wanted, account, error, status)

    if flask_request.method == "GET":
        return render(consent.current_account(st.settings))
    decision = consent.decide(st.settings, wanted.merchant.name, render=render)
    if isinstance(decision, Response):
        return decision
    if not decision.approved or decision.account is None:
        return _see_other(wanted.welcome)
    item = WalletPass(wanted.title, wanted.link, wanted.merchant.name, st.clock())
    try:
        st.book.add(decision.account.login, item)
    except PassLimitError:
        return consent.error_page(
            f"Your wallet already holds {MAX_PASSES} passes. "
            "Remove one in your passes, then try again.",
            status=409,
        )
    if wanted.offers:
        proof = consent_proof(st.settings, decision.account.user_id, wanted, st.clock())
        return _see_other(wanted.origin + SAVED_PATH + "?" + urlencode({"proof": proof}))
    body = render_template_string(
        SAVED_PAGE, title=item.title, app_name=item.client, back=wanted.welcome
    )
    return _html(body, 200)


def consent_proof(settings: WalletSettings, user_id: str, wanted: PassRequest, now: float) -> str:
    """Signed with the wallet's own key, for the user who just confirmed on this page."""
    pem = Path(settings.wallet_private_key_file).read_bytes()
    return consent_jwt.issue(pem, settings.issuer, user_id, wanted.origin, wanted.link, now)


@bp.get("/passes")
def index() -> Response:
    st = state()
    return passes_page(st.settings, st.book)


def sign_in_then(
    settings: WalletSettings,
    page: str,
    what: str,
    render: Callable[[str | None, int], Response],
) -> Response:
    """Sign in from one of the wallet app's pages (on a phone whose browser forgot us), then
    show that page (`page`, "/passes": `what`, "your passes") again; `render(error, status)`
    shows it with a refusal."""
    if not consent.csrf_ok():
        return consent.error_page(f"This form has expired. Open {what} and try again.")
    if consent.sign_in(settings) is None:
        return render(consent.BAD_LOGIN, 403)
    return _see_other(page)


@bp.post("/passes/signin")
def signin() -> Response:
    st = state()
    return sign_in_then(
        st.settings,
        "/passes",
        "your passes",
        lambda error, status: passes_page(st.settings, st.book, error, status),
    )


@bp.post("/passes/signout")
def signout() -> Response:
    """Forget the account on this browser (a shared phone, or to switch users)."""
    if not consent.csrf_ok():
        return consent.error_page("This form has expired. Open your passes and try again.")
    session.pop(consent.LOGIN_KEY, None)
    return _see_other("/passes")


@bp.post("/passes/remove")
def remove() -> Response:
    st = state()
    if not consent.csrf_ok():
        return consent.error_page("This form has expired. Open your passes and try again.")
    account = consent.current_account(st.settings)
    if account is not None:
        st.book.remove(account.login, flask_request.form.get("link", ""))
    return _see_other("/passes")
