"""when a key was claimed, on the real clock: in-flight staleness is measured there, not on the sandbox clock

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:10:00
"""

import sqlalchemy as sa
from alembic import op

import guanhao.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("claimed_at", guanhao.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("claimed_at")
