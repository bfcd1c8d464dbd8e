"""fails half-way: adds a column, then a statement that cannot run

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("items", sa.Column("price", sa.Integer, nullable=True))
    op.execute("UPDATE items SET price = no_such_column")


def downgrade() -> None:
    op.drop_column("items", "price")
