"""Presence needs the wallet's word: registered portal hosts, consent proofs used once,
refused presence counted per router.

Links made before consent proofs have no proof and are withdrawn here: the cloud no longer
pushes on a router's word alone (cloud/presence.py).

Revision ID: 0005_consent
Revises: 0004_sign_in_accounts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_consent"
down_revision = "0004_sign_in_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("venues") as batch:
        batch.add_column(sa.Column("portal_host", sa.String(length=253), nullable=True))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("presence_refused", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("presence_refused_reason", sa.String(length=200)))
        batch.add_column(sa.Column("presence_refused_at", sa.Float()))
    with op.batch_alter_table("shopper_links") as batch:
        batch.add_column(sa.Column("consent_jti", sa.String(length=64), nullable=True))
    op.execute("UPDATE shopper_links SET opted_in = false, connect_url = NULL")
    op.create_table(
        "consent_proofs",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("venue_id", sa.String(length=24), nullable=False),
        sa.Column("wallet_user", sa.String(length=128), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["venue_id"], ["venues.id"], name=op.f("fk_consent_proofs_venue_id_venues")
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_consent_proofs")),
    )
    op.create_index(
        op.f("ix_consent_proofs_expires_at"), "consent_proofs", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_consent_proofs_expires_at"), table_name="consent_proofs")
    op.drop_table("consent_proofs")
    with op.batch_alter_table("shopper_links") as batch:
        batch.drop_column("consent_jti")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("presence_refused_at")
        batch.drop_column("presence_refused_reason")
        batch.drop_column("presence_refused")
    with op.batch_alter_table("venues") as batch:
        batch.drop_column("portal_host")
