"""drop items.legacy_code (a contract: its data is gone after)

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"


def upgrade() -> None:
    op.drop_column("items", "legacy_code")


def downgrade() -> None:
    op.add_column("items", sa.Column("legacy_code", sa.Text, nullable=True))
