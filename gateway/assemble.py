"""Builds the Gateway with its real collaborators: the ones that hold files and databases.

`Gateway` receives its store, presence outbox, run-time access lists and venue policy instead
of opening them itself, so what it does can be read (and tested) apart from where its state
lives. This is the one place the production code (the daemon's `run`, the CLI) builds them;
tests use it too when they want the real thing in a temporary directory
(tests/unit/conftest.py), or hand in their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import Config
from gateway.dataplane.firewall import Firewall
from gateway.gateway import Gateway
from gateway.stations.access import RuntimeAccess
from gateway.stations.presence import PresenceOutbox
from gateway.stations.store import Store
from gateway.stations.venue_policy import VenuePolicy


def open_gateway(
    config: Config,
    firewall: Firewall,
    clock: Callable[[], float] = time.time,
    store: Store | None = None,
) -> Gateway:
    """A Gateway over the state in `config`'s state directory (the database at
    `config.db_path` unless `store` is given). Nothing is read from the kernel yet:
    `start()` does that."""
    state_dir = config.gateway.state_dir
    return Gateway(
        config,
        firewall,
        store if store is not None else Store(config.db_path),
        runtime_access=RuntimeAccess.load(state_dir),
        presence=PresenceOutbox(config.db_path),
        venue_policy=VenuePolicy(
            state_dir,
            config.policy.defaults(config.session.default_minutes),
            config.session.max_minutes,
        ),
        clock=clock,
    )
