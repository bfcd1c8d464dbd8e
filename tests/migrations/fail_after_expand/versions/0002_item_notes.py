"""items.note and its index (demo:v2) -- expand: v1 ignores the new column

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.Text, nullable=True))
    # built without blocking writes; CONCURRENTLY cannot run inside a transaction
    with op.get_context().autocommit_block():
        op.create_index("ix_items_note", "items", ["note"], postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_items_note", table_name="items", postgresql_concurrently=True, if_exists=True)
    op.drop_column("items", "note")
