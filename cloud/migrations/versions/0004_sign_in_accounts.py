"""Per-account sign-in back-off, the clients a merchant has signed in from, and the count of
failed sign-ins shown to the merchant at their next sign-in (issue 10).

Revision ID: 0004_sign_in_accounts
Revises: 0003_sign_in
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_sign_in_accounts"
down_revision = "0003_sign_in"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(
            sa.Column("failed_sign_ins", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "sign_in_accounts",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_accounts")),
    )
    op.create_index(
        op.f("ix_sign_in_accounts_last_at"), "sign_in_accounts", ["last_at"], unique=False
    )
    op.create_table(
        "known_sign_in_clients",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_known_sign_in_clients")),
    )
    op.create_index(
        op.f("ix_known_sign_in_clients_last_at"),
        "known_sign_in_clients",
        ["last_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_known_sign_in_clients_last_at"), table_name="known_sign_in_clients")
    op.drop_table("known_sign_in_clients")
    op.drop_index(op.f("ix_sign_in_accounts_last_at"), table_name="sign_in_accounts")
    op.drop_table("sign_in_accounts")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("failed_sign_ins")
