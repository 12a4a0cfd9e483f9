"""the worker's duty table; each worker's share of an auto-upgrade wave

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import guanhao.db

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_duties",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_run_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=120), nullable=True),
        sa.Column("lease_until", guanhao.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_started_at", guanhao.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_finished_at", guanhao.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_worker", sa.String(length=120), nullable=True),
        sa.Column("last_outcome", sa.String(length=8), nullable=True),
        sa.Column("last_processed", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.CheckConstraint("last_outcome IN ('ok','error')", name=op.f("ck_worker_duties_last_outcome")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_duties")),
    )
    op.create_table(
        "auto_upgrade_wave_workers",
        sa.Column("wave_id", sa.String(length=40), nullable=False),
        sa.Column("worker_id", sa.String(length=120), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("scanned", sa.Integer(), nullable=False),
        sa.Column("upgraded", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["wave_id"], ["auto_upgrade_waves.id"], name=op.f("fk_auto_upgrade_wave_workers_wave_id_auto_upgrade_waves")
        ),
        sa.PrimaryKeyConstraint("wave_id", "worker_id", name=op.f("pk_auto_upgrade_wave_workers")),
    )


def downgrade() -> None:
    op.drop_table("auto_upgrade_wave_workers")
    op.drop_table("worker_duties")
