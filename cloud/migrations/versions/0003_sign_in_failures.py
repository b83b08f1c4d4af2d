"""Dashboard sign-in throttling shared by every cloud instance.

Revision ID: 0003_sign_in
Revises: 0002_push
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sign_in"
down_revision = "0002_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_failures")),
    )
    op.create_index(
        op.f("ix_sign_in_failures_first_at"), "sign_in_failures", ["first_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sign_in_failures_first_at"), table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
