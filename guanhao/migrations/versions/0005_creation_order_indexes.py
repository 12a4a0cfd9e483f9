"""indexes for paging synced subjects, shops and accounts in creation order (created_at, id)

Revision ID: 0005
Revises: 0003
"""

from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("subjects", "shops", "accounts")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_creation_order", table, ["created_at", "id"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_creation_order", table_name=table)
