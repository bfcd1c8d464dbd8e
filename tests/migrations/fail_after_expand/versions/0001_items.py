"""items table (demo:v1)

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("legacy_code", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("items")
