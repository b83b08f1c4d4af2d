"""The hospital (issue 17 items 1-4): diagnostic reports (cloud/hospital/models.py); the
appointments, slots and clinic queues are the booking and queue tables.

Revision ID: 0012_hospital
Revises: 0011_transit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_hospital"
down_revision = "0011_transit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hospital_reports",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("booking_id", sa.String(length=24), nullable=False),
        sa.Column("shopper_id", sa.String(length=24), nullable=False),
        sa.Column("author_id", sa.String(length=24), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("conclusion", sa.String(length=1000), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha1", sa.String(length=28), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["merchants.id"],
                                name=op.f("fk_hospital_reports_author_id_merchants")),
        sa.ForeignKeyConstraint(["booking_id"], ["bookings.id"],
                                name=op.f("fk_hospital_reports_booking_id_bookings")),
        sa.ForeignKeyConstraint(["shopper_id"], ["shoppers.id"],
                                name=op.f("fk_hospital_reports_shopper_id_shoppers")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"],
                                name=op.f("fk_hospital_reports_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hospital_reports")),
    )  # fmt: skip
    op.create_index("ix_hospital_reports_patient", "hospital_reports",
                    ["shopper_id", "issued_at"], unique=False)  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_hospital_reports_patient", table_name="hospital_reports")
    op.drop_table("hospital_reports")
