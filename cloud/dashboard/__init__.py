"""The merchant dashboard: sign-in, venues and devices, live clients, charts, and the offer
and splash editor, as server-rendered pages under /dashboard.

Plain HTML forms and inline SVG, no script: it works on any phone, and the CSP can forbid
script outright (security.py). Every venue page goes through `tenancy.own_venue`, so a
merchant only ever reaches its own venues; another merchant's venue is a 404, as if it did
not exist.

| module | holds |
|---|---|
| `blueprint.py` | the blueprint, its session settings, template globals and headers |
| `security.py` | cookie flags, CSRF, the `next` check, response headers |
| `ratelimit.py` | the sign-in throttle (client, client + e-mail, account), before any hash |
| `auth.py` | sign-in, sign-out, `login_required`, the merchant; `guard` for other blueprints |
| `tenancy.py` | `own_venue`, `owned`: the one place a URL's venue id (or row id) becomes a row |
| `stats.py` | the SQL aggregates behind every figure |
| `charts.py` | bar-chart geometry for the SVG templates |
| `views.py` | the venues list and the venue page |
| `editor.py` | branding/offers editor, push-to-routers, claim codes |
| `fleet.py` | routers from a baked image waiting for approval, the fleet secret |
| `funnel.py`, `privacy.py` | the plaza funnel's figures; the under-5 and daily-salt rules |
| `plaza_views.py` | their page (its own blueprint, registered by the app) |
"""

from __future__ import annotations

from cloud.dashboard import auth, editor, fleet, views  # page modules register routes on bp
from cloud.dashboard.blueprint import bp

__all__ = ["auth", "bp", "editor", "fleet", "views"]
