"""console users, sessions, login throttle; outbox events by subject (站内信)

Revision ID: 0004
Revises: 0005
Create Date: 2026-11-30 11:00:48.108089
"""

import sqlalchemy as sa
from alembic import op

import guanhao.db

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    op.create_table(
        "users",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("notices_seen_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", guanhao.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(role = 'merchant' AND subject_id IS NOT NULL) OR (role = 'staff' AND subject_id IS NULL)",
            name=op.f("ck_users_subject"),
        ),
        sa.CheckConstraint("role IN ('merchant','staff')", name=op.f("ck_users_role")),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], name=op.f("fk_users_subject_id_subjects")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_users")),
        sa.UniqueConstraint("id", name=op.f("uq_users_id")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("flash", sa.JSON(), nullable=False),
        sa.Column("created_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_console_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_events_subject_id"), ["subject_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_events_subject_id"))

    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_user_id"))

    op.drop_table("console_sessions")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_subject_id"))

    op.drop_table("users")
    op.drop_table("login_throttle")
