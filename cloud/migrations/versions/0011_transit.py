"""Transit (issue 17 items 5-7): cards, top-ups, readers, taps, GTFS fares
(cloud/transit/models.py says what each table holds; money stays in the ledger).

Revision ID: 0011_transit
Revises: 0010_o2o_queues
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_transit"
down_revision = "0010_o2o_queues"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "transit_feeds",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("loaded_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_transit_feeds_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transit_feeds")),
    )
    op.create_index(op.f("ix_transit_feeds_venue_id"), "transit_feeds", ["venue_id"])
    op.create_table(
        "transit_cards",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("shopper_id", sa.String(length=24), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("lost_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shopper_id"], ["shoppers.id"], name=op.f("fk_transit_cards_shopper_id_shoppers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transit_cards")),
    )
    op.create_index(op.f("ix_transit_cards_shopper_id"), "transit_cards", ["shopper_id"])
    op.create_table(
        "transit_topups",
        sa.Column("payment_id", sa.String(length=24), nullable=False),
        sa.Column("card_id", sa.String(length=24), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("credited_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["transit_cards.id"], name=op.f("fk_transit_topups_card_id_transit_cards")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_transit_topups_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_transit_topups")),
    )
    op.create_index(op.f("ix_transit_topups_card_id"), "transit_topups", ["card_id"])
    op.create_table(
        "transit_readers",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("route_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claim_codes.id"], name=op.f("fk_transit_readers_claim_id_claim_codes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transit_readers")),
        sa.UniqueConstraint("claim_id", name=op.f("uq_transit_readers_claim_id")),
    )
    op.create_table(
        "transit_taps",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("reader_id", sa.String(length=24), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("card_id", sa.String(length=24), nullable=False),
        sa.Column("route_id", sa.String(length=64), nullable=False),
        sa.Column("stop_id", sa.String(length=64), nullable=False),
        sa.Column("tapped_at", sa.Float(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("fare", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transit_taps")),
        sa.UniqueConstraint("reader_id", "seq", name=op.f("uq_transit_taps_reader_id")),
    )
    op.create_index("ix_transit_taps_card", "transit_taps", ["card_id", "tapped_at"])
    op.create_index("ix_transit_taps_state", "transit_taps", ["state", "tapped_at"])


def downgrade() -> None:
    op.drop_index("ix_transit_taps_state", table_name="transit_taps")
    op.drop_index("ix_transit_taps_card", table_name="transit_taps")
    op.drop_table("transit_taps")
    op.drop_table("transit_readers")
    op.drop_index(op.f("ix_transit_topups_card_id"), table_name="transit_topups")
    op.drop_table("transit_topups")
    op.drop_index(op.f("ix_transit_cards_shopper_id"), table_name="transit_cards")
    op.drop_table("transit_cards")
    op.drop_index(op.f("ix_transit_feeds_venue_id"), table_name="transit_feeds")
    op.drop_table("transit_feeds")
