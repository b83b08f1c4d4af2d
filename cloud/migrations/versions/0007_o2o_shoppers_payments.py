"""The plaza services (issue 16): shoppers signed in with the wallet, their payments and
refunds, and the double-entry ledger, append-only down to the database (triggers refuse an
UPDATE or DELETE of a posting or an entry, on PostgreSQL and SQLite alike).

Revision ID: 0007_o2o
Revises: 0006_fleet
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_o2o"
down_revision = "0006_fleet"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LEDGER_TABLES = ("ledger_postings", "ledger_entries")
MESSAGE = "the ledger is append-only"


def _append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION plaza_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}: % on %', TG_OP, TG_TABLE_NAME; END $$"
        )
        for table in LEDGER_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION plaza_ledger_append_only()"
            )
        return
    for table in LEDGER_TABLES:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def upgrade() -> None:
    op.create_table(
        "shoppers",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shoppers")),
        sa.UniqueConstraint("provider", "subject", name=op.f("uq_shoppers_provider")),
    )
    op.create_table(
        "ledger_postings",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("memo", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_postings_key")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("posting_id", BigId, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["posting_id"],
            ["ledger_postings.id"],
            name=op.f("fk_ledger_entries_posting_id_ledger_postings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(op.f("ix_ledger_entries_account"), "ledger_entries", ["account"])
    op.create_index(op.f("ix_ledger_entries_posting_id"), "ledger_entries", ["posting_id"])
    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("shopper_id", sa.String(length=24), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("app_id", sa.String(length=32), nullable=False),
        sa.Column("seller_id", sa.String(length=32), nullable=False),
        sa.Column("trade_no", sa.String(length=64), nullable=True),
        sa.Column("buyer_id", sa.String(length=32), nullable=True),
        sa.Column("refunded", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("paid_at", sa.Float(), nullable=True),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shopper_id"], ["shoppers.id"], name=op.f("fk_payments_shopper_id_shoppers")
        ),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_payments_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("shopper_id", "idempotency_key", name=op.f("uq_payments_shopper_id")),
        sa.UniqueConstraint("trade_no", name=op.f("uq_payments_trade_no")),
    )
    op.create_index(op.f("ix_payments_shopper_id"), "payments", ["shopper_id"])
    op.create_index("ix_payments_state", "payments", ["state", "created_at"])
    op.create_index(op.f("ix_payments_venue_id"), "payments", ["venue_id"])
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("payment_id", sa.String(length=24), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("payment_id", "idempotency_key", name=op.f("uq_refunds_payment_id")),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"])
    _append_only()


def downgrade() -> None:
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index(op.f("ix_payments_venue_id"), table_name="payments")
    op.drop_index("ix_payments_state", table_name="payments")
    op.drop_index(op.f("ix_payments_shopper_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_index(op.f("ix_ledger_entries_posting_id"), table_name="ledger_entries")
    op.drop_index(op.f("ix_ledger_entries_account"), table_name="ledger_entries")
    op.drop_table("ledger_entries")  # its triggers go with it
    op.drop_table("ledger_postings")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION plaza_ledger_append_only()")
    op.drop_table("shoppers")
