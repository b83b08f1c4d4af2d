"""Service windows (issue 16 item 5): virtual queues and their tickets.

Placeholder in the chain so that work on separate services can land in any order; the
service's own change fills in upgrade() and downgrade().

Revision ID: 0010_o2o_queues
Revises: 0009_o2o_bookings
"""

from __future__ import annotations

revision = "0010_o2o_queues"
down_revision = "0009_o2o_bookings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
