"""Bookings (issue 16 item 4): resources, their time slots, bookings
(cloud/o2o/booking_models.py says which constraint holds which invariant).

Revision ID: 0009_o2o_bookings
Revises: 0008_o2o_vouchers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_o2o_bookings"
down_revision = "0008_o2o_vouchers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "booking_resources",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("slot_minutes", sa.Integer(), nullable=False),
        sa.Column("hours", sa.JSON(), nullable=False),
        sa.Column("weekdays", sa.String(length=7), nullable=False),
        sa.Column("tz", sa.String(length=40), nullable=False),
        sa.Column("deposit", sa.Integer(), nullable=False),
        sa.Column("hold_minutes", sa.Integer(), nullable=False),
        sa.Column("cancel_cutoff_minutes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_booking_resources_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_resources")),
    )
    op.create_index(
        "ix_booking_resources_venue", "booking_resources", ["venue_id", "state"], unique=False
    )

    op.create_table(
        "booking_slots",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("resource_id", sa.String(length=24), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "taken >= 0 AND taken <= capacity", name=op.f("ck_booking_slots_within_capacity")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["booking_resources.id"],
            name=op.f("fk_booking_slots_resource_id_booking_resources"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_slots")),
        sa.UniqueConstraint("resource_id", "starts_at", name="uq_booking_slots_start"),
    )

    op.create_table(
        "bookings",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("slot_id", sa.String(length=24), nullable=False),
        sa.Column("resource_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("shopper_id", sa.String(length=24), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("deposit", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.String(length=24), nullable=True),
        sa.Column("held_at", sa.Float(), nullable=False),
        sa.Column("hold_expires_at", sa.Float(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=True),
        sa.Column("checked_in_at", sa.Float(), nullable=True),
        sa.Column("checked_in_by", sa.String(length=16), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("reminded_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_bookings_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["booking_resources.id"],
            name=op.f("fk_bookings_resource_id_booking_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["shopper_id"], ["shoppers.id"], name=op.f("fk_bookings_shopper_id_shoppers")
        ),
        sa.ForeignKeyConstraint(
            ["slot_id"], ["booking_slots.id"], name=op.f("fk_bookings_slot_id_booking_slots")
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_bookings_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        sa.UniqueConstraint("shopper_id", "idempotency_key", name="uq_bookings_idempotency"),
    )
    op.create_index("ix_bookings_shopper", "bookings", ["shopper_id", "held_at"], unique=False)
    op.create_index("ix_bookings_slot", "bookings", ["slot_id", "state"], unique=False)
    op.create_index("ix_bookings_state", "bookings", ["state", "hold_expires_at"], unique=False)
    op.create_index("ix_bookings_venue", "bookings", ["venue_id", "state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bookings_venue", table_name="bookings")
    op.drop_index("ix_bookings_state", table_name="bookings")
    op.drop_index("ix_bookings_slot", table_name="bookings")
    op.drop_index("ix_bookings_shopper", table_name="bookings")
    op.drop_table("bookings")
    op.drop_table("booking_slots")
    op.drop_index("ix_booking_resources_venue", table_name="booking_resources")
    op.drop_table("booking_resources")
