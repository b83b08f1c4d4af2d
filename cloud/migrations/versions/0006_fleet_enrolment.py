"""Image-baked enrolment: fleet secrets and routers waiting for the merchant's approval.

Revision ID: 0006_fleet
Revises: 0005_consent
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_fleet"
down_revision = "0005_consent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_secrets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=24), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_fleet_secrets_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_secrets")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_fleet_secrets_secret_hash")),
    )
    op.create_index(
        op.f("ix_fleet_secrets_merchant_id"), "fleet_secrets", ["merchant_id"], unique=False
    )
    op.create_table(
        "pending_devices",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("merchant_id", sa.String(length=24), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("venue_tag", sa.String(length=63), nullable=False),
        sa.Column("hostname", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=True),
        sa.Column("device_id", sa.String(length=24), nullable=True),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_pending_devices_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_devices")),
        sa.UniqueConstraint("public_key", name=op.f("uq_pending_devices_public_key")),
    )
    op.create_index(
        op.f("ix_pending_devices_merchant_id"), "pending_devices", ["merchant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_devices_merchant_id"), table_name="pending_devices")
    op.drop_table("pending_devices")
    op.drop_index(op.f("ix_fleet_secrets_merchant_id"), table_name="fleet_secrets")
    op.drop_table("fleet_secrets")
