"""the fingerprint of the keys that write the database

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 14:50:00
"""

import sqlalchemy as sa
from alembic import op

import guanhao.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_fingerprint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_fingerprint")),
    )


def downgrade() -> None:
    op.drop_table("key_fingerprint")
