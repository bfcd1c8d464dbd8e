"""a slow expand: adds a column after a long statement (the tests interrupt it there)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("items", sa.Column("notes", sa.Text, nullable=True))
    op.execute("SELECT pg_sleep(8)")


def downgrade() -> None:
    op.drop_column("items", "notes")
