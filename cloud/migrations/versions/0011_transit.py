"""Transit (issue 17 items 5-7): cards, top-ups, readers, taps, GTFS fares.

Placeholder in the chain so that work on separate services can land in any order; the
service's own change fills in upgrade() and downgrade().

Revision ID: 0011_transit
Revises: 0010_o2o_queues
"""

from __future__ import annotations

revision = "0011_transit"
down_revision = "0010_o2o_queues"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
