"""Service windows (issue 16 item 5): virtual queues and their tickets
(cloud/o2o/queue_models.py says which constraint holds which invariant).

Revision ID: 0010_o2o_queues
Revises: 0009_o2o_bookings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_o2o_queues"
down_revision = "0009_o2o_bookings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_queues",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("prefix", sa.String(length=4), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("service_seconds", sa.Integer(), nullable=False),
        sa.Column("recall_seconds", sa.Integer(), nullable=False),
        sa.Column("max_calls", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint("last_number >= 0", name=op.f("ck_service_queues_number_positive")),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_service_queues_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_queues")),
    )
    op.create_index("ix_service_queues_venue", "service_queues", ["venue_id", "state"])

    op.create_table(
        "queue_tickets",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("queue_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("shopper_id", sa.String(length=24), nullable=True),
        sa.Column("holder", sa.String(length=24), nullable=True),
        sa.Column("ref", sa.String(length=64), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("counter", sa.String(length=32), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("taken_at", sa.Float(), nullable=False),
        sa.Column("called_at", sa.Float(), nullable=True),
        sa.Column("last_called_at", sa.Float(), nullable=True),
        sa.Column("skipped_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("notified_ahead", sa.Integer(), nullable=True),
        sa.Column("notified_calls", sa.Integer(), nullable=False),
        sa.Column("notified_skip", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["service_queues.id"],
            name=op.f("fk_queue_tickets_queue_id_service_queues"),
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_queue_tickets_venue_id_venues")
        ),
        sa.ForeignKeyConstraint(
            ["shopper_id"], ["shoppers.id"], name=op.f("fk_queue_tickets_shopper_id_shoppers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_tickets")),
        sa.UniqueConstraint("queue_id", "day", "number", name="uq_queue_tickets_number"),
        sa.UniqueConstraint("queue_id", "holder", name="uq_queue_tickets_holder"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_queue_tickets_token_hash")),
    )
    op.create_index(
        "ix_queue_tickets_line", "queue_tickets", ["queue_id", "day", "state", "number"]
    )
    op.create_index("ix_queue_tickets_shopper", "queue_tickets", ["shopper_id", "taken_at"])


def downgrade() -> None:
    op.drop_index("ix_queue_tickets_shopper", table_name="queue_tickets")
    op.drop_index("ix_queue_tickets_line", table_name="queue_tickets")
    op.drop_table("queue_tickets")
    op.drop_index("ix_service_queues_venue", table_name="service_queues")
    op.drop_table("service_queues")
