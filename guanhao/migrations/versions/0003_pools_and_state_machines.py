"""quota pools as counters held by the database; the staff review step and cancelled waves as states

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.CheckConstraint("held >= 0", name=op.f("ck_pools_held")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_pools")),
    )
    op.execute("INSERT INTO pools (key, held) SELECT pool, count(*) FROM slots GROUP BY pool")
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_slots_pool_slot_no"), type_="unique")
        batch_op.drop_constraint(batch_op.f("ck_slots_slot_no"), type_="check")
        batch_op.drop_column("slot_no")
        batch_op.create_index(batch_op.f("ix_slots_pool"), ["pool"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_slots_pool_pools"), "pools", ["pool"], ["key"])

    with op.batch_alter_table("upgrade_applications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staff_review", sa.String(length=12), nullable=True))
    op.execute("UPDATE upgrade_applications SET staff_review = 'waiting' WHERE awaiting_staff")
    with op.batch_alter_table("upgrade_applications", schema=None) as batch_op:
        batch_op.drop_column("awaiting_staff")
        batch_op.create_check_constraint(
            batch_op.f("ck_upgrade_applications_staff_review"), "staff_review IN ('waiting','approved','rejected')"
        )

    with op.batch_alter_table("auto_upgrade_waves", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_auto_upgrade_waves_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_auto_upgrade_waves_status"), "status IN ('running','done','failed','cancelled')"
        )


def downgrade() -> None:
    op.execute("UPDATE auto_upgrade_waves SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("auto_upgrade_waves", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_auto_upgrade_waves_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_auto_upgrade_waves_status"), "status IN ('running','done','failed')"
        )

    with op.batch_alter_table("upgrade_applications", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_upgrade_applications_staff_review"), type_="check")
        batch_op.add_column(sa.Column("awaiting_staff", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE upgrade_applications SET awaiting_staff = (staff_review = 'waiting')")
    with op.batch_alter_table("upgrade_applications", schema=None) as batch_op:
        batch_op.alter_column("awaiting_staff", server_default=None)
        batch_op.drop_column("staff_review")

    # Slot numbers come back as each pool's places numbered in the order they were taken.
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_slots_pool_pools"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_slots_pool"))
        batch_op.add_column(sa.Column("slot_no", sa.Integer(), nullable=False, server_default="1"))
    op.execute(
        "UPDATE slots SET slot_no = (SELECT count(*) FROM slots s2 WHERE s2.pool = slots.pool AND s2.seq <= slots.seq)"
    )
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.alter_column("slot_no", server_default=None)
        batch_op.create_unique_constraint(batch_op.f("uq_slots_pool_slot_no"), ["pool", "slot_no"])
        batch_op.create_check_constraint(batch_op.f("ck_slots_slot_no"), "slot_no >= 1")
    op.drop_table("pools")
