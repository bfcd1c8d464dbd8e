"""drop items.legacy_code -- contract: only once no release that reads it takes traffic

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.drop_column("items", "legacy_code")


def downgrade() -> None:
    op.add_column("items", sa.Column("legacy_code", sa.Text, nullable=True))  # the column comes back, its data does not
