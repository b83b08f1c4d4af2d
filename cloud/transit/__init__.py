"""Transit (issue 17 items 5-7): an account-based card topped up from the wallet, bus readers
as devices, and fares from a GTFS Fares v2 feed.

- `feed`, `fares`: the GTFS feed checked, and the fare engine (pure, no database).
- `models`: the tables (migration 0011); money lives in the ledger, not here.
- `cards`: cards, their signed QR, top-ups through the wallet, balances, the deny-list.
- `taps`: signed reader batches stored once per (reader, sequence); taps priced and charged.
- `reader_api`, `views`, `cli`: the readers' API, the rider's pages, `plaza-cloud transit`.

Importing the package puts the transit tables on `cloud.models.Base.metadata`.
"""

from __future__ import annotations

from cloud.transit import models  # noqa: F401  (tables)
