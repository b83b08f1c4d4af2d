"""The wallet's one consent page, shared by both dialects: sign in, then Approve or Deny.

Plain HTML forms (a captive browser may have JavaScript off), a CSRF token in the signed session
cookie, and the signed-in account remembered in that cookie, so a returning shopper only taps
Approve. The page posts back to its own URL, query string and all, so the request being
approved is the one the shopper saw, re-validated on every post.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from flask import Response, render_template_string, request, session

from lab.wallet.settings import WalletAccount, WalletSettings

LOGIN_KEY = "wallet_login"
CSRF_KEY = "csrf"
CSRF_FIELD = "csrf_token"
BAD_LOGIN = "Unknown wallet user or wrong PIN."

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # a framed consent page is a clickjacked consent
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No form-action: after Approve the wallet redirects to the merchant, which it would block.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
}

# The wallet's look, shared by every page it shows a shopper (consent, passes, messages).
HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox Wallet</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f2f4f7;color:#1d2433}
main{max-width:26rem;margin:0 auto;padding:1.5rem 1rem}
h1{font-size:1.2rem;color:#1677ff}.card{background:#fff;border-radius:12px;padding:1rem}
label{display:block;margin:.6rem 0}input{display:block;width:100%;box-sizing:border-box;
padding:.6rem;font-size:1rem;border:1px solid #ccd;border-radius:8px}
button{width:100%;padding:.8rem;margin-top:.6rem;font-size:1rem;border-radius:8px;border:0}
.approve{background:#1677ff;color:#fff}.deny{background:#e6e8eb}.link{background:none;color:#1677ff}
.error{color:#b00020;font-weight:600}
.pass-title{font-size:1.1rem;font-weight:600}.hint{color:#5b6474;font-size:.9rem}
ul.passes{list-style:none;padding:0}ul.passes li{padding:.6rem 0;border-bottom:1px solid #eef}
a.pass{font-weight:600;color:#1677ff}
ul.messages{list-style:none;padding:0}ul.messages li{padding:.6rem 0;border-bottom:1px solid #eef}
a.message{font-weight:600;color:#1677ff}.message-body{margin:.3rem 0;white-space:pre-line}
</style></head>
<body><main>
<h1>Sandbox Wallet</h1>
<div class="card">
"""

# A confirmation form's opening: posts back to its own URL and names the signed-in login, which
# is what lab.wallet.app reads to know whether to sign in, switch or just tap.
FORM = """\
<form method="post" action="{{ action }}" data-wallet-user="{{ account.login if account else '' }}">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
"""

# Who is signed in, or the user + PIN fields when nobody is.
ACCOUNT = """{% if account %}
<p>Signed in as <strong>{{ account.name }}</strong></p>
{% else %}
<label>Wallet user <input name="login" autocomplete="username" autocapitalize="none"></label>
<label>PIN <input name="pin" type="password" inputmode="numeric"
 autocomplete="current-password"></label>
{% endif %}
"""

SWITCH = """{% if account %}
<button class="link" name="decision" value="switch">Not {{ account.name }}?
 Use another account</button>
{% endif %}
"""

ERROR = """{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
"""

PAGE = (
    HEAD
    + ERROR
    + """<p><strong>{{ app_name }}</strong> wants to:</p>
<ul><li>know who you are</li>{% if profile %}<li>see your name</li>{% endif %}</ul>
"""
    + FORM
    + ACCOUNT
    + """<button class="approve" name="decision" value="approve">Approve</button>
<button class="deny" name="decision" value="deny">Deny</button>
"""
    + SWITCH
    + """</form></div></main></body></html>
"""
)

ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Sandbox Wallet</title>
</head><body><h1>Sandbox Wallet</h1><p class="error">{{ message }}</p></body></html>
"""


@dataclass(frozen=True)
class Decision:
    approved: bool
    account: WalletAccount | None


def current_account(settings: WalletSettings) -> WalletAccount | None:
    """The account signed in on this browser, if it still exists."""
    login = session.get(LOGIN_KEY)
    return settings.account(login) if isinstance(login, str) else None


def csrf_token() -> str:
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return token


def secure(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def page(
    app_name: str,
    account: WalletAccount | None,
    *,
    profile: bool = False,
    error: str | None = None,
    status: int = 200,
) -> Response:
    """The consent page for `app_name`, posting back to the URL it was served from."""
    body = render_template_string(
        PAGE,
        app_name=app_name,
        account=account,
        profile=profile,
        error=error,
        action=request.full_path,
        csrf=csrf_token(),
        csrf_field=CSRF_FIELD,
    )
    return secure(Response(body, status=status, content_type="text/html; charset=utf-8"))


def error_page(message: str, status: int = 400) -> Response:
    """A dead end on the wallet: used when the request cannot safely go back to the merchant."""
    body = render_template_string(ERROR_PAGE, message=message)
    return secure(Response(body, status=status, content_type="text/html; charset=utf-8"))


def authenticate(settings: WalletSettings, login: str, pin: str) -> WalletAccount | None:
    account = settings.account(login.strip())
    # Compare a PIN even for an unknown login, so timing does not tell which logins exist.
    expected = account.pin if account else "\0" * max(len(pin), 1)
    if not hmac.compare_digest(pin.encode(), expected.encode()) or account is None:
        return None
    return account


def csrf_ok() -> bool:
    """Whether the posted form carries this browser's CSRF token (constant-time, as bytes)."""
    expected = session.get(CSRF_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    return (
        isinstance(expected, str)
        and bool(expected)
        and bool(sent)
        and hmac.compare_digest(sent.encode(), expected.encode())
    )


def sign_in(settings: WalletSettings) -> WalletAccount | None:
    """Check the form's user + PIN and, if right, remember the account in this browser."""
    account = authenticate(settings, request.form.get("login", ""), request.form.get("pin", ""))
    if account is not None:
        session[LOGIN_KEY] = account.login
        session.permanent = True
    return account


class Render(Protocol):
    """Shows a confirmation page again: for `account` (None: ask to sign in), maybe an error."""

    def __call__(
        self, account: WalletAccount | None, error: str | None = None, status: int = 200
    ) -> Response: ...


def decide(
    settings: WalletSettings,
    app_name: str,
    *,
    profile: bool = False,
    render: Render | None = None,
) -> Decision | Response:
    """Handle a confirmation form: a Decision, or the page again (bad PIN, switch account).

    `render` shows that page again; by default the consent page for `app_name`. Other
    confirmations (adding a pass) pass their own so the same sign-in rules apply to them.
    """

    def consent_page(
        account: WalletAccount | None, error: str | None = None, status: int = 200
    ) -> Response:
        return page(app_name, account, profile=profile, error=error, status=status)

    show: Render = render or consent_page
    if not csrf_ok():
        return error_page("This form has expired. Go back to the merchant and start again.")
    action = request.form.get("decision")
    if action == "deny":
        return Decision(False, current_account(settings))
    if action == "switch":
        session.pop(LOGIN_KEY, None)
        return show(None)
    if action != "approve":
        return error_page("Choose Approve or Deny.")
    account = current_account(settings)
    if request.form.get("login", "") or account is None:
        account = sign_in(settings)
        if account is None:
            return show(None, BAD_LOGIN, 403)
    return Decision(True, account)
