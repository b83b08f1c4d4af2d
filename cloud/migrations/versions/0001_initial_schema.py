"""Initial schema: fleet, merchants and venues, usage, presence.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("email", name=op.f("uq_merchants_email")),
    )
    op.create_table(
        "venues",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("merchant_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_venues_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_venues")),
    )
    op.create_index(op.f("ix_venues_merchant_id"), "venues", ["merchant_id"])

    op.create_table(
        "claim_codes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.Column("device_id", sa.String(length=24), nullable=True),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_claim_codes_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_claim_codes_code_hash")),
    )
    op.create_index(op.f("ix_claim_codes_venue_id"), "claim_codes", ["venue_id"])

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("enrolled_at", sa.Float(), nullable=False),
        sa.Column("last_heartbeat_at", sa.Float(), nullable=True),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_devices_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_venue_id"), "devices", ["venue_id"])

    op.create_table(
        "shopper_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("wallet_user", sa.String(length=128), nullable=False),
        sa.Column("opted_in", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_shopper_links_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shopper_links")),
        sa.UniqueConstraint("venue_id", "mac", name=op.f("uq_shopper_links_venue_id")),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("device_id", sa.String(length=24), nullable=False),
        sa.Column("op", sa.String(length=32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("signed", sa.JSON(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_commands_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index("ix_commands_pending", "commands", ["device_id", "done_at", "expires_at"])

    op.create_table(
        "nonces",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=24), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_nonces_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nonces")),
        sa.UniqueConstraint("device_id", "nonce", name=op.f("uq_nonces_device_id")),
    )
    op.create_index(op.f("ix_nonces_expires_at"), "nonces", ["expires_at"])

    op.create_table(
        "presence_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("wallet_user", sa.String(length=128), nullable=True),
        sa.Column("opt_in", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_presence_events_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_presence_events_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_events")),
        sa.UniqueConstraint("device_id", "key", name=op.f("uq_presence_events_device_id")),
    )
    op.create_index("ix_presence_events_venue_at", "presence_events", ["venue_id", "at"])

    op.create_table(
        "usage_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("period_start", sa.Float(), nullable=False),
        sa.Column("period_end", sa.Float(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("packets_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("packets_down", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes_down", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_usage_records_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_usage_records_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("device_id", "key", name=op.f("uq_usage_records_device_id")),
    )
    op.create_index(
        "ix_usage_records_venue_mac", "usage_records", ["venue_id", "mac", "period_end"]
    )
    op.create_index("ix_usage_records_venue_period", "usage_records", ["venue_id", "period_end"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_venue_period", table_name="usage_records")
    op.drop_index("ix_usage_records_venue_mac", table_name="usage_records")

    op.drop_table("usage_records")
    op.drop_index("ix_presence_events_venue_at", table_name="presence_events")

    op.drop_table("presence_events")
    op.drop_index(op.f("ix_nonces_expires_at"), table_name="nonces")

    op.drop_table("nonces")
    op.drop_index("ix_commands_pending", table_name="commands")

    op.drop_table("commands")
    op.drop_table("shopper_links")
    op.drop_index(op.f("ix_devices_venue_id"), table_name="devices")

    op.drop_table("devices")
    op.drop_index(op.f("ix_claim_codes_venue_id"), table_name="claim_codes")

    op.drop_table("claim_codes")
    op.drop_index(op.f("ix_venues_merchant_id"), table_name="venues")

    op.drop_table("venues")
    op.drop_table("merchants")
