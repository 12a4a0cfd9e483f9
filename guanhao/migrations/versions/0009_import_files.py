"""import_files, import_rejections: command-line imports resume after the last committed line

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30 14:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import guanhao.db

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_files",
        sa.Column("file_hash", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("lines_done", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("by_kind", sa.JSON(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("started_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", guanhao.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", guanhao.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("file_hash", name=op.f("pk_import_files")),
    )
    op.create_table(
        "import_rejections",
        sa.Column("file_hash", sa.String(length=64), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_hash"],
            ["import_files.file_hash"],
            name=op.f("fk_import_rejections_file_hash_import_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_hash", "line", name=op.f("pk_import_rejections")),
    )


def downgrade() -> None:
    op.drop_table("import_rejections")
    op.drop_table("import_files")
