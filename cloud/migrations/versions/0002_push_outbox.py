"""Push: the outbox of pushes to send, browsers' Web Push subscriptions, and the one-tap
connect link a router reports with an opted-in login.

Revision ID: 0002_push
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_push"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("shopper_links") as batch:
        batch.add_column(sa.Column("connect_url", sa.String(length=1024), nullable=True))

    op.create_table(
        "push_jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("shopper", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_push_jobs_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_jobs")),
    )
    op.create_index("ix_push_jobs_due", "push_jobs", ["next_attempt_at"])
    op.create_index("ix_push_jobs_shopper", "push_jobs", ["venue_id", "shopper", "created_at"])

    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("wallet_user", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=128), nullable=False),
        sa.Column("auth", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_push_subscriptions_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("venue_id", "endpoint", name=op.f("uq_push_subscriptions_venue_id")),
    )
    op.create_index(
        "ix_push_subscriptions_shopper", "push_subscriptions", ["venue_id", "wallet_user"]
    )


def downgrade() -> None:
    op.drop_index("ix_push_subscriptions_shopper", table_name="push_subscriptions")
    op.drop_table("push_subscriptions")
    op.drop_index("ix_push_jobs_shopper", table_name="push_jobs")
    op.drop_index("ix_push_jobs_due", table_name="push_jobs")
    op.drop_table("push_jobs")
    with op.batch_alter_table("shopper_links") as batch:
        batch.drop_column("connect_url")
