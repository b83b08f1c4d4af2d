"""The records a router sends its cloud, as both ends define them: the usage record's fields
(docs/cloud-protocol.md `POST /device/usage`) and the presence event's kinds and one-tap link
(`POST /device/presence`). The router writes them, the cloud checks them; one definition here
means a field added on one side is a field known on the other."""

from __future__ import annotations

import re

USAGE_FIELDS = (
    "key", "session_id", "seq", "mac", "ip", "started_at", "period_start", "period_end",
    "final", "reason", "bytes_up", "packets_up", "bytes_down", "packets_down",
    "total_bytes_up", "total_bytes_down",
)  # fmt: skip

PRESENCE_KINDS = ("join", "leave", "login")
# portal/reconnect.py's link: https://<portal host>[:port]/reconnect/<itsdangerous token>; the
# cloud (cloud/presence.py) refuses a whole batch holding anything else, so both check this.
CONNECT_URL_RE = re.compile(
    r"https://(?P<host>[A-Za-z0-9.-]{1,253})(?::(?P<port>[0-9]{1,5}))?"
    r"/reconnect/(?P<token>[A-Za-z0-9_.-]{1,512})"
)
MAX_CONNECT_URL = 1024  # what a wallet message's link may hold (lab/wallet/passes.MAX_LINK)
