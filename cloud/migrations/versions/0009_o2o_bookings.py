"""Bookings (issue 16 item 4): time-slot inventory, holds, bookings.

Placeholder in the chain so that work on separate services can land in any order; the
service's own change fills in upgrade() and downgrade().

Revision ID: 0009_o2o_bookings
Revises: 0008_o2o_vouchers
"""

from __future__ import annotations

revision = "0009_o2o_bookings"
down_revision = "0008_o2o_vouchers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
