"""The plaza services: what a shopper does in the venue with the wallet they already use
(issue 16): sign in, pay, claim and redeem vouchers; and the books the cloud keeps of it.

- `shoppers`: the signed-in shopper (wallet sign-in, session, `shopper_required`).
- `shop`: the shopper web app's blueprint under `/plaza` (mobile-first, no JavaScript).
- `payments`: payments and refunds through the wallet's trade API (Alipay dialect), the
  asynchronous notify, reconciliation by query.
- `ledger`: the append-only double-entry ledger every payment, refund and voucher posts to.

Each module that declares tables is imported here, so that importing the package puts every
plaza table on `cloud.models.Base.metadata` (the migrations' and the schema test's target):
a new module with tables adds one line below.
"""

from __future__ import annotations

from cloud.o2o import (  # noqa: F401  (tables)
    booking_models,
    ledger,
    payments,
    queue_models,
    shoppers,
    voucher_models,
)
