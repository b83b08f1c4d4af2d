"""Vouchers (issue 16 item 3): templates, their audit trail, vouchers and redemptions
(cloud/o2o/voucher_models.py says which constraint holds which invariant).

Revision ID: 0008_o2o_vouchers
Revises: 0007_o2o
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_o2o_vouchers"
down_revision = "0007_o2o"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voucher_templates",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("title", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("amount_off", sa.Integer(), nullable=False),
        sa.Column("percent_off", sa.Integer(), nullable=False),
        sa.Column("min_spend", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("per_user_limit", sa.Integer(), nullable=False),
        sa.Column("per_day_limit", sa.Integer(), nullable=True),
        sa.Column("valid_from", sa.Float(), nullable=True),
        sa.Column("valid_until", sa.Float(), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "issued >= 0 AND issued <= budget", name=op.f("ck_voucher_templates_within_budget")
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_voucher_templates_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_templates")),
    )
    op.create_index(
        "ix_voucher_templates_venue", "voucher_templates", ["venue_id", "state"], unique=False
    )

    op.create_table(
        "voucher_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("template_id", sa.String(length=24), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_state", sa.String(length=10), nullable=True),
        sa.Column("to_state", sa.String(length=10), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["voucher_templates.id"],
            name=op.f("fk_voucher_audit_template_id_voucher_templates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_audit")),
    )
    op.create_index(
        "ix_voucher_audit_template", "voucher_audit", ["template_id", "at"], unique=False
    )

    op.create_table(
        "vouchers",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("template_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("shopper", sa.String(length=24), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("day_seq", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("short_code", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("code_gen", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.Column("valid_from", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("redeemed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shopper"], ["shoppers.id"], name=op.f("fk_vouchers_shopper_shoppers")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["voucher_templates.id"],
            name=op.f("fk_vouchers_template_id_voucher_templates"),
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_vouchers_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vouchers")),
        sa.UniqueConstraint("short_code", name=op.f("uq_vouchers_short_code")),
        sa.UniqueConstraint("template_id", "shopper", "day", "day_seq", name="uq_vouchers_per_day"),
        sa.UniqueConstraint(
            "template_id", "shopper", "idempotency_key", name="uq_vouchers_idempotency"
        ),
        sa.UniqueConstraint("template_id", "shopper", "seq", name="uq_vouchers_per_user"),
    )
    op.create_index("ix_vouchers_shopper", "vouchers", ["shopper", "claimed_at"], unique=False)
    op.create_index(op.f("ix_vouchers_venue_id"), "vouchers", ["venue_id"], unique=False)

    op.create_table(
        "voucher_redemptions",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("voucher_id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("staff", sa.String(length=64), nullable=False),
        sa.Column("code_gen", sa.Integer(), nullable=False),
        sa.Column("order_amount", sa.Integer(), nullable=True),
        sa.Column("discount", sa.Integer(), nullable=True),
        sa.Column("payment_ref", sa.String(length=64), nullable=True),
        sa.Column("reversed_at", sa.Float(), nullable=True),
        sa.Column("reverse_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_voucher_redemptions_venue_id_venues")
        ),
        sa.ForeignKeyConstraint(
            ["voucher_id"], ["vouchers.id"], name=op.f("fk_voucher_redemptions_voucher_id_vouchers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_redemptions")),
    )
    op.create_index(
        op.f("ix_voucher_redemptions_payment_ref"),
        "voucher_redemptions",
        ["payment_ref"],
        unique=False,
    )
    op.create_index(
        "ix_voucher_redemptions_venue_at", "voucher_redemptions", ["venue_id", "at"], unique=False
    )
    op.create_index(
        op.f("ix_voucher_redemptions_voucher_id"),
        "voucher_redemptions",
        ["voucher_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_voucher_redemptions_voucher_id"), table_name="voucher_redemptions")
    op.drop_index("ix_voucher_redemptions_venue_at", table_name="voucher_redemptions")
    op.drop_index(op.f("ix_voucher_redemptions_payment_ref"), table_name="voucher_redemptions")

    op.drop_table("voucher_redemptions")
    op.drop_index(op.f("ix_vouchers_venue_id"), table_name="vouchers")
    op.drop_index("ix_vouchers_shopper", table_name="vouchers")

    op.drop_table("vouchers")
    op.drop_index("ix_voucher_audit_template", table_name="voucher_audit")

    op.drop_table("voucher_audit")
    op.drop_index("ix_voucher_templates_venue", table_name="voucher_templates")

    op.drop_table("voucher_templates")
